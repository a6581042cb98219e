//! The message size limit: single frames, fragmented messages, and lengths refused from the
//! header alone.

use super::*;

#[test]
fn single_frame_at_the_limit_passes_and_one_more_byte_fails() {
    let max = 1000;
    assert!(
        feed_chunked(&client_frame(true, OP_BINARY, &[0; 1000]), &[64], max)
            .1
            .is_none()
    );
    let frame = client_frame(true, OP_BINARY, &[0; 1001]);
    // Only the header has arrived: the announced length alone is enough to refuse.
    let mut conn = Conn::new(max);
    assert_eq!(conn.read(&frame[..8]), Err(Violation::TooLarge));
    assert_eq!(Violation::TooLarge.close_code(), 1009);
}

#[test]
fn fragmented_message_limit_counts_all_fragments() {
    let max = 1000;
    let mut ok = client_frame(false, OP_TEXT, &[b'a'; 600]);
    ok.extend(client_frame(true, OP_CONTINUATION, &[b'b'; 400]));
    assert!(feed_chunked(&ok, &[7], max).1.is_none());

    let mut conn = Conn::new(max);
    conn.read(&client_frame(false, OP_TEXT, &[b'a'; 600]))
        .unwrap();
    let too_much = client_frame(true, OP_CONTINUATION, &[b'b'; 401]);
    assert_eq!(conn.read(&too_much[..8]), Err(Violation::TooLarge));
}

#[test]
fn a_huge_announced_length_is_refused_without_allocating() {
    let mut frame = vec![
        0x82,
        0x80 | 127,
        0x7F,
        0xFF,
        0xFF,
        0xFF,
        0xFF,
        0xFF,
        0xFF,
        0xFF,
    ];
    frame.extend_from_slice(&MASK);
    assert_eq!(violation(&frame), Violation::TooLarge);
}
