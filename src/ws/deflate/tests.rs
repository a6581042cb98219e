//! Tests for `permessage-deflate`.
//!
//! This file holds the shared helpers; the tests are in `tests/`, one file a topic:
//! [`negotiation`] (offers real clients send, malformed headers, the response line),
//! [`roundtrip`] (compression, including property tests) and [`inflation`] (the RFC's
//! example bytes, bounds, invalid data).

use super::*;

mod inflation;
mod negotiation;
mod roundtrip;

/// A message limit for tests, like the default `limits.message_bytes_max`.
const MAX: usize = 64 * 1024;

/// The compressed payload of a frame built by [`Deflater::encode_frame`], after checking its
/// header: FIN, RSV1, the opcode, no mask, a length that matches.
fn payload_of(frame: &[u8], opcode: u8) -> &[u8] {
    assert_eq!(frame[0], 0x80 | 0x40 | opcode, "FIN + RSV1 + opcode");
    assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
    let (len, header_len) = match frame[1] {
        126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&frame[2..10]);
            (u64::from_be_bytes(be) as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    assert_eq!(
        frame.len(),
        header_len + len,
        "length field matches the frame"
    );
    &frame[header_len..]
}

/// Compresses `payload` as one text frame and returns the frame's payload.
fn compressed(deflater: &mut Deflater, payload: &[u8], window: WindowBits) -> Vec<u8> {
    let mut frame = Vec::new();
    deflater.encode_frame(&mut frame, crate::ws::frame::OP_TEXT, payload, window);
    payload_of(&frame, crate::ws::frame::OP_TEXT).to_vec()
}

/// Inflates `compressed` with a reference implementation (zlib-rs through flate2, streaming,
/// as a zlib-based client would: append 0x00 0x00 0xff 0xff, sync flush) and a fresh window
/// of `window` bits, so every frame is checked to decode alone.
fn reference_inflate(compressed: &[u8], window: WindowBits) -> Vec<u8> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
    let mut d = Decompress::new_with_window_bits(false, window.get());
    let mut out = Vec::with_capacity(1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(
                &input[before_in as usize..],
                &mut out,
                FlushDecompress::Sync,
            )
            .expect("reference inflate failed");
        let stalled = d.total_in() == before_in && d.total_out() == before_out;
        let drained = d.total_in() as usize == input.len() && out.len() < out.capacity();
        if status == Status::StreamEnd || stalled || drained {
            return out;
        }
    }
}

/// Inflates like Chromium and WebKit do: zlib, and when a block with BFINAL set ends the
/// stream, reset and go on with the bytes after it. Panics on invalid data.
fn restarting_inflate(compressed: &[u8]) -> Vec<u8> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(1024);
    let mut pos = 0;
    while pos < input.len() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let before = d.total_in();
        let status = d
            .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            .expect("restarting inflate failed");
        pos += (d.total_in() - before) as usize;
        if status == Status::StreamEnd {
            d.reset(false);
        } else if d.total_in() == before && out.len() < out.capacity() {
            break;
        }
    }
    out
}
