//! WebSocket wire layer micro-benchmarks: server frame header encoding, client payload
//! unmasking (against a naive byte-at-a-time loop), decoding one small masked text frame, and
//! `permessage-deflate`: compressing a demo-feed-like frame with libdeflate and zlib-rs at
//! a few levels (`deflate` group; the compressed sizes are printed once) and inflating it
//! with the `Inflater` (zlib-rs) against libdeflate (`inflate` group).
//!
//! Run with `cargo bench --bench ws` (see benches/README.md); one group with e.g.
//! `cargo bench --bench ws -- deflate`.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use libdeflater::{CompressionLvl, Compressor};
use tickcast::ws::{
    deflate::{Deflater, Inflater, Level, WindowBits},
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

/// A best-bid-offer update as the demo feed publishes it (137 bytes).
const BBO: &[u8] = br#"{"topic":"bbo.BTCUSDT","seq":123456,"ts":1796425182508752,"data":{"s":"BTCUSDT","bp":"97123.45","bq":"0.98","ap":"97123.47","aq":"4.54"}}"#;

/// An order book snapshot of 2 KiB: 20 levels a side, prices a tick apart, quantities varied.
fn book_2k() -> Vec<u8> {
    let mut out = String::from(
        r#"{"topic":"book.BTCUSDT","seq":123457,"ts":1796425182508791,"data":{"s":"BTCUSDT","bids":["#,
    );
    let mut x = 0x2545_F491u32;
    let mut level = |side: i64, i: i64| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let price = 9_712_345 + side * (i + 1) * 7;
        format!(
            r#"["{}.{:02}","{}.{:03}"]"#,
            price / 100,
            price % 100,
            x % 13,
            x % 1000
        )
    };
    let bids: Vec<String> = (0..20).map(|i| level(-1, i)).collect();
    let asks: Vec<String> = (0..20).map(|i| level(1, i)).collect();
    out.push_str(&bids.join(","));
    out.push_str(r#"],"asks":["#);
    out.push_str(&asks.join(","));
    out.push_str("]}}");
    while out.len() < 2048 {
        out.insert(out.len() - 2, ' ');
    }
    out.into_bytes()
}

/// zlib-rs (flate2) as the Deflater drives it for small windows: reset, sync flush.
fn zlib_compress(c: &mut Compress, payload: &[u8], out: &mut Vec<u8>) -> usize {
    c.reset();
    out.clear();
    c.compress_vec(payload, out, FlushCompress::Sync)
        .expect("zlib-rs compress");
    out.len() - 4
}

fn bench_deflate(c: &mut Criterion) {
    let book = book_2k();
    let payloads: [(&str, &[u8]); 2] = [("bbo_137B", BBO), ("book_2KiB", &book)];
    let mut group = c.benchmark_group("deflate");
    for (name, payload) in payloads {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        for level in [1, 4, 6, 9] {
            let mut compressor = Compressor::new(CompressionLvl::new(level).unwrap());
            let mut out = vec![0u8; compressor.deflate_compress_bound(payload.len())];
            let n = compressor.deflate_compress(payload, &mut out).unwrap();
            eprintln!(
                "size deflate/{name}/libdeflate_l{level}: {} -> {} bytes",
                payload.len(),
                n + 1
            );
            group.bench_function(format!("{name}/libdeflate_l{level}"), |b| {
                b.iter(|| {
                    compressor
                        .deflate_compress(black_box(payload), &mut out)
                        .unwrap()
                })
            });
        }
        for level in [1, 6, 9] {
            let mut compress = Compress::new_with_window_bits(Compression::new(level), false, 15);
            let mut out = Vec::with_capacity(payload.len() + 256);
            let n = zlib_compress(&mut compress, payload, &mut out);
            eprintln!(
                "size deflate/{name}/zlib-rs_l{level}: {} -> {n} bytes",
                payload.len()
            );
            group.bench_function(format!("{name}/zlib-rs_l{level}"), |b| {
                b.iter(|| zlib_compress(&mut compress, black_box(payload), &mut out))
            });
        }
        // The whole frame as the server would build it: compression, header, one allocation.
        for bits in [15, 12] {
            let window = WindowBits::new(bits).unwrap();
            let mut deflater = Deflater::new(Level::DEFAULT);
            group.bench_function(format!("{name}/frame_l6_w{bits}"), |b| {
                b.iter(|| {
                    let mut frame = Vec::new();
                    deflater.encode_frame(&mut frame, OP_TEXT, black_box(payload), window);
                    frame
                })
            });
        }
    }
    group.finish();
}

fn bench_inflate(c: &mut Criterion) {
    let book = book_2k();
    let payloads: [(&str, &[u8]); 2] = [("bbo_137B", BBO), ("book_2KiB", &book)];
    let mut group = c.benchmark_group("inflate");
    for (name, payload) in payloads {
        // What a zlib-based client sends: sync flush, the 4-octet tail removed.
        let mut compress = Compress::new(Compression::new(6), false);
        let mut compressed = Vec::with_capacity(payload.len() + 256);
        let n = zlib_compress(&mut compress, payload, &mut compressed);
        compressed.truncate(n);
        group.throughput(Throughput::Bytes(payload.len() as u64));
        // The Inflater: zlib-rs, payload then tail, bounded output.
        let mut inflater = Inflater::new();
        group.bench_function(format!("{name}/inflater_zlib-rs"), |b| {
            b.iter(|| {
                inflater
                    .inflate(black_box(&compressed), 64 * 1024)
                    .unwrap()
                    .len()
            })
        });
        // libdeflate, the alternative: whole stream in one buffer, so payload and tail (with
        // a final stored block) are copied together first.
        let mut decompressor = libdeflater::Decompressor::new();
        let mut input = Vec::with_capacity(compressed.len() + 9);
        let mut out = vec![0u8; 16 * 1024 + 1];
        group.bench_function(format!("{name}/libdeflate"), |b| {
            b.iter(|| {
                input.clear();
                input.extend_from_slice(black_box(&compressed));
                input.extend_from_slice(&[0, 0, 0xFF, 0xFF, 0x01, 0, 0, 0xFF, 0xFF]);
                decompressor.deflate_decompress(&input, &mut out).unwrap()
            })
        });
        // zlib-rs bare, without the Inflater's bookkeeping.
        let mut decompress = Decompress::new(false);
        group.bench_function(format!("{name}/zlib-rs"), |b| {
            b.iter(|| {
                decompress.reset(false);
                decompress
                    .decompress(black_box(&compressed), &mut out, FlushDecompress::None)
                    .unwrap();
                let done = decompress.total_out() as usize;
                decompress
                    .decompress(&[0, 0, 0xFF, 0xFF], &mut out[done..], FlushDecompress::Sync)
                    .unwrap();
                decompress.total_out()
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_encode_header,
    bench_unmask,
    bench_decode,
    bench_deflate,
    bench_inflate
);
criterion_main!(benches);
