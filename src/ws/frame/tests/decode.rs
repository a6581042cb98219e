//! Decoding well-formed client streams: every length encoding, fragments with control frames
//! between them, zero-copy unmasking, chunked feeding and large messages in small reads.

use super::*;

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
