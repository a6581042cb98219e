//! Inflation: RFC 7692 §7.2.3's example payloads, the size and ratio bounds (zip bombs),
//! invalid data, and UTF-8 after inflating.

use super::*;

#[test]
fn rfc_7692_examples_inflate_to_hello() {
    let examples: [(&str, &[u8]); 4] = [
        // §7.2.3.1: "Hello" compressed as one DEFLATE block.
        ("7.2.3.1", &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
        // §7.2.3.3: a DEFLATE block with no compression.
        (
            "7.2.3.3",
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
        ),
        // §7.2.3.4: a DEFLATE block with BFINAL set to 1.
        ("7.2.3.4", &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]),
        // §7.2.3.5: two DEFLATE blocks in one message.
        (
            "7.2.3.5",
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ),
    ];
    let mut inflater = Inflater::new();
    for (section, bytes) in examples {
        assert_eq!(
            inflater.inflate(bytes, MAX),
            Ok(&mut b"Hello".to_vec()[..]),
            "§{section}"
        );
    }
}

#[test]
fn a_message_that_needs_the_previous_window_is_invalid() {
    // §7.2.3.2: the second "Hello" refers back to the first one. The client agreed to
    // client_no_context_takeover, so such a message is invalid data here.
    let mut inflater = Inflater::new();
    assert_eq!(
        inflater.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], MAX),
        Err(InflateError::Invalid)
    );
}

#[test]
fn a_zip_bomb_fails_too_big_within_the_bound() {
    // 1 MiB of zeros compresses to about 1 KiB (DEFLATE's ratio ceiling is about 1032).
    let mut d = Deflater::new(Level::MAX);
    let bomb = compressed(&mut d, &vec![0u8; 1 << 20], WindowBits::MAX);
    assert!(bomb.len() <= 1100, "{} bytes", bomb.len());
    let mut inflater = Inflater::with_ratio_max(usize::MAX);
    assert_eq!(inflater.inflate(&bomb, MAX), Err(InflateError::TooBig));
    // The output buffer is exactly the allowed output plus the one byte that shows "more".
    assert!(
        inflater.scratch_bytes() <= MAX + 1,
        "{} bytes held",
        inflater.scratch_bytes()
    );
    assert_eq!(InflateError::TooBig.close_code(), 1009);
    // The same bytes are fine with room for them.
    assert_eq!(
        inflater.inflate(&bomb, 1 << 20).map(|m| m.len()),
        Ok(1 << 20)
    );
}

#[test]
fn the_ratio_bound_applies_above_its_floor() {
    let mut d = Deflater::new(Level::DEFAULT);
    // 100 KiB of zeros: about 100 bytes compressed, so the ratio bound (100 x) is under the
    // floor, and the floor (16 KiB) is what stops it, well under the 1 MiB limit.
    let zeros = compressed(&mut d, &vec![0u8; 100 * 1024], WindowBits::MAX);
    let mut inflater = Inflater::new();
    assert_eq!(inflater.inflate(&zeros, 1 << 20), Err(InflateError::Ratio));
    assert_eq!(InflateError::Ratio.close_code(), 1009);
    // Under the floor, any ratio is fine.
    let small = compressed(&mut d, &vec![0u8; RATIO_FLOOR_BYTES], WindowBits::MAX);
    assert!(small.len() * RATIO_MAX_DEFAULT < RATIO_FLOOR_BYTES);
    assert_eq!(
        inflater.inflate(&small, 1 << 20).map(|m| m.len()),
        Ok(RATIO_FLOOR_BYTES)
    );
    // A long but real subscribe (no two topics alike) is far from the bound.
    let topics: Vec<String> = (0..1000).map(|i| format!("\"bbo.T{i}USDT\"")).collect();
    let json = format!(r#"{{"op":"subscribe","topics":[{}]}}"#, topics.join(",")).into_bytes();
    let c = compressed(&mut d, &json, WindowBits::MAX);
    assert!(c.len() * 20 > json.len(), "{} -> {}", json.len(), c.len());
    assert_eq!(
        inflater.inflate(&c, 1 << 20).map(|m| m.len()),
        Ok(json.len())
    );
}

#[test]
fn exactly_the_limit_is_allowed() {
    let mut d = Deflater::new(Level::DEFAULT);
    let c = compressed(&mut d, &vec![b'x'; MAX], WindowBits::MAX);
    let mut inflater = Inflater::with_ratio_max(usize::MAX);
    assert_eq!(inflater.inflate(&c, MAX).map(|m| m.len()), Ok(MAX));
    assert_eq!(inflater.inflate(&c, MAX - 1), Err(InflateError::TooBig));
}

#[test]
fn invalid_data_fails_cleanly() {
    let mut inflater = Inflater::new();
    let invalid: [&[u8]; 5] = [
        // No data at all: not even a block header.
        &[],
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        &[0x07],
        &[0x06, 0x00],
        // A stored block whose NLEN is not the complement of LEN.
        &[0x00, 0x05, 0x00, 0x00, 0x00, b'H', b'e', b'l', b'l', b'o'],
        // A stream cut short inside a block.
        &[0xf2, 0x48, 0xcd],
    ];
    for bytes in invalid {
        assert_eq!(
            inflater.inflate(bytes, MAX),
            Err(InflateError::Invalid),
            "{bytes:02x?}"
        );
    }
    assert_eq!(InflateError::Invalid.close_code(), 1007);
    // Arbitrary bytes never panic, and the inflater keeps working afterwards.
    let mut x = 0x9E37_79B9u32;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = inflater.inflate(&bytes, MAX);
    }
    assert_eq!(
        inflater.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], MAX),
        Ok(&mut b"Hello".to_vec()[..])
    );
}

#[test]
fn a_huge_scratch_buffer_is_not_kept() {
    let mut d = Deflater::new(Level::DEFAULT);
    let big = compressed(&mut d, &vec![b'y'; 1 << 20], WindowBits::MAX);
    let mut inflater = Inflater::with_ratio_max(usize::MAX);
    assert!(inflater.inflate(&big, 1 << 20).is_ok());
    assert!(inflater.scratch_bytes() > 1 << 20);
    assert!(inflater.inflate(&[0x00], MAX).is_ok());
    assert!(inflater.scratch_bytes() <= 256 * 1024);
}

#[test]
fn text_is_checked_after_inflating() {
    assert_eq!(check_text("κόσμε".as_bytes()), Ok(()));
    assert_eq!(check_text(b""), Ok(()));
    let err = check_text(b"ok\xF0\x9F").unwrap_err();
    assert_eq!(err, crate::ws::frame::Violation::InvalidUtf8);
    assert_eq!(err.close_code(), 1007);
    assert!(check_text(b"\xFF").is_err());
}
