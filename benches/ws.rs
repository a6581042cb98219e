//! WebSocket wire layer micro-benchmarks: server frame header encoding, client payload
//! unmasking (against a naive byte-at-a-time loop) and decoding one small masked text frame.
//!
//! Run with `cargo bench --bench ws` (see benches/README.md).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickcast::ws::{
    frame::{Decoder, HEADER_BYTES_MAX, Message, OP_TEXT, encode_header},
    mask::unmask,
};

/// The allocator of the `tickcast` binary (src/main.rs), so allocating paths cost what they
/// cost in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Payload sizes whose header is 2, 4 and 10 bytes respectively.
const HEADER_CASES: [(&str, usize); 3] =
    [("100B", 100), ("10KiB", 10 * 1024), ("100KiB", 100 * 1024)];

fn bench_encode_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_header");
    for (name, len) in HEADER_CASES {
        let mut out = [0u8; HEADER_BYTES_MAX];
        group.bench_function(name, |b| {
            b.iter(|| encode_header(black_box(&mut out), OP_TEXT, black_box(len)))
        });
    }
    group.finish();
}

/// RFC 6455 §5.3 as written: one byte at a time, key index `(offset + i) % 4`. The offset is
/// passed through `black_box` like the real function's, so the compiler cannot specialise it.
#[inline(never)]
fn unmask_naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) % 4];
    }
}

fn bench_unmask(c: &mut Criterion) {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut group = c.benchmark_group("unmask");
    for (name, len) in [("16B", 16), ("125B", 125), ("4KiB", 4096), ("64KiB", 65536)] {
        // XOR with the same key twice restores the data, so the buffer is simply reused.
        let mut buf: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("unmask/{name}"), |b| {
            b.iter(|| unmask(black_box(&mut buf), mask, black_box(0)))
        });
        group.bench_function(format!("naive/{name}"), |b| {
            b.iter(|| unmask_naive(black_box(&mut buf), mask, black_box(0)))
        });
    }
    group.finish();
}

/// A client text frame: FIN + text, MASK bit, 7-bit length, key, masked payload.
fn masked_text_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() <= 125, "7-bit length only");
    let mut frame = vec![0x80 | OP_TEXT, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, &b)| b ^ mask[i % 4]));
    frame
}

fn bench_decode(c: &mut Criterion) {
    // A 100-byte publish op, the typical small client message.
    let mut payload = br#"{"op":"publish","id":17,"topic":"md.binance.BTCUSDT.trades","data":{"p":"64123.5","q":"0.012"}}"#.to_vec();
    payload.resize(100, b' ');
    let frame = masked_text_frame(&payload, [0x11, 0x22, 0x33, 0x44]);
    assert_eq!(frame.len(), 106);

    // Sanity check outside the timing: the frame decodes to the payload.
    let mut check = frame.clone();
    let mut decoder = Decoder::new();
    let decoded = decoder.decode(&mut check, 1 << 20).expect("valid frame");
    assert_eq!(decoded.consumed, frame.len());
    match decoded.message {
        Some(Message::Text(text)) => assert_eq!(&text[..], &payload[..]),
        other => panic!("expected a text message, got {other:?}"),
    }

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    // Decoding unmasks in place, so each iteration gets a fresh masked copy (copy not timed).
    let mut decoder = Decoder::new();
    group.bench_function("masked_text_100B", |b| {
        b.iter_batched_ref(
            || frame.clone(),
            |buf| {
                let decoded = decoder
                    .decode(buf, black_box(1 << 20))
                    .expect("valid frame");
                let len = match decoded.message {
                    Some(Message::Text(text)) => text.len(),
                    _ => 0,
                };
                (decoded.consumed, len)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_encode_header, bench_unmask, bench_decode);
criterion_main!(benches);
