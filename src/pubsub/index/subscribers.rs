//! The connections subscribed to one pattern: a plain [`Set`], or, once one of them has a
//! filter, every subscriber with its filter ([`Subscribers::Filtered`]), in the order the plain
//! set kept them.
//!
//! Order matters more than it seems: the fan-out queues a frame for the subscribers in this
//! order, and the flusher writes them in it. Connections subscribe roughly in the order they
//! were accepted, so that is close to the order of their slab entries and kernel sockets, and
//! writes that follow it are cheaper. Grouping a pattern's subscribers by filter (a set per
//! filter, skipped whole when it fails: the first design) wrote 10,000 connections filter by
//! filter, i.e. strided over the slab, and cost about 25 % more CPU per delivery than without
//! filters, while the same filters given to consecutive connections cost nothing measurable
//! (perf/README.md, "2026-12-05: subscription filters"). So the filter is a per-subscriber
//! field, and a failing filter's subscribers are each skipped with one look at the message's
//! verdict for it (`filter::Judge`: evaluated once, remembered for the message).
//!
//! Invariants: a connection is in a pattern's subscribers at most once; a `Filtered` holds at
//! least one connection with a filter (`filtered` counts them; with the last one it becomes
//! `Plain` again, in the same order).

use indexmap::{IndexMap, IndexSet};

use super::ConnId;
use crate::pubsub::filter::FilterId;

/// How many subscribers of one pattern are stored inline before switching to a hash set. Five
/// `u32`s plus a length fit in the same 24 bytes the boxed-set variant needs anyway, and most
/// patterns in a fan-out gateway have either very few or very many subscribers.
pub const INLINE_SUBSCRIBERS: usize = 5;

/// A set that went to the heap returns inline once it shrinks to this many ids. Staying on the
/// heap between this and [`INLINE_SUBSCRIBERS`] avoids re-allocating when a pattern's
/// subscriber count oscillates around the inline capacity.
const DEMOTE_AT: usize = 2;

/// A set of connections. Small sets are inline to keep the common "few subscribers" pattern
/// allocation-free; large sets are an `IndexSet` because it has O(1) `swap_remove` and
/// iterates over a dense vector, which is what fan-out does most.
#[derive(Debug)]
pub(super) enum Set {
    Inline {
        len: u8,
        ids: [ConnId; INLINE_SUBSCRIBERS],
    },
    Heap(Box<IndexSet<ConnId>>),
}

impl Default for Set {
    fn default() -> Self {
        Set::Inline {
            len: 0,
            ids: [0; INLINE_SUBSCRIBERS],
        }
    }
}

impl Set {
    pub(super) fn len(&self) -> usize {
        match self {
            Set::Inline { len, .. } => *len as usize,
            Set::Heap(set) => set.len(),
        }
    }

    fn contains(&self, conn: ConnId) -> bool {
        match self {
            Set::Inline { len, ids } => ids[..*len as usize].contains(&conn),
            Set::Heap(set) => set.contains(&conn),
        }
    }

    /// Adds `conn`; false if it was already there.
    pub(super) fn insert(&mut self, conn: ConnId) -> bool {
        match self {
            Set::Inline { len, ids } => {
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
                    *self = Set::Heap(Box::new(set));
                }
                true
            }
            Set::Heap(set) => set.insert(conn),
        }
    }

    /// Removes `conn`; false if it was not there.
    pub(super) fn remove(&mut self, conn: ConnId) -> bool {
        match self {
            Set::Inline { len, ids } => {
                let n = *len as usize;
                let Some(pos) = ids[..n].iter().position(|&c| c == conn) else {
                    return false;
                };
                ids[pos] = ids[n - 1];
                *len -= 1;
                true
            }
            Set::Heap(set) => {
                if !set.swap_remove(&conn) {
                    return false;
                }
                if set.len() <= DEMOTE_AT {
                    let mut ids = [0; INLINE_SUBSCRIBERS];
                    for (slot, &c) in ids.iter_mut().zip(set.iter()) {
                        *slot = c;
                    }
                    *self = Set::Inline {
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

    #[inline]
    pub(super) fn for_each(&self, f: &mut impl FnMut(ConnId)) {
        match self {
            Set::Inline { len, ids } => ids[..*len as usize].iter().for_each(|&c| f(c)),
            Set::Heap(set) => set.iter().for_each(|&c| f(c)),
        }
    }
}

/// [`Filtered::subs`]' value for a subscriber without a filter (no table holds this many
/// filters: `limits.filters_per_shard_max` is at most 1,000,000). A sentinel, not an `Option`:
/// it keeps an entry at 16 bytes, as in a plain set.
const NO_FILTER: FilterId = FilterId::MAX;

/// The subscribers of a pattern some of which have a filter.
#[derive(Debug, Default)]
pub(super) struct Filtered {
    /// Every subscriber, in the plain set's order, with its filter (or [`NO_FILTER`]).
    subs: IndexMap<ConnId, FilterId>,
    /// Subscribers with a filter (at least one).
    filtered: usize,
}

/// The connections subscribed to one pattern (see the module doc).
#[derive(Debug)]
pub(super) enum Subscribers {
    Plain(Set),
    Filtered(Box<Filtered>),
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers::Plain(Set::default())
    }
}

/// What [`Subscribers::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placed {
    /// A new subscriber.
    Added,
    /// Already there with this filter (or without one, as asked).
    Same,
    /// Already there with another filter (`None`: none), now with the one asked for.
    Moved { from: Option<FilterId> },
}

fn some_filter(id: FilterId) -> Option<FilterId> {
    (id != NO_FILTER).then_some(id)
}

impl Subscribers {
    pub(super) fn len(&self) -> usize {
        match self {
            Subscribers::Plain(set) => set.len(),
            Subscribers::Filtered(f) => f.subs.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn contains(&self, conn: ConnId) -> bool {
        self.filter_of(conn).is_some()
    }

    /// `None`: `conn` is not subscribed; `Some(filter)` otherwise.
    pub(super) fn filter_of(&self, conn: ConnId) -> Option<Option<FilterId>> {
        match self {
            Subscribers::Plain(set) => set.contains(conn).then_some(None),
            Subscribers::Filtered(f) => f.subs.get(&conn).map(|&id| some_filter(id)),
        }
    }

    /// Subscribes `conn` with `filter`, replacing the filter it had (its place in the order
    /// stays).
    pub(super) fn insert(&mut self, conn: ConnId, filter: Option<FilterId>) -> Placed {
        let f = match (&mut *self, filter) {
            (Subscribers::Plain(set), None) => {
                return if set.insert(conn) {
                    Placed::Added
                } else {
                    Placed::Same
                };
            }
            (subs @ Subscribers::Plain(_), Some(_)) => {
                let Subscribers::Plain(set) = std::mem::take(subs) else {
                    unreachable!("matched as plain")
                };
                let mut all = IndexMap::with_capacity(set.len() + 1);
                set.for_each(&mut |c| {
                    all.insert(c, NO_FILTER);
                });
                *subs = Subscribers::Filtered(Box::new(Filtered {
                    subs: all,
                    filtered: 0,
                }));
                let Subscribers::Filtered(f) = subs else {
                    unreachable!("made filtered above")
                };
                f
            }
            (Subscribers::Filtered(f), _) => f,
        };
        let new = filter.unwrap_or(NO_FILTER);
        let placed = match f.subs.insert(conn, new) {
            None => Placed::Added,
            Some(old) if old == new => Placed::Same,
            Some(old) => Placed::Moved {
                from: some_filter(old),
            },
        };
        // Whether it had a filter before.
        let was = match placed {
            Placed::Added => false,
            Placed::Same => filter.is_some(),
            Placed::Moved { from } => from.is_some(),
        };
        match (was, filter.is_some()) {
            (false, true) => f.filtered += 1,
            (true, false) => f.filtered -= 1,
            _ => {}
        }
        self.settle();
        placed
    }

    /// Removes `conn`: `None` if it was not subscribed, else the filter it had.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Option<FilterId>> {
        let f = match self {
            Subscribers::Plain(set) => return set.remove(conn).then_some(None),
            Subscribers::Filtered(f) => f,
        };
        // `swap_remove`, as a plain set's: O(1), the last subscriber takes the place.
        let id = some_filter(f.subs.swap_remove(&conn)?);
        if id.is_some() {
            f.filtered -= 1;
        }
        if f.subs.len() * 4 < f.subs.capacity() {
            f.subs.shrink_to(f.subs.len() * 2);
        }
        self.settle();
        Some(id)
    }

    /// Back to a plain set, in the same order, once no subscriber has a filter.
    fn settle(&mut self) {
        if let Subscribers::Filtered(f) = self {
            if f.filtered == 0 {
                let mut set = Set::default();
                for &c in f.subs.keys() {
                    set.insert(c);
                }
                *self = Subscribers::Plain(set);
            }
        }
    }

    /// Calls `f` for every subscriber, filter or not (admin queries, control events).
    #[inline]
    pub(super) fn for_each(&self, f: &mut impl FnMut(ConnId)) {
        match self {
            Subscribers::Plain(set) => set.for_each(f),
            Subscribers::Filtered(g) => g.subs.keys().for_each(|&c| f(c)),
        }
    }

    /// Calls `f` for every subscriber without a filter and for those whose filter `pass`es
    /// (asked for each such subscriber: the caller remembers its verdicts), in order; returns
    /// how many were turned away.
    #[inline]
    pub(super) fn for_each_admitted(
        &self,
        pass: &mut impl FnMut(FilterId) -> bool,
        f: &mut impl FnMut(ConnId),
    ) -> usize {
        match self {
            Subscribers::Plain(set) => {
                set.for_each(f);
                0
            }
            Subscribers::Filtered(g) => {
                let mut skipped = 0;
                for (&c, &id) in &g.subs {
                    if id == NO_FILTER || pass(id) {
                        f(c);
                    } else {
                        skipped += 1;
                    }
                }
                skipped
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_stay_small() {
        assert_eq!(std::mem::size_of::<Set>(), 24);
        assert_eq!(std::mem::size_of::<Subscribers>(), 24);
    }

    #[test]
    fn heap_set_shrinks_after_mass_unsubscribe() {
        let mut s = Set::default();
        for c in 0..10_000 {
            assert!(s.insert(c));
        }
        for c in 0..9_990 {
            assert!(s.remove(c));
        }
        let Set::Heap(set) = &s else {
            panic!("10 ids must stay on the heap")
        };
        assert!(set.capacity() < 64, "capacity {}", set.capacity());
        for c in 9_990..9_997 {
            assert!(matches!(s, Set::Heap(_)), "above DEMOTE_AT");
            assert!(s.remove(c));
        }
        assert!(matches!(s, Set::Heap(_)), "3 ids are above DEMOTE_AT");
        assert!(s.remove(9_997));
        assert!(matches!(s, Set::Inline { len: 2, .. }));
        let mut left = Vec::new();
        s.for_each(&mut |c| left.push(c));
        left.sort_unstable();
        assert_eq!(left, [9_998, 9_999]);
    }

    fn admitted(s: &Subscribers, passing: &[FilterId]) -> (Vec<ConnId>, usize) {
        let mut out = Vec::new();
        let skipped = s.for_each_admitted(&mut |id| passing.contains(&id), &mut |c| out.push(c));
        (out, skipped)
    }

    #[test]
    fn filters_keep_the_order_and_a_plain_set_comes_back() {
        let mut s = Subscribers::default();
        for c in 1..=7 {
            assert_eq!(s.insert(c, None), Placed::Added);
        }
        assert_eq!(s.insert(2, Some(7)), Placed::Moved { from: None });
        assert_eq!(s.insert(3, Some(7)), Placed::Moved { from: None });
        assert_eq!(s.insert(8, Some(8)), Placed::Added);
        assert_eq!(s.insert(3, Some(7)), Placed::Same);
        assert_eq!(s.insert(1, None), Placed::Same);
        assert_eq!(s.len(), 8);
        // The plain set's order, filtered.
        assert_eq!(admitted(&s, &[7]), (vec![1, 2, 3, 4, 5, 6, 7], 1));
        assert_eq!(admitted(&s, &[]), (vec![1, 4, 5, 6, 7], 3));
        assert_eq!(admitted(&s, &[7, 8]), ((1..=8).collect(), 0));
        // Replacing: another filter, none, or one where there was none.
        assert_eq!(s.insert(3, Some(8)), Placed::Moved { from: Some(7) });
        assert_eq!(s.insert(8, None), Placed::Moved { from: Some(8) });
        assert_eq!(s.insert(1, Some(9)), Placed::Moved { from: None });
        assert_eq!(s.filter_of(3), Some(Some(8)));
        assert_eq!(s.filter_of(8), Some(None));
        assert_eq!(s.filter_of(9), None);
        assert_eq!(admitted(&s, &[8]), (vec![3, 4, 5, 6, 7, 8], 2));
        assert_eq!(s.remove(1), Some(Some(9)));
        assert_eq!(s.remove(2), Some(Some(7)));
        assert_eq!(s.remove(2), None);
        assert!(matches!(s, Subscribers::Filtered(_)));
        assert_eq!(s.remove(4), Some(None));
        // The last filter goes: a plain set again, in the same order.
        assert_eq!(s.insert(3, None), Placed::Moved { from: Some(8) });
        let Subscribers::Plain(set) = &s else {
            panic!("no filtered subscriber left: plain again")
        };
        let mut order = Vec::new();
        set.for_each(&mut |c| order.push(c));
        let mut want = Vec::new();
        s.for_each(&mut |c| want.push(c));
        assert_eq!(order, want);
        assert_eq!(order.len(), 5);
        for c in order {
            assert_eq!(s.remove(c), Some(None));
        }
        assert!(s.is_empty());
    }
}
