//! Encoding of server frames (headers, whole frames, close frames) and the close codes of
//! decoder violations.

use super::*;
use crate::ws::close;

#[test]
fn header_len_switches_at_the_7_and_16_bit_boundaries() {
    assert_eq!(header_len(0), 2);
    assert_eq!(header_len(125), 2);
    assert_eq!(header_len(126), 4);
    assert_eq!(header_len(65535), 4);
    assert_eq!(header_len(65536), 10);
}

#[test]
fn encode_header_uses_network_byte_order_lengths() {
    let mut out = [0u8; HEADER_BYTES_MAX];
    assert_eq!(encode_header(&mut out, OP_TEXT, 125), 2);
    assert_eq!(out[..2], [0x81, 125]);
    assert_eq!(encode_header(&mut out, OP_BINARY, 126), 4);
    assert_eq!(out[..4], [0x82, 126, 0, 126]);
    assert_eq!(encode_header(&mut out, OP_TEXT, 65535), 4);
    assert_eq!(out[..4], [0x81, 126, 0xFF, 0xFF]);
    assert_eq!(encode_header(&mut out, OP_TEXT, 65536), 10);
    assert_eq!(out, [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
}

#[test]
fn encode_header_compressed_sets_rsv1_only() {
    let mut plain = [0u8; HEADER_BYTES_MAX];
    let mut compressed = [0u8; HEADER_BYTES_MAX];
    for len in [0, 125, 126, 65535, 65536] {
        for opcode in [OP_TEXT, OP_BINARY] {
            let n = encode_header(&mut plain, opcode, len);
            assert_eq!(encode_header_compressed(&mut compressed, opcode, len), n);
            assert_eq!(compressed[0], plain[0] | RSV1);
            assert_eq!(compressed[1..n], plain[1..n]);
        }
    }
    assert_eq!(compressed[0], 0xC2);
}

#[test]
fn encode_frame_writes_an_unmasked_fin_frame() {
    let mut out = vec![0xEE];
    encode_frame(&mut out, OP_PING, b"hi");
    assert_eq!(out, [0xEE, 0x89, 2, b'h', b'i']);
    let mut out = Vec::new();
    encode_frame(&mut out, OP_BINARY, &[7; 300]);
    assert_eq!(out[..4], [0x82, 126, 1, 44]);
    assert_eq!(out.len(), 304);
}

#[test]
fn encode_close_keeps_a_short_reason() {
    let mut out = Vec::new();
    encode_close(&mut out, close::GOING_AWAY, "restart");
    assert_eq!(out[..4], [0x88, 9, 0x03, 0xE9]);
    assert_eq!(
        close::parse_close_payload(&out[2..]),
        Ok(Some((1001, "restart")))
    );
}

#[test]
fn encode_close_truncates_the_reason_at_a_char_boundary() {
    // 100 two-byte characters: 123 bytes would split the 62nd one.
    let reason = "é".repeat(100);
    let mut out = Vec::new();
    encode_close(&mut out, close::POLICY, &reason);
    assert_eq!(out[0], 0x88);
    let payload_len = usize::from(out[1]);
    assert_eq!(payload_len, 2 + 122);
    assert_eq!(out.len(), 2 + payload_len);
    let (code, kept) = close::parse_close_payload(&out[2..]).unwrap().unwrap();
    assert_eq!(code, close::POLICY);
    assert!(reason.starts_with(kept));

    let mut out = Vec::new();
    encode_close(&mut out, close::NORMAL, &"x".repeat(500));
    assert_eq!(usize::from(out[1]), CONTROL_PAYLOAD_MAX);
}

#[test]
fn violations_map_to_their_close_codes() {
    assert_eq!(Violation::Protocol("x").close_code(), 1002);
    assert_eq!(Violation::Protocol("x").reason(), "x");
    assert_eq!(Violation::InvalidUtf8.close_code(), 1007);
    assert_eq!(Violation::TooLarge.close_code(), 1009);
    assert!(!Violation::TooLarge.reason().is_empty());
}
