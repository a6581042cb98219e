//! Tests for the pattern trie: wildcard semantics, pruning, a property test against
//! [`matches`](crate::pubsub::topic::matches), and an `#[ignore]`d timing harness.

use super::*;
use crate::pubsub::topic::{matches, validate_pattern};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Patterns whose values match `topic`, as a sorted set (values are the pattern strings).
fn matched(trie: &PatternTrie<String>, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |v| out.push(v.clone()));
    out.sort();
    out
}

fn trie_of(patterns: &[&str]) -> PatternTrie<String> {
    let mut t = PatternTrie::default();
    for p in patterns {
        *t.entry(p) = p.to_string();
    }
    t
}

#[test]
fn empty_trie_matches_nothing() {
    let t = PatternTrie::<String>::default();
    assert!(t.is_empty());
    assert_eq!(matched(&t, "a.b"), Vec::<String>::new());
    assert_eq!(t.get("a"), None);
    assert_eq!(t.get("a.*"), None);
}

#[test]
fn wildcard_semantics() {
    let t = trie_of(&["a.*", "a.>", ">", "*.*", "*", "a.b", "a", "a.*.c", "*.b.>"]);
    assert_eq!(t.len(), 9);
    assert_eq!(matched(&t, "a"), ["*", ">", "a"]);
    assert_eq!(matched(&t, "a.b"), ["*.*", ">", "a.*", "a.>", "a.b"]);
    assert_eq!(matched(&t, "a.b.c"), ["*.b.>", ">", "a.*.c", "a.>"]);
    assert_eq!(matched(&t, "x.y"), ["*.*", ">"]);
    assert_eq!(matched(&t, "x.b.y.z"), ["*.b.>", ">"]);
    assert_eq!(matched(&t, "x"), ["*", ">"]);
}

#[test]
fn entry_get_get_mut_remove() {
    let mut t = PatternTrie::<u32>::default();
    for (i, p) in ["a.b", "a.*", "a.>", ">", "*", "a.*.>"].iter().enumerate() {
        assert_eq!(t.get(p), None);
        *t.entry(p) += i as u32 + 1;
        *t.entry(p) += 100;
        assert_eq!(t.get(p), Some(&(i as u32 + 101)));
    }
    assert_eq!(t.len(), 6);
    *t.get_mut("a.*").unwrap() = 7;
    assert_eq!(t.get("a.*"), Some(&7));
    assert_eq!(t.get_mut("b.*"), None);
    assert_eq!(t.get("a"), None);
    assert_eq!(t.get("a.*.*"), None);
    assert_eq!(t.remove("a.*"), Some(7));
    assert_eq!(t.remove("a.*"), None);
    // `a.*.>` lives below the `a.*` node, which must survive the removal above.
    assert_eq!(t.get("a.*.>"), Some(&106));
    assert_eq!(t.remove("nope"), None);
    assert_eq!(t.remove("nope.*"), None);
    assert_eq!(t.len(), 5);
    for p in ["a.b", "a.>", ">", "*", "a.*.>"] {
        assert!(t.remove(p).is_some(), "{p}");
    }
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
    assert_eq!(t.map_capacity(), 0);
}

#[test]
fn pruning_keeps_shared_prefixes() {
    let mut t = trie_of(&["a.b.*", "a.b.c.*", "a.*.c"]);
    // Nodes: a, a.b, a.b.*, a.b.c, a.b.c.*, a.*, a.*.c
    assert_eq!(t.node_count(), 7);
    t.remove("a.b.c.*");
    assert_eq!(t.node_count(), 5);
    t.remove("a.b.*");
    assert_eq!(t.node_count(), 3);
    assert_eq!(matched(&t, "a.x.c"), ["a.*.c"]);
    t.remove("a.*.c");
    assert_eq!(t.node_count(), 0);
}

#[test]
fn invalid_input_to_lookups_does_not_panic() {
    let t = trie_of(&["a.*", ">", "a.b"]);
    for s in [
        "",
        ".",
        "..",
        "a..",
        ".a",
        "a.>.b",
        "*",
        ">",
        "a.*",
        &"x.".repeat(1000),
    ] {
        let _ = matched(&t, s);
        let _ = t.get(s);
    }
    let mut t = t;
    for s in ["", ".", "a..*", "a.>.*", "*.*.*"] {
        assert_eq!(t.remove(s), None);
    }
    assert_eq!(t.len(), 3);
}

#[test]
fn for_each_enumerates_every_pattern_once() {
    let ps = [
        "a.b", "a", ">", "*", "a.*", "a.>", "*.b.>", "a.*.c", "x.y.z",
    ];
    let t = trie_of(&ps);
    let mut seen = Vec::new();
    t.for_each(|p, v| {
        assert_eq!(p, v);
        seen.push(p.to_string());
    });
    seen.sort();
    let mut want: Vec<String> = ps.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
}

/// Segments over a tiny alphabet so random patterns and topics collide often.
fn segment() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c")]
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..=5).prop_map(|s| s.join("."))
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![3 => segment(), 2 => Just("*")];
    (prop::collection::vec(seg, 1..=4), any::<bool>()).prop_map(|(mut segs, gt)| {
        if gt {
            *segs.last_mut().unwrap() = ">";
        }
        segs.join(".")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn for_each_match_agrees_with_reference(
        patterns in prop::collection::btree_set(pattern_strategy(), 0..24),
        topics in prop::collection::vec(topic_strategy(), 1..16),
        removals in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut live: BTreeSet<String> = patterns.clone();
        let mut t = PatternTrie::default();
        for p in &patterns {
            prop_assert!(validate_pattern(p).is_ok());
            *t.entry(p) = p.clone();
        }
        let all: Vec<&String> = patterns.iter().collect();
        if !all.is_empty() {
            for i in &removals {
                let p = all[i.index(all.len())];
                prop_assert_eq!(t.remove(p).is_some(), live.remove(p));
            }
        }
        prop_assert_eq!(t.len(), live.len());
        for topic in &topics {
            let want: Vec<String> =
                live.iter().filter(|p| matches(p, topic)).cloned().collect();
            // `matched` sorts but does not dedup, so a pattern visited twice would show.
            prop_assert_eq!(matched(&t, topic), want, "topic {}", topic);
        }
        for p in &live {
            prop_assert_eq!(t.get(p), Some(p));
        }
        for p in &live {
            prop_assert_eq!(t.remove(p), Some(p.clone()));
        }
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.node_count(), 0);
        prop_assert_eq!(t.map_capacity(), 0);
    }
}

/// Rough ns-per-publish numbers for the perf team; run with
/// `cargo test --release --lib pubsub::trie::tests::timing -- --ignored --nocapture`.
/// Debug builds give meaningless numbers, so this is not part of the normal suite.
#[test]
#[ignore]
fn timing_for_each_match() {
    use std::hint::black_box;
    use std::time::Instant;

    let venues = ["binance", "okx", "bybit", "coinbase"];
    let channels = ["trades", "book", "ticker"];
    let mut t = PatternTrie::<u32>::default();
    let mut topics = Vec::new();
    for v in venues {
        for s in 0..500 {
            for c in channels {
                let topic = format!("md.{v}.SYM{s}-USDT.{c}");
                *t.entry(&topic) += 1;
                topics.push(topic);
            }
        }
    }
    let run = |t: &PatternTrie<u32>, label: &str| {
        let iters = 2_000_000usize;
        let start = Instant::now();
        let mut hits = 0u64;
        for i in 0..iters {
            t.for_each_match(black_box(&topics[i % topics.len()]), |v| hits += *v as u64);
        }
        let ns = start.elapsed().as_nanos() as f64 / iters as f64;
        println!(
            "{label}: {} patterns, {ns:.1} ns/match ({hits} hits)",
            t.len()
        );
    };
    run(&t, "exact only");
    for v in venues {
        *t.entry(&format!("md.{v}.*.trades")) += 1;
        *t.entry(&format!("md.{v}.>")) += 1;
    }
    *t.entry("md.*.SYM7-USDT.*") += 1;
    run(&t, "exact + 9 wildcard");
}
