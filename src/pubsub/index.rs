//! A shard's local subscription index: pattern -> connections of this shard subscribed to it.
//!
//! Built on [`PatternTrie<Subscribers>`](super::trie::PatternTrie), so publishing to a topic
//! finds the matching patterns without scanning all of them, then iterates each pattern's
//! subscriber set.
//!
//! # Invariants
//!
//! - Every pattern stored in the trie has at least one subscriber: the pattern is inserted by
//!   the subscribe that adds its first connection and removed by the unsubscribe that removes its
//!   last. This is what makes [`SubOutcome::Added`]`{ first }` and
//!   [`UnsubOutcome::Removed`]`{ last }` exact, so the runtime can announce and withdraw this
//!   shard's interest in a pattern to the other shards exactly once per transition.
//! - `subscriptions` equals the sum of all subscriber-set sizes, and the trie's `len` equals the
//!   number of patterns, so both counters are O(1).
//!
//! # Cost
//!
//! `subscribe` and `unsubscribe` are O(1) expected, plus O(segments) to find the pattern: a
//! pattern's subscribers are kept inline (linear scan over at most [`INLINE_SUBSCRIBERS`] ids)
//! or, above that, in a boxed `IndexSet<ConnId>` whose `insert` and `swap_remove` are O(1)
//! expected. Iteration order within a pattern is unspecified and changes on removal.
//!
//! # Memory per subscription
//!
//! `size_of::<Subscribers>()` is 24 bytes (asserted in tests). Per (pattern, connection) pair:
//! - pattern shared with at most [`INLINE_SUBSCRIBERS`] connections: 4 bytes, the id in the
//!   inline array;
//! - popular pattern (more subscribers): one `IndexSet` entry, 16 bytes for the entry plus
//!   8 + 1 bytes of hash-index slot, i.e. about 26 bytes at full load and up to about 53 bytes
//!   right after a capacity doubling;
//! - a connection that is a pattern's only subscriber also pays for the pattern itself: an
//!   exact-map slot (16-byte key + 24-byte value + 1 control byte, at 44-88% load) plus the key
//!   string's heap allocation.
//!
//! Measured with a counting global allocator (requested bytes, so allocator rounding is extra;
//! release build; 100,000 subscriptions to 30-byte patterns; throwaway harness outside the
//! crate):
//!
//! | workload                                             | bytes per subscription |
//! |------------------------------------------------------|-----------------------:|
//! | all connections on one exact pattern                 | 30 |
//! | 10 subscriptions per connection over 200 patterns    | 38 |
//! | 3 connections per pattern (inline set)               | 37 |
//! | 8 connections per pattern (small `IndexSet`)         | 59 |
//! | every connection alone on its own exact pattern      | 84 |
//! | every connection alone on its own wildcard pattern   | 182 |
//!
//! The last row pays for two new trie nodes per pattern (`md.binance.S<n>-USDT.*`); wildcard
//! patterns are normally shared, but an adversarial client can make each of its subscriptions
//! cost about that much, so the runtime's per-connection subscription limit should account for
//! it. Unsubscribing everything returned the live heap exactly to its starting value.

use super::trie::PatternTrie;
use indexmap::IndexSet;

/// A shard-local connection id (slab key).
pub type ConnId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOutcome {
    /// Added; `first` when no connection of this shard had this pattern before.
    Added {
        first: bool,
    },
    AlreadySubscribed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubOutcome {
    /// Removed; `last` when no connection of this shard has this pattern any more.
    Removed {
        last: bool,
    },
    NotSubscribed,
}

/// How many subscribers of one pattern are stored inline before switching to a hash set. Five
/// `u32`s plus a length fit in the same 24 bytes the boxed-set variant needs anyway, and most
/// patterns in a fan-out gateway have either very few or very many subscribers.
pub const INLINE_SUBSCRIBERS: usize = 5;

/// A set that went to the heap returns inline once it shrinks to this many ids. Staying on the
/// heap between this and [`INLINE_SUBSCRIBERS`] avoids re-allocating when a pattern's
/// subscriber count oscillates around the inline capacity.
const DEMOTE_AT: usize = 2;

/// The connections subscribed to one pattern. Small sets are inline to keep the common
/// "few subscribers" pattern allocation-free; large sets are an `IndexSet` because it has O(1)
/// `swap_remove` and iterates over a dense vector, which is what fan-out does most.
#[derive(Debug)]
enum Subscribers {
    Inline {
        len: u8,
        ids: [ConnId; INLINE_SUBSCRIBERS],
    },
    Heap(Box<IndexSet<ConnId>>),
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::Inline {
            len: 0,
            ids: [0; INLINE_SUBSCRIBERS],
        }
    }
}

impl Subscribers {
    fn len(&self) -> usize {
        match self {
            Subscribers::Inline { len, .. } => *len as usize,
            Subscribers::Heap(set) => set.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, conn: ConnId) -> bool {
        match self {
            Subscribers::Inline { len, ids } => ids[..*len as usize].contains(&conn),
            Subscribers::Heap(set) => set.contains(&conn),
        }
    }

    /// Adds `conn`; false if it was already there.
    fn insert(&mut self, conn: ConnId) -> bool {
        match self {
            Subscribers::Inline { len, ids } => {
                let n = *len as usize;
                if ids[..n].contains(&conn) {
                    return false;
                }
                if n < INLINE_SUBSCRIBERS {
                    ids[n] = conn;
                    *len += 1;
                } else {
                    let mut set = IndexSet::with_capacity(2 * INLINE_SUBSCRIBERS);
                    set.extend(ids.iter().copied());
                    set.insert(conn);
                    *self = Subscribers::Heap(Box::new(set));
                }
                true
            }
            Subscribers::Heap(set) => set.insert(conn),
        }
    }

    /// Removes `conn`; false if it was not there.
    fn remove(&mut self, conn: ConnId) -> bool {
        match self {
            Subscribers::Inline { len, ids } => {
                let n = *len as usize;
                let Some(pos) = ids[..n].iter().position(|&c| c == conn) else {
                    return false;
                };
                ids[pos] = ids[n - 1];
                *len -= 1;
                true
            }
            Subscribers::Heap(set) => {
                if !set.swap_remove(&conn) {
                    return false;
                }
                if set.len() <= DEMOTE_AT {
                    let mut ids = [0; INLINE_SUBSCRIBERS];
                    for (slot, &c) in ids.iter_mut().zip(set.iter()) {
                        *slot = c;
                    }
                    *self = Subscribers::Inline {
                        len: set.len() as u8,
                        ids,
                    };
                } else if set.len() * 4 < set.capacity() {
                    // Same amortised-O(1) shrink rule as the trie's maps: memory follows the
                    // subscriber count down after a mass unsubscribe.
                    set.shrink_to(set.len() * 2);
                }
                true
            }
        }
    }

    fn for_each(&self, mut f: impl FnMut(ConnId)) {
        match self {
            Subscribers::Inline { len, ids } => ids[..*len as usize].iter().for_each(|&c| f(c)),
            Subscribers::Heap(set) => set.iter().for_each(|&c| f(c)),
        }
    }
}

/// Pattern -> subscribed connections of one shard.
///
/// Patterns must be valid ([`validate_pattern`](super::topic::validate_pattern)) and topics
/// passed to [`for_each_subscriber`](Self::for_each_subscriber) should be valid
/// ([`validate_topic`](super::topic::validate_topic)); the index does not validate again.
#[derive(Debug, Default)]
pub struct LocalIndex {
    trie: PatternTrie<Subscribers>,
    /// Total (pattern, connection) pairs.
    subscriptions: usize,
}

impl LocalIndex {
    /// Subscribes `conn` to `pattern`. O(1) expected plus O(segments) to find the pattern.
    pub fn subscribe(&mut self, pattern: &str, conn: ConnId) -> SubOutcome {
        let subs = self.trie.entry(pattern);
        let first = subs.is_empty();
        if subs.insert(conn) {
            self.subscriptions += 1;
            SubOutcome::Added { first }
        } else {
            SubOutcome::AlreadySubscribed
        }
    }

    /// Unsubscribes `conn` from `pattern`. O(1) expected plus O(segments) to find the pattern;
    /// the pattern (and any trie nodes only it used) is freed when its last subscriber leaves.
    pub fn unsubscribe(&mut self, pattern: &str, conn: ConnId) -> UnsubOutcome {
        let Some(subs) = self.trie.get_mut(pattern) else {
            return UnsubOutcome::NotSubscribed;
        };
        if !subs.remove(conn) {
            return UnsubOutcome::NotSubscribed;
        }
        self.subscriptions -= 1;
        let last = subs.is_empty();
        if last {
            self.trie.remove(pattern);
        }
        UnsubOutcome::Removed { last }
    }

    /// Calls `f` for each connection subscribed to a pattern matching `topic`. A connection with
    /// several matching patterns is passed once per pattern: the caller deduplicates.
    ///
    /// Measured, medians: with 100,000 one-subscriber patterns, 16 ns for an exact hit, 76 ns
    /// (1 subscriber) to 99 ns (4 matching patterns, 25 ns each) with 1,000 of them wildcards;
    /// with 100,000 subscribers on one topic, 25 µs, i.e. 0.25 ns per visited subscriber with an
    /// opaque callback (benches/pubsub.rs, `cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21).
    pub fn for_each_subscriber(&self, topic: &str, mut f: impl FnMut(ConnId)) {
        self.trie
            .for_each_match(topic, |subs| subs.for_each(&mut f));
    }

    /// Whether `conn` is subscribed to exactly `pattern` (not merely to an overlapping one).
    pub fn is_subscribed(&self, pattern: &str, conn: ConnId) -> bool {
        self.trie
            .get(pattern)
            .is_some_and(|subs| subs.contains(conn))
    }

    /// Calls `f` for each connection subscribed to exactly `pattern` (admin queries).
    pub fn for_each_exact(&self, pattern: &str, mut f: impl FnMut(ConnId)) {
        if let Some(subs) = self.trie.get(pattern) {
            subs.for_each(&mut f);
        }
    }

    /// Number of connections subscribed to exactly `pattern`; 0 if none.
    pub fn subscriber_count(&self, pattern: &str) -> usize {
        self.trie.get(pattern).map_or(0, Subscribers::len)
    }

    /// Calls `f(pattern, subscriber_count)` for every pattern with at least one subscriber, in
    /// unspecified order. For rare whole-table work such as re-announcing this shard's interest
    /// to other shards; not for the publish path.
    pub fn for_each_pattern(&self, mut f: impl FnMut(&str, usize)) {
        self.trie.for_each(|pattern, subs| f(pattern, subs.len()));
    }

    /// Distinct patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.trie.len()
    }

    /// Total (pattern, connection) pairs.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn subscribers(ix: &LocalIndex, topic: &str) -> Vec<ConnId> {
        let mut out = Vec::new();
        ix.for_each_subscriber(topic, |c| out.push(c));
        out.sort_unstable();
        out
    }

    #[test]
    fn subscribers_stay_small() {
        assert_eq!(std::mem::size_of::<Subscribers>(), 24);
    }

    #[test]
    fn first_and_last_outcomes() {
        let mut ix = LocalIndex::default();
        assert_eq!(ix.subscribe("a.b", 1), SubOutcome::Added { first: true });
        assert_eq!(ix.subscribe("a.b", 2), SubOutcome::Added { first: false });
        assert_eq!(ix.subscribe("a.b", 1), SubOutcome::AlreadySubscribed);
        assert_eq!(ix.subscribe("a.*", 1), SubOutcome::Added { first: true });
        assert_eq!((ix.pattern_count(), ix.subscription_count()), (2, 3));
        assert!(ix.is_subscribed("a.b", 2));
        assert!(!ix.is_subscribed("a.*", 2));
        assert_eq!(ix.subscriber_count("a.b"), 2);
        assert_eq!(ix.subscriber_count("zz"), 0);

        assert_eq!(subscribers(&ix, "a.b"), [1, 1, 2]);
        assert_eq!(subscribers(&ix, "a.c"), [1]);
        assert_eq!(subscribers(&ix, "a"), Vec::<ConnId>::new());

        assert_eq!(ix.unsubscribe("a.b", 3), UnsubOutcome::NotSubscribed);
        assert_eq!(ix.unsubscribe("x.y", 1), UnsubOutcome::NotSubscribed);
        assert_eq!(
            ix.unsubscribe("a.b", 1),
            UnsubOutcome::Removed { last: false }
        );
        assert_eq!(ix.unsubscribe("a.b", 1), UnsubOutcome::NotSubscribed);
        assert_eq!(
            ix.unsubscribe("a.b", 2),
            UnsubOutcome::Removed { last: true }
        );
        assert_eq!(
            ix.unsubscribe("a.*", 1),
            UnsubOutcome::Removed { last: true }
        );
        assert_eq!((ix.pattern_count(), ix.subscription_count()), (0, 0));
        assert!(ix.trie.is_empty());
        assert_eq!(ix.trie.node_count(), 0);
    }

    #[test]
    fn many_subscribers_promote_and_demote() {
        let mut ix = LocalIndex::default();
        let n = 1000;
        for c in 0..n {
            assert_eq!(
                ix.subscribe("md.x.BTC", c),
                SubOutcome::Added { first: c == 0 }
            );
        }
        assert_eq!(subscribers(&ix, "md.x.BTC"), (0..n).collect::<Vec<_>>());
        for c in (0..n).rev().filter(|c| c % 3 == 0) {
            assert_eq!(
                ix.unsubscribe("md.x.BTC", c),
                UnsubOutcome::Removed { last: false }
            );
        }
        let left: Vec<ConnId> = (0..n).filter(|c| c % 3 != 0).collect();
        assert_eq!(subscribers(&ix, "md.x.BTC"), left);
        assert_eq!(ix.subscription_count(), left.len());
        for (i, &c) in left.iter().enumerate() {
            let last = i + 1 == left.len();
            assert_eq!(
                ix.unsubscribe("md.x.BTC", c),
                UnsubOutcome::Removed { last }
            );
            let mut want = left[i + 1..].to_vec();
            want.sort_unstable();
            if want.len() < 10 {
                // Checked near the end only, where the set demotes back inline.
                assert_eq!(subscribers(&ix, "md.x.BTC"), want);
            }
        }
        assert_eq!(ix.pattern_count(), 0);
    }

    #[test]
    fn heap_set_shrinks_after_mass_unsubscribe() {
        let mut s = Subscribers::default();
        for c in 0..10_000 {
            assert!(s.insert(c));
        }
        for c in 0..9_990 {
            assert!(s.remove(c));
        }
        let Subscribers::Heap(set) = &s else {
            panic!("10 ids must stay on the heap")
        };
        assert!(set.capacity() < 64, "capacity {}", set.capacity());
        for c in 9_990..9_997 {
            assert!(matches!(s, Subscribers::Heap(_)), "above DEMOTE_AT");
            assert!(s.remove(c));
        }
        assert!(
            matches!(s, Subscribers::Heap(_)),
            "3 ids are above DEMOTE_AT"
        );
        assert!(s.remove(9_997));
        assert!(matches!(s, Subscribers::Inline { len: 2, .. }));
        let mut left = Vec::new();
        s.for_each(|c| left.push(c));
        left.sort_unstable();
        assert_eq!(left, [9_998, 9_999]);
    }

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        Sub(usize, ConnId),
        Unsub(usize, ConnId),
    }

    /// Few patterns (overlapping on purpose) and few connections so operations collide.
    const PATTERNS: &[&str] = &[
        "a", "a.b", "a.*", "a.>", ">", "*.b", "b.c", "*.*.c", "a.b.c",
    ];
    const TOPICS: &[&str] = &[
        "a", "b", "a.b", "a.c", "b.b", "b.c", "a.b.c", "x.y.c", "a.b.c.d",
    ];

    fn op() -> impl Strategy<Value = Op> {
        // Up to 8 connections so a pattern's set crosses the inline limit in both directions.
        let conn = 0..8u32;
        prop_oneof![
            3 => (0..PATTERNS.len(), conn.clone()).prop_map(|(p, c)| Op::Sub(p, c)),
            2 => (0..PATTERNS.len(), conn).prop_map(|(p, c)| Op::Unsub(p, c)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn index_agrees_with_model(ops in prop::collection::vec(op(), 0..200)) {
            let mut ix = LocalIndex::default();
            let mut model: HashMap<&str, HashSet<ConnId>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Sub(p, c) => {
                        let pattern = PATTERNS[p];
                        let set = model.entry(pattern).or_default();
                        let want = if set.contains(&c) {
                            SubOutcome::AlreadySubscribed
                        } else {
                            let first = set.is_empty();
                            set.insert(c);
                            SubOutcome::Added { first }
                        };
                        prop_assert_eq!(ix.subscribe(pattern, c), want);
                    }
                    Op::Unsub(p, c) => {
                        let pattern = PATTERNS[p];
                        let removed = model.get_mut(pattern).is_some_and(|set| set.remove(&c));
                        let want = if removed {
                            let last = model[pattern].is_empty();
                            if last {
                                model.remove(pattern);
                            }
                            UnsubOutcome::Removed { last }
                        } else {
                            UnsubOutcome::NotSubscribed
                        };
                        prop_assert_eq!(ix.unsubscribe(pattern, c), want);
                    }
                }
                prop_assert_eq!(ix.pattern_count(), model.len());
                prop_assert_eq!(
                    ix.subscription_count(),
                    model.values().map(HashSet::len).sum::<usize>()
                );
            }
            for topic in TOPICS {
                let mut want: Vec<ConnId> = model
                    .iter()
                    .filter(|(p, _)| crate::pubsub::topic::matches(p, topic))
                    .flat_map(|(_, set)| set.iter().copied())
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(subscribers(&ix, topic), want, "topic {}", topic);
            }
            let mut listed = Vec::new();
            ix.for_each_pattern(|p, n| listed.push((p.to_string(), n)));
            listed.sort();
            let mut want: Vec<(String, usize)> =
                model.iter().map(|(p, s)| (p.to_string(), s.len())).collect();
            want.sort();
            prop_assert_eq!(listed, want);

            // Drain through the public API and check nothing is left behind.
            for (pattern, set) in &model {
                for (i, &c) in set.iter().enumerate() {
                    let last = i + 1 == set.len();
                    prop_assert_eq!(ix.unsubscribe(pattern, c), UnsubOutcome::Removed { last });
                }
            }
            prop_assert_eq!(ix.pattern_count(), 0);
            prop_assert_eq!(ix.subscription_count(), 0);
            prop_assert!(ix.trie.is_empty());
            prop_assert_eq!(ix.trie.node_count(), 0);
            prop_assert_eq!(ix.trie.map_capacity(), 0);
        }
    }
}
