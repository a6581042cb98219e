//! Tests for frame encoding and the client frame decoder.

use super::*;
use crate::ws::close;
use proptest::prelude::*;

/// How a test encodes a client frame's payload length.
#[derive(Debug, Clone, Copy)]
enum Len {
    Minimal,
    Bits16,
    Bits64,
}

const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

/// A masked client frame, as a browser would send it.
fn client_frame_with(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], len: Len) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let n = payload.len();
    match len {
        Len::Minimal if n < 126 => out.push(0x80 | n as u8),
        Len::Minimal | Len::Bits16 if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_with(fin, opcode, payload, MASK, Len::Minimal)
}

/// A decoded message, copied out of the borrowed buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Message<'_>> for Owned {
    fn from(message: Message<'_>) -> Self {
        match message {
            Message::Text(p) => Owned::Text(p.to_vec()),
            Message::Binary(p) => Owned::Binary(p.to_vec()),
            Message::Ping(p) => Owned::Ping(p.to_vec()),
            Message::Pong(p) => Owned::Pong(p.to_vec()),
            Message::Close(c) => Owned::Close(c.map(|(code, r)| (code, r.to_owned()))),
        }
    }
}

fn text(s: &str) -> Owned {
    Owned::Text(s.as_bytes().to_vec())
}

/// The caller side of the decoder contract, as the shard runtime does it: append each read to
/// a buffer, decode until the decoder needs more bytes, drop what it consumed.
struct Conn {
    decoder: Decoder,
    buf: Vec<u8>,
    max: usize,
    messages: Vec<Owned>,
}

impl Conn {
    fn new(max: usize) -> Self {
        Self {
            decoder: Decoder::new(),
            buf: Vec::new(),
            max,
            messages: Vec::new(),
        }
    }

    fn read(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        self.buf.extend_from_slice(bytes);
        loop {
            let len = self.buf.len();
            let decoded = self.decoder.decode(&mut self.buf, self.max)?;
            assert!(
                decoded.consumed <= len,
                "consumed past the end of the buffer"
            );
            let consumed = decoded.consumed;
            let need_more = consumed == 0 && decoded.message.is_none();
            if let Some(message) = decoded.message {
                self.messages.push(message.into());
            }
            assert!(
                self.decoder.buffered_bytes() <= self.max,
                "reassembly over the limit"
            );
            self.buf.drain(..consumed);
            if need_more {
                return Ok(());
            }
        }
    }
}

/// Feeds `stream` in chunks of the given sizes (cycled); returns the messages and the first
/// violation, if any.
fn feed_chunked(stream: &[u8], sizes: &[usize], max: usize) -> (Vec<Owned>, Option<Violation>) {
    let mut conn = Conn::new(max);
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(v) = conn.read(chunk) {
            return (conn.messages, Some(v));
        }
    }
    (conn.messages, None)
}

fn feed(stream: &[u8]) -> Result<Vec<Owned>, Violation> {
    match feed_chunked(stream, &[stream.len().max(1)], 1 << 20) {
        (messages, None) => Ok(messages),
        (_, Some(v)) => Err(v),
    }
}

fn violation(stream: &[u8]) -> Violation {
    feed(stream).expect_err("expected a violation")
}

// ---- Encoding ----

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

// ---- Decoding: happy paths ----

#[test]
fn single_frame_text_is_unmasked_in_place() {
    let mut buf = client_frame(true, OP_TEXT, b"Hello");
    buf.extend_from_slice(b"next");
    let range = buf.as_ptr_range();
    let mut decoder = Decoder::new();
    let decoded = decoder.decode(&mut buf, 1024).unwrap();
    assert_eq!(decoded.consumed, 2 + 4 + 5);
    let Some(Message::Text(payload)) = decoded.message else {
        panic!("expected text");
    };
    assert_eq!(payload, b"Hello");
    // Zero-copy: the payload is a slice of the caller's buffer, not a copy.
    assert!(range.contains(&payload.as_ptr()));
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn every_length_encoding_decodes_including_non_minimal_ones() {
    for n in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
        let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        for len in [Len::Minimal, Len::Bits16, Len::Bits64] {
            if matches!(len, Len::Bits16) && n > 0xFFFF {
                continue;
            }
            let frame = client_frame_with(true, OP_BINARY, &payload, [1, 2, 3, 4], len);
            assert_eq!(
                feed(&frame),
                Ok(vec![Owned::Binary(payload.clone())]),
                "{n} {len:?}"
            );
        }
    }
}

#[test]
fn control_frames_are_returned_between_fragments() {
    let mut stream = client_frame(false, OP_TEXT, b"Hel");
    stream.extend(client_frame(true, OP_PING, b"p"));
    stream.extend(client_frame(false, OP_CONTINUATION, b"lo "));
    stream.extend(client_frame(true, OP_PONG, b""));
    stream.extend(client_frame(true, OP_CONTINUATION, b"world"));
    assert_eq!(
        feed(&stream),
        Ok(vec![
            Owned::Ping(b"p".to_vec()),
            Owned::Pong(vec![]),
            text("Hello world")
        ])
    );
}

#[test]
fn a_non_final_fragment_is_absorbed_without_a_message() {
    let mut buf = client_frame(false, OP_BINARY, b"ab");
    let frame_len = buf.len();
    buf.extend(client_frame(true, OP_CONTINUATION, b"cd"));
    let mut decoder = Decoder::new();
    let decoded = decoder.decode(&mut buf, 100).unwrap();
    assert_eq!(decoded.consumed, frame_len);
    assert!(decoded.message.is_none());
    assert!(decoder.in_fragmented_message());
    let decoded = decoder.decode(&mut buf[frame_len..], 100).unwrap();
    let Some(Message::Binary(payload)) = decoded.message else {
        panic!("expected the reassembled binary message");
    };
    assert_eq!(payload, b"abcd");
}

#[test]
fn a_close_frame_between_fragments_is_returned() {
    let mut stream = client_frame(false, OP_TEXT, b"part");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    stream.extend(client_frame(true, OP_CLOSE, &payload));
    assert_eq!(
        feed(&stream),
        Ok(vec![Owned::Close(Some((1000, "done".into())))])
    );
}

#[test]
fn empty_close_and_empty_messages_decode() {
    let mut stream = client_frame(true, OP_TEXT, b"");
    stream.extend(client_frame(false, OP_BINARY, b""));
    stream.extend(client_frame(true, OP_CONTINUATION, b""));
    stream.extend(client_frame(true, OP_CLOSE, b""));
    assert_eq!(
        feed(&stream),
        Ok(vec![text(""), Owned::Binary(vec![]), Owned::Close(None)])
    );
}

/// A stream exercising every path: single frames, fragments split inside a character,
/// interleaved control frames, 16-bit lengths, close.
fn mixed_stream() -> (Vec<u8>, Vec<Owned>) {
    let big: Vec<u8> = (0..1000).map(|i| (i % 7) as u8).collect();
    let mut stream = client_frame(true, OP_TEXT, "héllo".as_bytes());
    stream.extend(client_frame(false, OP_TEXT, b"a\xE2"));
    stream.extend(client_frame(true, OP_PING, b"ping"));
    stream.extend(client_frame(false, OP_CONTINUATION, b"\x82"));
    stream.extend(client_frame(true, OP_CONTINUATION, b"\xACz"));
    stream.extend(client_frame(true, OP_BINARY, &big));
    stream.extend(client_frame(true, OP_CLOSE, &[0x03, 0xE8]));
    let expected = vec![
        text("héllo"),
        Owned::Ping(b"ping".to_vec()),
        text("a€z"),
        Owned::Binary(big),
        Owned::Close(Some((1000, String::new()))),
    ];
    (stream, expected)
}

#[test]
fn byte_at_a_time_feeding_matches_whole_buffer_feeding() {
    let (stream, expected) = mixed_stream();
    assert_eq!(feed(&stream), Ok(expected.clone()));
    assert_eq!(feed_chunked(&stream, &[1], 1 << 20), (expected, None));
}

#[test]
fn idle_decoder_releases_the_reassembly_buffer() {
    let mut conn = Conn::new(1 << 20);
    conn.read(&client_frame(false, OP_BINARY, &[1; 1000]))
        .unwrap();
    assert!(conn.decoder.buffered_bytes() >= 1000);
    conn.read(&client_frame(true, OP_CONTINUATION, &[2; 1000]))
        .unwrap();
    assert_eq!(conn.messages.len(), 1);
    // The read loop ends with a "need more" call, which frees the returned message's buffer.
    assert_eq!(conn.decoder.buffered_bytes(), 0);
    assert!(!conn.decoder.in_fragmented_message());
}

#[test]
fn large_messages_in_small_reads_decode() {
    // 16 MiB, the echo route's limit, arriving in 4 KiB reads: this only finishes in
    // reasonable time if each call does work proportional to the new bytes.
    const MIB16: usize = 16 << 20;
    let payload: Vec<u8> = (0..MIB16).map(|i| b'a' + (i % 26) as u8).collect();
    let frame = client_frame(true, OP_TEXT, &payload);
    let (messages, err) = feed_chunked(&frame, &[4096], MIB16);
    assert_eq!(err, None);
    assert!(matches!(&messages[..], [Owned::Text(p)] if *p == payload));

    let mut stream = Vec::new();
    let pieces: Vec<&[u8]> = payload.chunks(1 << 16).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        stream.extend(client_frame(i + 1 == pieces.len(), opcode, piece));
    }
    let (messages, err) = feed_chunked(&stream, &[4096], MIB16);
    assert_eq!(err, None);
    assert!(matches!(&messages[..], [Owned::Text(p)] if *p == payload));
}

// ---- Decoding: violations ----

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

// ---- UTF-8 fail-fast (Autobahn 6.4.x) ----

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

// ---- Limits ----

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

// ---- Property tests ----

/// One encoded client stream and the messages it must decode to.
#[derive(Debug, Clone)]
struct Stream {
    bytes: Vec<u8>,
    expected: Vec<Owned>,
}

fn len_strategy() -> impl Strategy<Value = Len> {
    prop_oneof![Just(Len::Minimal), Just(Len::Bits16), Just(Len::Bits64)]
}

fn control_strategy() -> impl Strategy<Value = Option<(u8, Vec<u8>)>> {
    proptest::option::of((
        prop_oneof![Just(OP_PING), Just(OP_PONG)],
        proptest::collection::vec(any::<u8>(), 0..=125),
    ))
}

fn data_strategy() -> impl Strategy<Value = (bool, Vec<u8>)> {
    prop_oneof![
        any::<String>().prop_map(|s| (true, s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 0..700).prop_map(|b| (false, b)),
    ]
}

/// A data message, where to cut it into fragments, and control frames to put after each
/// non-final fragment.
type MessagePlan = ((bool, Vec<u8>), Vec<usize>, Vec<Option<(u8, Vec<u8>)>>);

fn message_strategy() -> impl Strategy<Value = MessagePlan> {
    (
        data_strategy(),
        proptest::collection::vec(0usize..700, 0..4),
        proptest::collection::vec(control_strategy(), 4),
    )
}

fn stream_strategy() -> impl Strategy<Value = Stream> {
    (
        proptest::collection::vec(message_strategy(), 0..5),
        proptest::collection::vec((any::<[u8; 4]>(), len_strategy()), 1..8),
        any::<bool>(),
    )
        .prop_map(|(messages, frame_opts, end_with_close)| {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            let mut n = 0;
            let mut push = |bytes: &mut Vec<u8>, fin, opcode, payload: &[u8]| {
                let (mask, len) = frame_opts[n % frame_opts.len()];
                n += 1;
                let len = if opcode >= OP_CLOSE {
                    Len::Minimal
                } else {
                    len
                };
                bytes.extend(client_frame_with(fin, opcode, payload, mask, len));
            };
            for ((is_text, payload), cuts, controls) in messages {
                let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
                cuts.sort_unstable();
                cuts.push(payload.len());
                let mut start = 0;
                for (i, &end) in cuts.iter().enumerate() {
                    let fin = i + 1 == cuts.len();
                    let opcode = match (i, is_text) {
                        (0, true) => OP_TEXT,
                        (0, false) => OP_BINARY,
                        _ => OP_CONTINUATION,
                    };
                    push(&mut bytes, fin, opcode, &payload[start..end]);
                    start = end;
                    if let (false, Some((op, body))) = (fin, &controls[i]) {
                        push(&mut bytes, true, *op, body);
                        expected.push(if *op == OP_PING {
                            Owned::Ping(body.clone())
                        } else {
                            Owned::Pong(body.clone())
                        });
                    }
                }
                expected.push(if is_text {
                    Owned::Text(payload)
                } else {
                    Owned::Binary(payload)
                });
            }
            if end_with_close {
                let mut payload = 4000u16.to_be_bytes().to_vec();
                payload.extend_from_slice("au revoir ✓".as_bytes());
                push(&mut bytes, true, OP_CLOSE, &payload);
                expected.push(Owned::Close(Some((4000, "au revoir ✓".into()))));
            }
            Stream { bytes, expected }
        })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        proptest::collection::vec(1usize..16, 1..20),
        proptest::collection::vec(1usize..2000, 1..20),
    ]
}

proptest! {
    #[test]
    fn random_streams_decode_to_the_original_messages(
        stream in stream_strategy(),
        sizes in chunk_sizes(),
    ) {
        let (messages, err) = feed_chunked(&stream.bytes, &sizes, 1 << 20);
        prop_assert_eq!(err, None);
        prop_assert_eq!(messages, stream.expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in chunk_sizes(),
        max in 0usize..3000,
    ) {
        // Panics, overlong `consumed` and reassembly beyond the limit fail inside `Conn`.
        let _ = feed_chunked(&bytes, &sizes, max);
    }

    #[test]
    fn corrupted_streams_never_panic(
        stream in stream_strategy(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        sizes in chunk_sizes(),
        max in 0usize..3000,
    ) {
        let mut bytes = stream.bytes;
        if !bytes.is_empty() {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
        }
        let _ = feed_chunked(&bytes, &sizes, max);
    }

    #[test]
    fn callers_breaking_the_contract_cannot_cause_a_panic(
        buffers in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..10),
        max in 0usize..3000,
    ) {
        // Unrelated buffers on every call: results are meaningless but must stay in bounds.
        let mut decoder = Decoder::new();
        for mut buf in buffers {
            let len = buf.len();
            if let Ok(decoded) = decoder.decode(&mut buf, max) {
                prop_assert!(decoded.consumed <= len);
            }
        }
    }
}

// ---- Interoperability with an independent implementation (tungstenite) ----

#[test]
fn tungstenite_parses_our_server_frames() {
    use std::io::Cursor;
    use tungstenite::protocol::frame::FrameHeader;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    for n in [0usize, 125, 126, 65535, 65536] {
        let payload = vec![b'x'; n];
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, &payload);
        let mut cursor = Cursor::new(&out);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final && !header.rsv1 && header.mask.is_none());
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert_eq!(len, n as u64);
        assert_eq!(&out[cursor.position() as usize..], &payload[..]);
    }
}

#[test]
fn we_decode_tungstenite_client_frames() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let frames = [
        Frame::message(
            "tick: ☺".as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            true,
        ),
        Frame::message(vec![1u8; 70_000], OpCode::Data(Data::Binary), false),
        Frame::ping(b"are you there".to_vec()),
        Frame::message(vec![2u8; 10], OpCode::Data(Data::Continue), true),
        Frame::close(None),
    ];
    let mut stream = Vec::new();
    for (i, mut frame) in frames.into_iter().enumerate() {
        frame.header_mut().mask = Some([i as u8, 0x5A, 0xC3, 0x99]);
        frame.format(&mut stream).unwrap();
    }
    let mut binary = vec![1u8; 70_000];
    binary.extend_from_slice(&[2; 10]);
    let expected = vec![
        text("tick: ☺"),
        Owned::Ping(b"are you there".to_vec()),
        Owned::Binary(binary),
        Owned::Close(None),
    ];
    assert_eq!(feed_chunked(&stream, &[1000], 1 << 20), (expected, None));
}
