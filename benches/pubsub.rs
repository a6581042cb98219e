//! Topic routing micro-benchmarks: topic/pattern validation, and matching one published topic
//! against 100,000 subscriptions with [`PatternTrie::for_each_match`] (patterns only) and
//! [`LocalIndex::for_each_subscriber`] (patterns, then each pattern's subscribers).
//!
//! Workloads of 100,000 subscriptions:
//! - `exact_100k`: 100,000 exact topics `md.binance.SYM<n>.trades`, one subscriber each; a
//!   publish matches one pattern (`hit`), or none (`miss`).
//! - `mixed_99k_1k`: 99,000 exact topics plus 1,000 wildcard patterns in four shapes
//!   (`md.*.SYM<k>.trades`, `md.binance.SYM<k>.>`, `md.*.SYM<k>.*`, `md.venue<k>.>`), one
//!   subscriber each; the published topic matches its exact pattern and three wildcards
//!   (`hit4`), or only its exact pattern after walking the trie (`hit1`).
//! - `one_topic_100k`: 100,000 connections on one exact topic; the cost is the iteration.
//! - `filters_10k`: 10,000 connections on one topic subscribed with 0, 10 or 1,000 distinct
//!   filters (connection i with filter i mod N, two tests every message passes, the shape of
//!   `tickcast-bench --filters`), through [`LocalIndex::for_each_receiver`]: one message's walk,
//!   the data parsed once and each distinct filter evaluated once.
//!
//! Every bench sets criterion's throughput to the number of matches (or subscribers) it
//! visits, so `time / elements` is the cost per match (or per visited subscriber).
//!
//! Run with `cargo bench --bench pubsub` (see benches/README.md).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickcast::pubsub::{
    filter::{Filter, FilterLimits},
    index::LocalIndex,
    topic::{validate_pattern, validate_topic},
    trie::PatternTrie,
};

/// The allocator of the `tickcast` binary (src/main.rs), so allocating paths cost what they
/// cost in production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBSCRIPTIONS: u32 = 100_000;
const WILDCARDS: u32 = 1_000;

fn bench_validate(c: &mut Criterion) {
    let sixteen = (0..16)
        .map(|i| format!("seg{i:02}"))
        .collect::<Vec<_>>()
        .join(".");
    let topics = [
        ("trades.BTCUSDT", "trades.BTCUSDT".to_string()),
        ("kline.SOLUSDT.1m", "kline.SOLUSDT.1m".to_string()),
        (
            "md.binance.BTCUSDT.trades",
            "md.binance.BTCUSDT.trades".to_string(),
        ),
        ("16_segments", sixteen),
    ];
    let mut group = c.benchmark_group("validate_topic");
    for (name, topic) in &topics {
        assert!(validate_topic(topic).is_ok(), "{topic}");
        group.throughput(Throughput::Bytes(topic.len() as u64));
        group.bench_function(*name, |b| b.iter(|| validate_topic(black_box(topic))));
    }
    group.finish();

    let mut group = c.benchmark_group("validate_pattern");
    let patterns = [
        ("trades.BTCUSDT", "trades.BTCUSDT"),
        ("kline.SOLUSDT.1m", "kline.SOLUSDT.1m"),
        ("md.*.trades", "md.*.trades"),
        ("md.BTC.>", "md.BTC.>"),
        ("16_segments", &topics[3].1),
    ];
    for (name, pattern) in patterns {
        assert!(validate_pattern(pattern).is_ok(), "{pattern}");
        group.throughput(Throughput::Bytes(pattern.len() as u64));
        group.bench_function(name, |b| b.iter(|| validate_pattern(black_box(pattern))));
    }
    group.finish();
}

fn exact_topic(n: u32) -> String {
    format!("md.binance.SYM{n}.trades")
}

/// 99,000 exact topics then 1,000 wildcard patterns, four shapes in turn; SYM0 is matched by
/// the first three shapes (k = 0).
fn mixed_patterns() -> Vec<String> {
    let mut patterns: Vec<String> = (0..SUBSCRIPTIONS - WILDCARDS).map(exact_topic).collect();
    for i in 0..WILDCARDS {
        let k = i / 4;
        patterns.push(match i % 4 {
            0 => format!("md.*.SYM{k}.trades"),
            1 => format!("md.binance.SYM{k}.>"),
            2 => format!("md.*.SYM{k}.*"),
            _ => format!("md.venue{k}.>"),
        });
    }
    patterns
}

fn trie_of(patterns: &[String]) -> PatternTrie<u32> {
    let mut trie = PatternTrie::default();
    for (i, p) in patterns.iter().enumerate() {
        assert!(validate_pattern(p).is_ok(), "{p}");
        *trie.entry(p) = i as u32;
    }
    assert_eq!(trie.len(), patterns.len());
    trie
}

fn index_of(patterns: &[String]) -> LocalIndex {
    let mut index = LocalIndex::default();
    for (i, p) in patterns.iter().enumerate() {
        index.subscribe(p, i as u32, None);
    }
    index
}

fn trie_matches(trie: &PatternTrie<u32>, topic: &str) -> u64 {
    let mut n = 0;
    trie.for_each_match(topic, |_| n += 1);
    n
}

fn index_matches(index: &LocalIndex, topic: &str) -> u64 {
    let mut n = 0;
    index.for_each_subscriber(topic, |_| n += 1);
    n
}

/// Benches one topic against both structures; `expected` is the number of matching patterns
/// (each with one subscriber), which becomes the throughput element count.
fn bench_lookup(
    c: &mut Criterion,
    group_name: &str,
    trie: &PatternTrie<u32>,
    index: &LocalIndex,
    cases: &[(&str, String, u64)],
) {
    let mut group = c.benchmark_group(group_name);
    for (name, topic, expected) in cases {
        assert!(validate_topic(topic).is_ok(), "{topic}");
        assert_eq!(trie_matches(trie, topic), *expected, "trie {topic}");
        assert_eq!(index_matches(index, topic), *expected, "index {topic}");
        // A miss still costs one lookup; count it as one element so the figure stays printable.
        group.throughput(Throughput::Elements((*expected).max(1)));
        group.bench_function(format!("trie/{name}"), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                trie.for_each_match(black_box(topic), |&v| sum = sum.wrapping_add(v));
                sum
            })
        });
        group.bench_function(format!("index/{name}"), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                index.for_each_subscriber(black_box(topic), |c| sum = sum.wrapping_add(c));
                sum
            })
        });
    }
    group.finish();
}

fn bench_exact_100k(c: &mut Criterion) {
    let patterns: Vec<String> = (0..SUBSCRIPTIONS).map(exact_topic).collect();
    let trie = trie_of(&patterns);
    let index = index_of(&patterns);
    assert_eq!(index.subscription_count(), SUBSCRIPTIONS as usize);
    let cases = [
        ("hit", exact_topic(54_321), 1),
        ("miss", "md.binance.NOPE.trades".to_string(), 0),
    ];
    bench_lookup(c, "exact_100k", &trie, &index, &cases);
}

fn bench_mixed(c: &mut Criterion) {
    let patterns = mixed_patterns();
    let trie = trie_of(&patterns);
    let index = index_of(&patterns);
    assert_eq!(index.subscription_count(), SUBSCRIPTIONS as usize);
    let cases = [
        // Exact + md.*.SYM0.trades + md.binance.SYM0.> + md.*.SYM0.*
        ("hit4", exact_topic(0), 4),
        // Exact only: the walk reaches md.binance and md.* but no wildcard fits SYM54321.
        ("hit1", exact_topic(54_321), 1),
    ];
    bench_lookup(c, "mixed_99k_1k", &trie, &index, &cases);
}

fn bench_one_topic(c: &mut Criterion) {
    let topic = "md.binance.BTCUSDT.trades";
    let mut index = LocalIndex::default();
    for conn in 0..SUBSCRIPTIONS {
        index.subscribe(topic, conn, None);
    }
    assert_eq!(index.subscriber_count(topic), SUBSCRIPTIONS as usize);
    assert_eq!(index_matches(&index, topic), SUBSCRIPTIONS as u64);
    let mut group = c.benchmark_group("one_topic_100k");
    group.throughput(Throughput::Elements(SUBSCRIPTIONS as u64));
    group.bench_function("index/for_each_subscriber", |b| {
        b.iter(|| {
            let mut sum = 0u32;
            index.for_each_subscriber(black_box(topic), |c| sum = sum.wrapping_add(c));
            sum
        })
    });
    // The same with a callback the compiler cannot see through (as the shard's is: it indexes
    // the connection table), so the loop cannot be vectorised into a plain sum.
    group.bench_function("index/for_each_subscriber_opaque", |b| {
        b.iter(|| {
            index.for_each_subscriber(black_box(topic), |c| {
                black_box(c);
            })
        })
    });
    group.finish();
}

fn bench_filters(c: &mut Criterion) {
    const SUBS: u32 = 10_000;
    let topic = "bench.t0";
    let limits = FilterLimits {
        bytes_max: 4096,
        depth_max: 4,
        clauses_max: 32,
        in_max: 128,
    };
    // `{"t":<send time>,"pad":"xxx…"}`, about 100 bytes, as tickcast-bench publishes.
    let data = format!(r#"{{"t":1796420232938163000,"pad":"{}"}}"#, "x".repeat(66));
    let mut group = c.benchmark_group("filters_10k");
    group.throughput(Throughput::Elements(SUBS as u64));
    for distinct in [0u32, 10, 1000] {
        let mut index = LocalIndex::default();
        let ids: Vec<u32> = (0..distinct)
            .map(|k| {
                let text = format!(r#"{{"t":{{"exists":true,"gt":-{}}}}}"#, k + 1);
                let f = Filter::parse(text.as_bytes(), &limits).unwrap().unwrap();
                index.intern(&f, 4096).unwrap()
            })
            .collect();
        for conn in 0..SUBS {
            let filter = ids.get((conn % distinct.max(1)) as usize).copied();
            index.subscribe(topic, conn, filter);
        }
        for id in ids {
            index.release_filter(id);
        }
        let mut n = 0;
        let work = index.for_each_receiver(topic, Some(data.as_bytes()), |_| n += 1);
        assert_eq!((n, work.evaluations), (SUBS, distinct as u64));
        group.bench_function(format!("{distinct}_filters"), |b| {
            b.iter(|| {
                index.for_each_receiver(black_box(topic), Some(black_box(data.as_bytes())), |c| {
                    black_box(c);
                })
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_validate,
    bench_exact_100k,
    bench_mixed,
    bench_one_topic,
    bench_filters
);
criterion_main!(benches);
