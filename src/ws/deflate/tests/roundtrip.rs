//! Compression: frames are well formed, every window round-trips through both our inflater
//! and a zlib-based one limited to that window, and each frame inflates alone.

use super::*;
use crate::ws::frame::{OP_BINARY, OP_TEXT};
use proptest::prelude::*;

fn windows() -> impl Iterator<Item = WindowBits> {
    (9..=15).map(|b| WindowBits::new(b).unwrap())
}

/// Demo-feed-like JSON with some variety, `n` bytes or a little more.
fn json(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = 123_456u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{{\"topic\":\"bbo.BTCUSDT\",\"seq\":{seq},\"data\":{{\"bp\":\"{}.{}\"}}}}",
                97_000 + seq % 97,
                seq % 100
            )
            .as_bytes(),
        );
        seq += 7;
    }
    out
}

#[test]
fn frames_have_fin_rsv1_and_exact_length() {
    let mut d = Deflater::new(Level::DEFAULT);
    for (opcode, len) in [
        (OP_TEXT, 0),
        (OP_TEXT, 100),
        (OP_BINARY, 2000),
        (OP_TEXT, 70_000),
    ] {
        for window in [WindowBits::MIN, WindowBits::MAX] {
            let payload = json(len);
            let payload = &payload[..len];
            let mut frame = Vec::new();
            d.encode_frame(&mut frame, opcode, payload, window);
            assert_eq!(frame.len(), frame.capacity(), "one exact allocation");
            let body = payload_of(&frame, opcode);
            assert_eq!(reference_inflate(body, window), payload);
        }
    }
}

#[test]
fn an_empty_message_is_one_zero_byte() {
    // RFC 7692 §7.2.1 applied to nothing: an empty stored block minus its 4 last octets.
    let mut d = Deflater::new(Level::DEFAULT);
    for window in windows() {
        assert_eq!(compressed(&mut d, b"", window), [0x00]);
    }
    assert_eq!(Inflater::new().inflate(&[0x00], MAX).unwrap(), b"");
}

#[test]
fn window_15_ends_like_the_rfc_bfinal_example() {
    // §7.2.3.4's example is a final block followed by 0x00; libdeflate's output has that
    // shape (here a stored final block, which libdeflate finds cheapest for 5 bytes).
    let mut d = Deflater::new(Level::DEFAULT);
    for payload in [&b"Hello"[..], &json(150), &json(2048)] {
        let c = compressed(&mut d, payload, WindowBits::MAX);
        assert_eq!(c.last(), Some(&0x00));
        // Read by a receiver that stops at the final block and by one that restarts after it.
        assert_eq!(reference_inflate(&c, WindowBits::MAX), payload);
        assert_eq!(restarting_inflate(&c), payload);
    }
    // Smaller windows use a sync flush: exactly §7.2.3.1's bytes.
    let c = compressed(&mut d, b"Hello", WindowBits::MIN);
    assert_eq!(c, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
}

#[test]
fn json_compresses() {
    let mut d = Deflater::new(Level::DEFAULT);
    let payload = json(2048);
    for window in windows() {
        let c = compressed(&mut d, &payload, window);
        assert!(c.len() < payload.len() / 3, "{window:?}: {} bytes", c.len());
    }
}

#[test]
fn the_stored_fallback_is_valid_deflate() {
    let mut d = Deflater::new(Level::DEFAULT);
    for len in [1, 100, 0xFFFF, 0x10000, 200_000] {
        let payload = json(len);
        let payload = &payload[..len];
        let n = d.stored(payload);
        let c = &d.scratch[..n];
        assert_eq!(reference_inflate(c, WindowBits::MIN), payload, "{len}");
        assert_eq!(
            Inflater::new().inflate(c, 1 << 20).unwrap(),
            payload,
            "{len}"
        );
    }
}

#[test]
fn every_level_round_trips() {
    let payload = json(3000);
    for level in 1..=9 {
        let mut d = Deflater::new(Level::new(level).unwrap());
        for window in windows() {
            let c = compressed(&mut d, &payload, window);
            assert_eq!(
                reference_inflate(&c, window),
                payload,
                "level {level} {window:?}"
            );
        }
    }
    assert_eq!(Level::new(0), None);
    assert_eq!(Level::new(10), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// compress → inflate is the identity for every window, with our inflater and with a
    /// zlib inflater limited to that window; frames compressed one after the other by the same
    /// deflater each inflate alone (no context).
    #[test]
    fn compress_inflate_round_trips(
        messages in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                (0usize..5000).prop_map(json),
                proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], 0..20_000),
            ],
            1..4,
        ),
        level in 1u8..=9,
    ) {
        let mut d = Deflater::new(Level::new(level).unwrap());
        let mut inflater = Inflater::with_ratio_max(usize::MAX);
        for window in windows() {
            let frames: Vec<Vec<u8>> =
                messages.iter().map(|m| compressed(&mut d, m, window)).collect();
            // Inflated in reverse order, each with a fresh reference state: nothing refers to
            // an earlier message.
            for (message, frame) in messages.iter().zip(&frames).rev() {
                prop_assert_eq!(&reference_inflate(frame, window), message);
                prop_assert_eq!(&restarting_inflate(frame), message);
                prop_assert_eq!(&inflater.inflate(frame, MAX).unwrap()[..], &message[..]);
            }
        }
    }
}
