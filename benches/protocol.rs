//! Client op parsing and data frame encoding micro-benchmarks.
//!
//! - `parse`: [`tickcast::protocol::parse`] (span scan + simd-json into `OpFields`) against the
//!   same function written with serde_json (`parse_serde_json` below: the same span scan, then
//!   `serde_json::from_slice` into the same `OpFields` struct, then the same `Request`), on
//!   ping, subscribe and publish ops of realistic sizes.
//! - `parse_parts`: the pieces alone: the span scan, simd-json into `OpFields`, serde_json into
//!   `OpFields`, and each backend validating only (simd-json's tape, serde_json's
//!   `IgnoredAny`).
//! - `encode_data_frame`: building the one frame a publish is fanned out as, for 100 B and
//!   1 KiB of data.
//!
//! serde_json's `RawValue` would be the idiomatic way to capture `data` verbatim, but it needs
//! serde_json's `raw_value` feature, which tickcast does not enable; the span scan is what
//! tickcast uses instead, so both parsers share it and differ only in the JSON backend.
//!
//! Run with `cargo bench --bench protocol` (see benches/README.md).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde::de::IgnoredAny;
use tickcast::{
    frame::encode_data_frame,
    protocol::{BadRequest, Op, OpFields, Request, parse, scan_top_level},
};

/// The allocator of the `tickcast` binary (src/main.rs), so allocating paths cost what they
/// cost in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `{"op":"ping","id":7}`: the smallest op, sent every few seconds per client.
const PING: &[u8] = br#"{"op":"ping","id":7}"#;

/// A subscribe to three market-data topics (~130 B).
const SUBSCRIBE: &[u8] = br#"{"op":"subscribe","id":42,"topics":["md.binance.BTCUSDT.trades","md.binance.ETHUSDT.trades","md.binance.SOLUSDT.book"]}"#;

/// A publish of one trade (~230 B), as a market-data ingest would send it.
const PUBLISH_TRADE: &[u8] = br#"{"op":"publish","id":"t-1001","topic":"md.binance.BTCUSDT.trades","data":{"e":"trade","s":"BTCUSDT","t":4123456789,"p":"64123.45000000","q":"0.01200000","T":1732172400123,"m":true,"M":true}}"#;

/// Price levels per side in [`publish_book`]: 16 makes the op about 1 KiB.
const BOOK_LEVELS: usize = 16;

/// A publish of a 16-level order book snapshot (about 1 KiB).
fn publish_book() -> Vec<u8> {
    let level =
        |price: f64, i: usize| format!(r#"["{:.2}","{:.5}"]"#, price, 0.125 * (i + 1) as f64);
    let bids: Vec<String> = (0..BOOK_LEVELS)
        .map(|i| level(64123.45 - i as f64 * 0.5, i))
        .collect();
    let asks: Vec<String> = (0..BOOK_LEVELS)
        .map(|i| level(64124.00 + i as f64 * 0.5, i))
        .collect();
    format!(
        r#"{{"op":"publish","id":"b-77","topic":"md.binance.BTCUSDT.book","data":{{"e":"depthUpdate","E":1732172400123,"s":"BTCUSDT","U":157,"u":160,"lastUpdateId":160,"b":[{}],"a":[{}],"bidsTotal":"6.87500","asksTotal":"6.87500","exchangeTs":1732172400120,"gatewayTs":1732172400121}}}}"#,
        bids.join(","),
        asks.join(",")
    )
    .into_bytes()
}

/// [`parse`] with serde_json in place of simd-json: same span scan and copies, same struct,
/// same validation of the op (minus the error paths, which the benches do not take).
fn parse_serde_json(msg: &[u8]) -> Result<Request<'_>, BadRequest> {
    let spans = scan_top_level(msg);
    let id = spans.id.clone().map(|r| Box::<[u8]>::from(&msg[r]));
    let data = spans.data.clone().map(|r| msg[r].to_vec());
    let bad = |message: String| BadRequest { id: None, message };
    let fields: OpFields<'_> = serde_json::from_slice(msg).map_err(|e| bad(e.to_string()))?;
    let id = if fields.id.is_some() { id } else { None };
    let op = match &*fields.op {
        "subscribe" | "unsubscribe" => {
            let topics = fields.topics.ok_or_else(|| bad("topics".into()))?;
            if fields.op == "subscribe" {
                Op::Subscribe {
                    topics,
                    since: Vec::new(),
                    filter: None,
                }
            } else {
                Op::Unsubscribe { topics }
            }
        }
        "publish" => {
            let topic = fields.topic.ok_or_else(|| bad("topic".into()))?;
            if data.is_none() || !fields.data {
                return Err(bad("data".into()));
            }
            Op::Publish { topic, idem: None }
        }
        "ping" => Op::Ping,
        other => return Err(bad(format!("unknown op {other:?}"))),
    };
    Ok(Request { op, id, data })
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ping", PING.to_vec()),
        ("subscribe", SUBSCRIBE.to_vec()),
        ("publish_trade", PUBLISH_TRADE.to_vec()),
        ("publish_book", publish_book()),
    ]
}

/// Both parsers agree on every case (checked once, outside the timing).
fn check(name: &str, msg: &[u8]) {
    let mut buffers = simd_json::Buffers::default();
    let mut copy = msg.to_vec();
    let simd = parse(&mut copy, &mut buffers).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let serde = parse_serde_json(msg).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert_eq!(
        format!("{:?}", simd.op),
        format!("{:?}", serde.op),
        "{name}"
    );
    assert_eq!(simd.id, serde.id, "{name}");
    assert_eq!(simd.data, serde.data, "{name}");
}

fn bench_parse(c: &mut Criterion) {
    eprintln!(
        "simd-json implementation: {:?}",
        simd_json::Deserializer::algorithm()
    );
    let mut group = c.benchmark_group("parse");
    for (name, msg) in cases() {
        check(name, &msg);
        assert!(msg.len() <= 1100, "{name} is {} bytes", msg.len());
        eprintln!("{name}: {} bytes", msg.len());
        group.throughput(Throughput::Bytes(msg.len() as u64));
        let mut buffers = simd_json::Buffers::new(msg.len());
        // simd-json parses in place, so each iteration gets a fresh copy (copy not timed).
        group.bench_function(format!("simd_json/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| parse(buf, &mut buffers).is_ok(),
                BatchSize::SmallInput,
            )
        });
        // Same harness as simd-json (a fresh copy per iteration) so both read equally cold
        // input, although serde_json does not need the copy.
        group.bench_function(format!("serde_json/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| parse_serde_json(buf).is_ok(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_parse_parts(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_parts");
    for (name, msg) in cases() {
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(format!("scan_top_level/{name}"), |b| {
            b.iter(|| scan_top_level(black_box(&msg)))
        });
        let mut buffers = simd_json::Buffers::new(msg.len());
        group.bench_function(format!("simd_json_fields/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| {
                    simd_json::serde::from_slice_with_buffers::<OpFields<'_>>(buf, &mut buffers)
                        .is_ok()
                },
                BatchSize::SmallInput,
            )
        });
        // Validation only, no struct: where each backend's time goes. simd-json builds its
        // whole tape (stage 1 + stage 2); serde_json walks the text once and keeps nothing.
        group.bench_function(format!("simd_json_tape/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| simd_json::to_tape_with_buffers(buf, &mut buffers).is_ok(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("serde_json_ignored/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| serde_json::from_slice::<IgnoredAny>(buf).is_ok(),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("serde_json_fields/{name}"), |b| {
            b.iter_batched_ref(
                || msg.clone(),
                |buf| serde_json::from_slice::<OpFields<'_>>(buf).is_ok(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_encode_data_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_data_frame");
    for (name, len) in [("100B", 100), ("1KiB", 1024)] {
        // A JSON string of exactly `len` bytes: quotes around `len - 2` letters.
        let mut data = vec![b'x'; len];
        data[0] = b'"';
        data[len - 1] = b'"';
        let frame = encode_data_frame("md.binance.BTCUSDT.trades", 1, 1, &data, 1);
        assert_eq!(frame.topic(), "md.binance.BTCUSDT.trades");
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                encode_data_frame(
                    black_box("md.binance.BTCUSDT.trades"),
                    black_box(123_456_789),
                    black_box(1_732_172_400_123_456),
                    black_box(&data),
                    black_box(987_654_321),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_parse_parts,
    bench_encode_data_frame
);
criterion_main!(benches);
