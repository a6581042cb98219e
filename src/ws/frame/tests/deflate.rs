//! RSV1 with and without `permessage-deflate` (RFC 7692 §6): which frames may carry it, what
//! the decoder hands over for a compressed message, and the bounds that still apply.

use super::*;
use crate::ws::deflate::{self, Inflater};

/// Decodes `stream` fed in chunks of `chunk` bytes with deflate negotiated; each message with
/// its `compressed` flag.
fn feed_deflate(stream: &[u8], chunk: usize, max: usize) -> Result<Vec<(Owned, bool)>, Violation> {
    let mut decoder = Decoder::new();
    decoder.set_deflate(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let decoded = decoder.decode(&mut buf, max)?;
            let consumed = decoded.consumed;
            let need_more = consumed == 0 && decoded.message.is_none();
            if let Some(message) = decoded.message {
                out.push((Owned::from(message), decoded.compressed));
            } else {
                assert!(!decoded.compressed, "flag without a message");
            }
            buf.drain(..consumed);
            if need_more {
                break;
            }
        }
    }
    Ok(out)
}

fn with_rsv(mut frame: Vec<u8>, rsv: u8) -> Vec<u8> {
    frame[0] |= rsv;
    frame
}

/// Not UTF-8, as compressed data usually is not.
const NOT_UTF8: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xFF];

#[test]
fn rsv1_without_deflate_is_a_protocol_error() {
    let frame = with_rsv(client_frame(true, OP_TEXT, b"x"), RSV1);
    assert_eq!(violation(&frame), Violation::Protocol("reserved bits set"));
    assert!(!Decoder::new().deflate());
}

#[test]
fn rsv1_marks_a_single_frame_message_compressed() {
    for opcode in [OP_TEXT, OP_BINARY] {
        let frame = with_rsv(client_frame(true, opcode, NOT_UTF8), RSV1);
        for chunk in [1, 3, frame.len()] {
            let messages = feed_deflate(&frame, chunk, 1 << 20).unwrap();
            let expected = if opcode == OP_TEXT {
                Owned::Text(NOT_UTF8.to_vec())
            } else {
                Owned::Binary(NOT_UTF8.to_vec())
            };
            assert_eq!(
                messages,
                [(expected, true)],
                "opcode {opcode} chunk {chunk}"
            );
        }
    }
}

#[test]
fn uncompressed_messages_are_still_validated_with_deflate_on() {
    let plain = client_frame(true, OP_TEXT, "héllo".as_bytes());
    assert_eq!(
        feed_deflate(&plain, 100, 1 << 20).unwrap(),
        [(text("héllo"), false)]
    );
    let bad = client_frame(true, OP_TEXT, NOT_UTF8);
    assert_eq!(
        feed_deflate(&bad, 100, 1 << 20),
        Err(Violation::InvalidUtf8)
    );
}

#[test]
fn rsv1_on_the_first_fragment_marks_the_whole_message() {
    let mut stream = with_rsv(client_frame(false, OP_TEXT, &NOT_UTF8[..3]), RSV1);
    stream.extend(client_frame(true, OP_PING, b"p"));
    stream.extend(client_frame(false, OP_CONTINUATION, &NOT_UTF8[3..5]));
    stream.extend(client_frame(true, OP_CONTINUATION, &NOT_UTF8[5..]));
    stream.extend(client_frame(true, OP_TEXT, b"next"));
    for chunk in [1, 2, 5, stream.len()] {
        assert_eq!(
            feed_deflate(&stream, chunk, 1 << 20).unwrap(),
            [
                (Owned::Ping(b"p".to_vec()), false),
                (Owned::Text(NOT_UTF8.to_vec()), true),
                (text("next"), false),
            ],
            "chunk {chunk}"
        );
    }
}

#[test]
fn rsv1_on_a_continuation_frame_is_a_protocol_error() {
    for first_rsv in [0, RSV1] {
        let mut stream = with_rsv(client_frame(false, OP_BINARY, b"ab"), first_rsv);
        stream.extend(with_rsv(client_frame(true, OP_CONTINUATION, b"cd"), RSV1));
        let v = feed_deflate(&stream, 100, 1 << 20).unwrap_err();
        assert_eq!(v, Violation::Protocol("RSV1 on a continuation frame"));
        assert_eq!(v.close_code(), 1002);
    }
}

#[test]
fn rsv1_on_a_control_frame_is_a_protocol_error() {
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let frame = with_rsv(client_frame(true, opcode, b""), RSV1);
        let v = feed_deflate(&frame, 100, 1 << 20).unwrap_err();
        assert_eq!(
            v,
            Violation::Protocol("RSV1 on a control frame"),
            "{opcode}"
        );
        assert_eq!(v.close_code(), 1002);
    }
}

#[test]
fn rsv2_and_rsv3_stay_protocol_errors_with_deflate() {
    for rsv in [0x20, 0x10, RSV1 | 0x20, RSV1 | 0x10] {
        let frame = with_rsv(client_frame(true, OP_TEXT, b"x"), rsv);
        let v = feed_deflate(&frame, 100, 1 << 20).unwrap_err();
        assert_eq!(v, Violation::Protocol("reserved bits set"), "{rsv:#x}");
    }
}

#[test]
fn the_message_limit_applies_to_the_compressed_bytes() {
    let frame = with_rsv(client_frame(true, OP_BINARY, &[0u8; 100]), RSV1);
    assert_eq!(feed_deflate(&frame, 100, 99), Err(Violation::TooLarge));
    assert_eq!(feed_deflate(&frame, 200, 100).unwrap().len(), 1);
    // Across fragments too.
    let mut stream = with_rsv(client_frame(false, OP_TEXT, &[0u8; 60]), RSV1);
    stream.extend(client_frame(true, OP_CONTINUATION, &[0u8; 60]));
    assert_eq!(feed_deflate(&stream, 7, 100), Err(Violation::TooLarge));
}

#[test]
fn a_client_compressed_message_decodes_inflates_and_validates() {
    // What a zlib-based client sends: raw DEFLATE, sync flush, the 4-octet tail removed.
    let text_in = "{\"op\":\"subscribe\",\"topics\":[\"bbo.BTCUSDT\",\"bbo.ETHUSDT\"]} ☺";
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut payload = Vec::with_capacity(256);
    c.compress_vec(
        text_in.as_bytes(),
        &mut payload,
        flate2::FlushCompress::Sync,
    )
    .unwrap();
    assert!(payload.ends_with(&[0x00, 0x00, 0xFF, 0xFF]));
    payload.truncate(payload.len() - 4);
    // Sent in two fragments, RSV1 on the first.
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut stream = with_rsv(client_frame(false, OP_TEXT, a), RSV1);
    stream.extend(client_frame(true, OP_CONTINUATION, b));
    let messages = feed_deflate(&stream, 3, 1 << 20).unwrap();
    let [(Owned::Text(compressed), true)] = &messages[..] else {
        panic!("{messages:?}");
    };
    let mut inflater = Inflater::new();
    let inflated = inflater.inflate(compressed, 1 << 20).unwrap();
    deflate::check_text(inflated).unwrap();
    assert_eq!(inflated, text_in.as_bytes());
}

#[test]
fn decoder_stays_small() {
    assert!(std::mem::size_of::<Decoder>() <= 64);
}
