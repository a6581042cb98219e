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
//!
//! # Filters
//!
//! A pattern none of whose subscribers has a filter is stored, walked and counted exactly as
//! above (`Subscribers::Plain`: the same 24 bytes, one more match arm per matched pattern). The
//! first filtered subscriber turns it into `Subscribers::Filtered` (`index/subscribers.rs`):
//! one boxed `IndexMap` of every subscriber, in the plain set's order, to its filter. An entry
//! is 16 bytes plus its hash slot, as in a plain set; the filter itself is held once per
//! shard, whoever uses it (`filter::FilterTable`). The fan-out
//! ([`LocalIndex::for_each_receiver`]) keeps the subscribers' order and asks for a filtered
//! subscriber's verdict, which the message's judge evaluates once per filter and then
//! remembers: visiting the subscribers filter by filter instead cost about 25 % more CPU per
//! delivery (`index/subscribers.rs`).

mod subscribers;

pub use subscribers::INLINE_SUBSCRIBERS;
use subscribers::{Placed, Subscribers};

use super::{
    filter::{Filter, FilterId, FilterTable, TableFull},
    trie::PatternTrie,
};

/// A shard-local connection id (slab key).
pub type ConnId = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOutcome {
    /// Added; `first` when no connection of this shard had this pattern before.
    Added { first: bool },
    /// Already subscribed with the same filter (or, as asked, without one).
    AlreadySubscribed,
    /// Already subscribed; its filter was replaced (or added, or removed).
    Refiltered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsubOutcome {
    /// Removed; `last` when no connection of this shard has this pattern any more.
    Removed {
        last: bool,
    },
    NotSubscribed,
}

/// What filters did for one message on this shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterWork {
    /// Distinct filters evaluated (each at most once per message).
    pub evaluations: u64,
    /// Times the message's data was parsed for them (0 or 1).
    pub parses: u64,
    /// (subscription, message) pairs a filter turned away.
    pub skipped: u64,
}

/// Pattern -> subscribed connections of one shard, and the filters they subscribed with.
///
/// Patterns must be valid ([`validate_pattern`](super::topic::validate_pattern)) and topics
/// passed to [`for_each_subscriber`](Self::for_each_subscriber) should be valid
/// ([`validate_topic`](super::topic::validate_topic)); the index does not validate again.
///
/// Filters: a subscription may hold a filter of the index's [`FilterTable`]. The table counts
/// one reference per subscription holding a filter, plus one per [`intern`](Self::intern)
/// until its [`release_filter`](Self::release_filter): a subscribe interns its filter, subscribes
/// its patterns with it, then releases its own reference, and a filter lives exactly as long
/// as a subscription holds it.
#[derive(Debug, Default)]
pub struct LocalIndex {
    trie: PatternTrie<Subscribers>,
    /// Total (pattern, connection) pairs.
    subscriptions: usize,
    filters: FilterTable,
}

impl LocalIndex {
    /// Subscribes `conn` to `pattern` with `filter` (an id from [`intern`](Self::intern), or
    /// none), replacing the filter an earlier subscription to `pattern` had. O(1) expected
    /// plus O(segments) to find the pattern.
    pub fn subscribe(
        &mut self,
        pattern: &str,
        conn: ConnId,
        filter: Option<FilterId>,
    ) -> SubOutcome {
        let subs = self.trie.entry(pattern);
        let first = subs.is_empty();
        let placed = subs.insert(conn, filter);
        if placed != Placed::Same {
            if let Some(id) = filter {
                self.filters.retain(id);
            }
        }
        match placed {
            Placed::Added => {
                self.subscriptions += 1;
                SubOutcome::Added { first }
            }
            Placed::Same => SubOutcome::AlreadySubscribed,
            Placed::Moved { from } => {
                if let Some(old) = from {
                    self.filters.release(old);
                }
                SubOutcome::Refiltered
            }
        }
    }

    /// Unsubscribes `conn` from `pattern`, releasing its filter. O(1) expected plus
    /// O(segments) to find the pattern; the pattern (and any trie nodes only it used) is freed
    /// when its last subscriber leaves.
    pub fn unsubscribe(&mut self, pattern: &str, conn: ConnId) -> UnsubOutcome {
        let Some(subs) = self.trie.get_mut(pattern) else {
            return UnsubOutcome::NotSubscribed;
        };
        let Some(filter) = subs.remove(conn) else {
            return UnsubOutcome::NotSubscribed;
        };
        self.subscriptions -= 1;
        let last = subs.is_empty();
        if last {
            self.trie.remove(pattern);
        }
        if let Some(id) = filter {
            self.filters.release(id);
        }
        UnsubOutcome::Removed { last }
    }

    /// The id of `filter` in this shard's table, with a reference for the caller (give it
    /// back with [`release_filter`](Self::release_filter)); refused when it is new and `max`
    /// distinct filters are held.
    pub fn intern(&mut self, filter: &Filter, max: usize) -> Result<FilterId, TableFull> {
        self.filters.intern(filter, max)
    }

    /// Gives back the reference [`intern`](Self::intern) took.
    pub fn release_filter(&mut self, id: FilterId) {
        self.filters.release(id);
    }

    /// Distinct filters held by this shard's subscriptions (and subscribes under way).
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    /// The filter of `conn`'s subscription to exactly `pattern`, if it has one.
    pub fn filter_of(&self, pattern: &str, conn: ConnId) -> Option<&Filter> {
        let id = self.trie.get(pattern)?.filter_of(conn)??;
        self.filters.get(id)
    }

    /// Calls `f` for each connection subscribed to a pattern matching `topic`. A connection with
    /// several matching patterns is passed once per pattern: the caller deduplicates. Filters
    /// are not looked at (admin queries).
    ///
    /// Measured, medians: with 100,000 one-subscriber patterns, 16 ns for an exact hit, 76 ns
    /// (1 subscriber) to 99 ns (4 matching patterns, 25 ns each) with 1,000 of them wildcards;
    /// with 100,000 subscribers on one topic, 25 µs, i.e. 0.25 ns per visited subscriber with an
    /// opaque callback (benches/pubsub.rs, `cargo bench --bench pubsub`, shared 2-core VM, 2026-11-21).
    pub fn for_each_subscriber(&self, topic: &str, mut f: impl FnMut(ConnId)) {
        self.trie
            .for_each_match(topic, |subs| subs.for_each(&mut f));
    }

    /// The fan-out's walk: calls `f` for each connection whose subscription to a pattern
    /// matching `topic` takes a message with this `data` (once per such pattern: the caller
    /// deduplicates). A subscription without a filter takes every message; one with a filter
    /// takes those its filter passes, each distinct filter evaluated at most once and the data
    /// parsed at most once, only if a filter is evaluated. `data: None` (a control event of the
    /// topic) goes to every subscriber. With no filter held on the shard this is
    /// [`for_each_subscriber`](Self::for_each_subscriber).
    pub fn for_each_receiver(
        &mut self,
        topic: &str,
        data: Option<&[u8]>,
        mut f: impl FnMut(ConnId),
    ) -> FilterWork {
        let LocalIndex { trie, filters, .. } = self;
        let data = match data {
            Some(data) if !filters.is_empty() => data,
            _ => {
                trie.for_each_match(topic, |subs| subs.for_each(&mut f));
                return FilterWork::default();
            }
        };
        let mut judge = filters.judge(data);
        let mut skipped = 0;
        trie.for_each_match(topic, |subs| {
            skipped += subs.for_each_admitted(&mut |id| judge.passes(id), &mut f);
        });
        FilterWork {
            evaluations: judge.evaluations,
            parses: judge.parses,
            skipped: skipped as u64,
        }
    }

    /// Whether `conn` takes a message of `topic` with `data` through its subscriptions (a
    /// replayed frame): false only when every subscription of `conn` matching `topic` has a
    /// filter and none passes (a connection with no such subscription is not this index's to
    /// refuse).
    pub fn admits(&mut self, topic: &str, conn: ConnId, data: &[u8]) -> bool {
        let LocalIndex { trie, filters, .. } = self;
        let mut judge = filters.judge(data);
        let (mut subscribed, mut admitted) = (false, false);
        trie.for_each_match(topic, |subs| {
            if admitted {
                return;
            }
            match subs.filter_of(conn) {
                None => {}
                Some(None) => admitted = true,
                Some(Some(id)) => {
                    subscribed = true;
                    admitted = judge.passes(id);
                }
            }
        });
        admitted || !subscribed
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
    fn first_and_last_outcomes() {
        let mut ix = LocalIndex::default();
        assert_eq!(
            ix.subscribe("a.b", 1, None),
            SubOutcome::Added { first: true }
        );
        assert_eq!(
            ix.subscribe("a.b", 2, None),
            SubOutcome::Added { first: false }
        );
        assert_eq!(ix.subscribe("a.b", 1, None), SubOutcome::AlreadySubscribed);
        assert_eq!(
            ix.subscribe("a.*", 1, None),
            SubOutcome::Added { first: true }
        );
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
                ix.subscribe("md.x.BTC", c, None),
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
    fn filtered_subscriptions_take_what_their_filter_passes() {
        let mut ix = LocalIndex::default();
        let mom = Filter::parse(br#"{"s":"mom"}"#, &WIDE).unwrap().unwrap();
        let arb = Filter::parse(br#"{"s":{"in":["arb"]}}"#, &WIDE)
            .unwrap()
            .unwrap();
        let m = ix.intern(&mom, 10).unwrap();
        let a = ix.intern(&arb, 10).unwrap();
        for (pattern, conn, filter, first) in [
            ("sig.>", 1, Some(m), true),
            ("sig.>", 2, Some(m), false),
            ("sig.>", 3, Some(a), false),
            ("sig.>", 4, None, false),
            ("sig.x", 3, None, true),
        ] {
            let outcome = ix.subscribe(pattern, conn, filter);
            assert_eq!(outcome, SubOutcome::Added { first }, "{pattern} {conn}");
        }
        ix.release_filter(m);
        ix.release_filter(a);
        assert_eq!(ix.filter_count(), 2);
        let deliver = |ix: &mut LocalIndex, data: &[u8]| {
            let mut got = Vec::new();
            let work = ix.for_each_receiver("sig.x", Some(data), |c| got.push(c));
            got.sort_unstable();
            (got, work)
        };
        let (got, work) = deliver(&mut ix, br#"{"s":"mom"}"#);
        assert_eq!(got, [1, 2, 3, 4], "3 through sig.x");
        assert_eq!(
            work,
            FilterWork {
                evaluations: 2,
                parses: 1,
                skipped: 1
            }
        );
        let (got, _) = deliver(&mut ix, br#"{"s":"arb"}"#);
        assert_eq!(got, [3, 3, 4]);
        // A control event goes to everyone.
        let mut all = Vec::new();
        let work = ix.for_each_receiver("sig.x", None, |c| all.push(c));
        assert_eq!((all.len(), work), (5, FilterWork::default()));
        // Replays: 1 is turned away from what its filter refuses; 3 takes everything through
        // sig.x; 9 is no subscriber here.
        assert!(ix.admits("sig.x", 1, br#"{"s":"mom"}"#));
        assert!(!ix.admits("sig.x", 1, br#"{"s":"arb"}"#));
        assert!(ix.admits("sig.x", 3, br#"{"s":"zzz"}"#));
        assert!(ix.admits("sig.x", 9, br#"{"s":"zzz"}"#));
        // Replace, then unsubscribe: filters leave with their last holder.
        assert_eq!(ix.filter_of("sig.>", 3), Some(&arb));
        let m = ix.intern(&mom, 10).unwrap();
        assert_eq!(ix.subscribe("sig.>", 3, Some(m)), SubOutcome::Refiltered);
        ix.release_filter(m);
        assert_eq!(ix.filter_count(), 1, "arb had no other holder");
        assert_eq!(ix.subscribe("sig.>", 1, None), SubOutcome::Refiltered);
        assert_eq!(ix.filter_of("sig.>", 1), None);
        for c in [2, 3] {
            assert_eq!(
                ix.unsubscribe("sig.>", c),
                UnsubOutcome::Removed { last: false }
            );
        }
        assert_eq!(ix.filter_count(), 0);
        // No filter held: no parse, nothing counted.
        let (got, work) = deliver(&mut ix, br#"{"s":"mom"}"#);
        assert_eq!((got, work), (vec![1, 3, 4], FilterWork::default()));
    }

    #[test]
    fn a_new_filter_is_refused_when_the_table_is_full() {
        let mut ix = LocalIndex::default();
        let f = |t: &str| Filter::parse(t.as_bytes(), &WIDE).unwrap().unwrap();
        let a = ix.intern(&f(r#"{"a":1}"#), 1).unwrap();
        assert_eq!(ix.intern(&f(r#"{"b":1}"#), 1), Err(TableFull));
        assert_eq!(ix.intern(&f(r#"{"a":1.0}"#), 1), Ok(a));
        ix.release_filter(a);
        ix.release_filter(a);
        assert_eq!(ix.filter_count(), 0);
        assert!(ix.intern(&f(r#"{"b":1}"#), 1).is_ok());
    }

    const WIDE: crate::pubsub::filter::FilterLimits = crate::pubsub::filter::FilterLimits {
        bytes_max: 4096,
        depth_max: 4,
        clauses_max: 16,
        in_max: 16,
    };

    /// One step of the model-based test.
    #[derive(Debug, Clone)]
    enum Op {
        Sub(usize, ConnId, Option<usize>),
        Unsub(usize, ConnId),
    }

    /// Few patterns (overlapping on purpose) and few connections so operations collide.
    const PATTERNS: &[&str] = &[
        "a", "a.b", "a.*", "a.>", ">", "*.b", "b.c", "*.*.c", "a.b.c",
    ];
    const TOPICS: &[&str] = &[
        "a", "b", "a.b", "a.c", "b.b", "b.c", "a.b.c", "x.y.c", "a.b.c.d",
    ];
    const FILTERS: &[&str] = &[
        r#"{"k":1}"#,
        r#"{"k":{"gt":1}}"#,
        r#"{"k":{"exists":false}}"#,
    ];
    const DATA: &[&str] = &[r#"{"k":1}"#, r#"{"k":2}"#, "{}"];

    fn op() -> impl Strategy<Value = Op> {
        // Up to 8 connections so a pattern's set crosses the inline limit in both directions.
        let conn = 0..8u32;
        let filter = prop::option::of(0..FILTERS.len());
        prop_oneof![
            3 => (0..PATTERNS.len(), conn.clone(), filter).prop_map(|(p, c, f)| Op::Sub(p, c, f)),
            2 => (0..PATTERNS.len(), conn).prop_map(|(p, c)| Op::Unsub(p, c)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn index_agrees_with_model(ops in prop::collection::vec(op(), 0..200)) {
            let filters: Vec<Filter> = FILTERS
                .iter()
                .map(|t| Filter::parse(t.as_bytes(), &WIDE).unwrap().unwrap())
                .collect();
            let mut ix = LocalIndex::default();
            // pattern -> connection -> its filter (index in FILTERS)
            let mut model: HashMap<&str, HashMap<ConnId, Option<usize>>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Sub(p, c, f) => {
                        let pattern = PATTERNS[p];
                        let subs = model.entry(pattern).or_default();
                        let want = match subs.get(&c) {
                            Some(had) if *had == f => SubOutcome::AlreadySubscribed,
                            Some(_) => SubOutcome::Refiltered,
                            None => SubOutcome::Added { first: subs.is_empty() },
                        };
                        subs.insert(c, f);
                        let id = f.map(|f| ix.intern(&filters[f], 100).unwrap());
                        prop_assert_eq!(ix.subscribe(pattern, c, id), want);
                        if let Some(id) = id {
                            ix.release_filter(id);
                        }
                    }
                    Op::Unsub(p, c) => {
                        let pattern = PATTERNS[p];
                        let removed = model
                            .get_mut(pattern)
                            .is_some_and(|subs| subs.remove(&c).is_some());
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
                    model.values().map(HashMap::len).sum::<usize>()
                );
                let held: HashSet<usize> =
                    model.values().flat_map(|s| s.values().flatten().copied()).collect();
                prop_assert_eq!(ix.filter_count(), held.len());
            }
            for topic in TOPICS {
                let matching = || {
                    model
                        .iter()
                        .filter(|(p, _)| crate::pubsub::topic::matches(p, topic))
                        .flat_map(|(_, subs)| subs.iter())
                };
                let mut want: Vec<ConnId> = matching().map(|(c, _)| *c).collect();
                want.sort_unstable();
                prop_assert_eq!(subscribers(&ix, topic), want, "topic {}", topic);
                for data in DATA {
                    let passes = |f: &Option<usize>| {
                        f.is_none_or(|f| filters[f].matches(data.as_bytes()))
                    };
                    let mut want: Vec<ConnId> =
                        matching().filter(|(_, f)| passes(f)).map(|(c, _)| *c).collect();
                    want.sort_unstable();
                    let mut got = Vec::new();
                    let work = ix.for_each_receiver(topic, Some(data.as_bytes()), |c| got.push(c));
                    got.sort_unstable();
                    prop_assert_eq!(&got, &want, "topic {} data {}", topic, data);
                    let distinct: HashSet<usize> = matching().filter_map(|(_, f)| *f).collect();
                    prop_assert!(work.evaluations as usize <= distinct.len());
                    prop_assert_eq!(work.parses, u64::from(work.evaluations > 0));
                    prop_assert_eq!(
                        work.skipped as usize,
                        matching().filter(|(_, f)| !passes(f)).count()
                    );
                    for c in 0..8 {
                        let mine: Vec<&Option<usize>> =
                            matching().filter(|(k, _)| **k == c).map(|(_, f)| f).collect();
                        let want = mine.is_empty() || mine.iter().any(|f| passes(f));
                        prop_assert_eq!(ix.admits(topic, c, data.as_bytes()), want);
                    }
                }
            }
            let mut listed = Vec::new();
            ix.for_each_pattern(|p, n| listed.push((p.to_string(), n)));
            listed.sort();
            let mut want: Vec<(String, usize)> =
                model.iter().map(|(p, s)| (p.to_string(), s.len())).collect();
            want.sort();
            prop_assert_eq!(listed, want);

            // Drain through the public API and check nothing is left behind.
            for (pattern, subs) in &model {
                for (i, &c) in subs.keys().enumerate() {
                    let last = i + 1 == subs.len();
                    prop_assert_eq!(ix.unsubscribe(pattern, c), UnsubOutcome::Removed { last });
                }
            }
            prop_assert_eq!(ix.pattern_count(), 0);
            prop_assert_eq!(ix.subscription_count(), 0);
            prop_assert_eq!(ix.filter_count(), 0);
            prop_assert!(ix.trie.is_empty());
            prop_assert_eq!(ix.trie.node_count(), 0);
            prop_assert_eq!(ix.trie.map_capacity(), 0);
        }
    }
}
