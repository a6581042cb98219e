//! UTF-8 fail-fast (Autobahn 6.4.x): invalid text is refused as soon as the bad byte arrives,
//! before its frame or message completes; a character cut by a read or a fragment is not an
//! error.

use super::*;

#[test]
fn invalid_utf8_fails_before_a_partial_frame_completes() {
    let mut payload = b"ab\xFF".to_vec();
    payload.resize(100, b'x');
    let frame = client_frame(true, OP_TEXT, &payload);
    // Header (6 bytes) plus the first three payload bytes, the last of them invalid.
    let mut conn = Conn::new(1024);
    conn.read(&frame[..8]).unwrap();
    assert_eq!(conn.read(&frame[8..9]), Err(Violation::InvalidUtf8));
}

#[test]
fn a_character_cut_at_the_end_of_a_partial_frame_is_not_an_error() {
    let frame = client_frame(true, OP_TEXT, "ab€cd".as_bytes());
    let mut conn = Conn::new(1024);
    // Header plus "ab" and the first two bytes of the euro sign.
    conn.read(&frame[..10]).unwrap();
    assert!(conn.messages.is_empty());
    conn.read(&frame[10..]).unwrap();
    assert_eq!(conn.messages, [text("ab€cd")]);
}

#[test]
fn invalid_utf8_fails_on_the_first_fragment() {
    let mut conn = Conn::new(1024);
    let first = client_frame(false, OP_TEXT, b"ok\xF5");
    assert_eq!(conn.read(&first), Err(Violation::InvalidUtf8));
}

#[test]
fn invalid_utf8_fails_inside_a_partial_continuation_frame() {
    let mut conn = Conn::new(1024);
    conn.read(&client_frame(false, OP_TEXT, b"ok\xCE")).unwrap();
    // The lead byte 0xCE needs a continuation byte; 'x' is not one.
    let mut payload = b"x".to_vec();
    payload.resize(50, b'y');
    let next = client_frame(true, OP_CONTINUATION, &payload);
    assert_eq!(conn.read(&next[..7]), Err(Violation::InvalidUtf8));
}

#[test]
fn a_character_split_across_fragments_is_valid() {
    let mut stream = client_frame(false, OP_TEXT, b"\xF0\x9F");
    stream.extend(client_frame(false, OP_CONTINUATION, b"\x98"));
    stream.extend(client_frame(true, OP_CONTINUATION, b"\x80!"));
    assert_eq!(feed(&stream), Ok(vec![text("😀!")]));
}
