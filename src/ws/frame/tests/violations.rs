//! Decoding hostile client streams: every protocol violation (RFC 6455 §5) and the close code
//! it maps to.

use super::*;

#[test]
fn unmasked_frame_is_a_protocol_error() {
    let v = violation(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(v, Violation::Protocol("unmasked client frame"));
    assert_eq!(v.close_code(), 1002);
}

#[test]
fn reserved_bits_are_protocol_errors() {
    for rsv in [0x40, 0x20, 0x10] {
        let mut frame = client_frame(true, OP_TEXT, b"x");
        frame[0] |= rsv;
        assert_eq!(violation(&frame).close_code(), 1002, "rsv {rsv:#x}");
    }
}

#[test]
fn unknown_opcodes_are_protocol_errors() {
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let frame = client_frame(true, opcode, b"");
        assert_eq!(
            violation(&frame),
            Violation::Protocol("unknown opcode"),
            "{opcode:#x}"
        );
    }
}

#[test]
fn fragmented_control_frame_is_a_protocol_error() {
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let frame = client_frame(false, opcode, b"");
        assert_eq!(violation(&frame).close_code(), 1002);
    }
}

#[test]
fn control_frame_over_125_bytes_is_a_protocol_error() {
    assert_eq!(
        feed(&client_frame(true, OP_PING, &[0; 125])).unwrap().len(),
        1
    );
    assert_eq!(
        violation(&client_frame(true, OP_PING, &[0; 126])).close_code(),
        1002
    );
    // Announcing a small payload with the 16-bit form is still a length over 125 marker.
    let frame = client_frame_with(true, OP_PONG, b"x", MASK, Len::Bits16);
    assert_eq!(violation(&frame).close_code(), 1002);
}

#[test]
fn continuation_without_a_started_message_is_a_protocol_error() {
    assert_eq!(
        violation(&client_frame(true, OP_CONTINUATION, b"x")).close_code(),
        1002
    );
    // Also after a message has completed.
    let mut stream = client_frame(false, OP_TEXT, b"a");
    stream.extend(client_frame(true, OP_CONTINUATION, b"b"));
    stream.extend(client_frame(true, OP_CONTINUATION, b"c"));
    assert_eq!(violation(&stream).close_code(), 1002);
}

#[test]
fn new_data_message_inside_a_fragmented_one_is_a_protocol_error() {
    for opcode in [OP_TEXT, OP_BINARY] {
        let mut stream = client_frame(false, OP_TEXT, b"a");
        stream.extend(client_frame(true, opcode, b"b"));
        assert_eq!(violation(&stream).close_code(), 1002);
    }
}

#[test]
fn sixty_four_bit_length_with_msb_set_is_a_protocol_error() {
    let mut frame = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    frame.extend_from_slice(&MASK);
    assert_eq!(violation(&frame).close_code(), 1002);
}

#[test]
fn bad_close_payloads_are_rejected() {
    assert_eq!(
        violation(&client_frame(true, OP_CLOSE, &[0x03])).close_code(),
        1002
    );
    assert_eq!(
        violation(&client_frame(true, OP_CLOSE, &[0x03, 0xED])).close_code(),
        1002
    );
    let bad_reason = [0x03, 0xE8, b'o', b'k', 0xC0, 0xAF];
    assert_eq!(
        violation(&client_frame(true, OP_CLOSE, &bad_reason)).close_code(),
        1007
    );
}

#[test]
fn invalid_utf8_text_is_rejected() {
    let v = violation(&client_frame(true, OP_TEXT, b"ok\xFF"));
    assert_eq!(v, Violation::InvalidUtf8);
    assert_eq!(v.close_code(), 1007);
    // Binary messages carry arbitrary bytes.
    assert!(feed(&client_frame(true, OP_BINARY, b"ok\xFF")).is_ok());
}

#[test]
fn text_ending_inside_a_character_is_rejected() {
    assert_eq!(
        violation(&client_frame(true, OP_TEXT, b"ab\xE2\x82")),
        Violation::InvalidUtf8
    );
    let mut stream = client_frame(false, OP_TEXT, b"a");
    stream.extend(client_frame(true, OP_CONTINUATION, b"\xE2"));
    assert_eq!(violation(&stream), Violation::InvalidUtf8);
}
