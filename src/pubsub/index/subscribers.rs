//! The connections subscribed to one pattern: a plain [`Set`], or, once one of them has a
//! filter, the plain set beside one set per filter ([`Subscribers::Filtered`]). Grouping by
//! filter is what lets the fan-out evaluate a filter once for all of its subscribers of the
//! pattern and skip the whole group when it fails.
//!
//! Invariants: a connection is in at most one set of a pattern; a filter's set is never empty
//! (it goes with its last connection); a `Filtered` holds at least one filtered connection
//! (with the last one it becomes `Plain` again); `of` lists exactly the filtered connections.

use std::collections::HashMap;

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

    fn is_empty(&self) -> bool {
        self.len() == 0
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

/// The subscribers of a pattern some of which have a filter.
#[derive(Debug, Default)]
pub(super) struct Filtered {
    /// Those without a filter.
    plain: Set,
    /// Those with one, by filter; iterated densely by the fan-out.
    groups: IndexMap<FilterId, Set>,
    /// Each filtered connection's filter.
    of: HashMap<ConnId, FilterId>,
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

impl Subscribers {
    pub(super) fn len(&self) -> usize {
        match self {
            Subscribers::Plain(set) => set.len(),
            Subscribers::Filtered(f) => f.plain.len() + f.of.len(),
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
            Subscribers::Filtered(f) => match f.of.get(&conn) {
                Some(&id) => Some(Some(id)),
                None => f.plain.contains(conn).then_some(None),
            },
        }
    }

    /// Subscribes `conn` with `filter`, replacing the filter it had.
    pub(super) fn insert(&mut self, conn: ConnId, filter: Option<FilterId>) -> Placed {
        let from = self.filter_of(conn);
        if from == Some(filter) {
            return Placed::Same;
        }
        if from.is_some() {
            self.remove(conn);
        }
        match (filter, &mut *self) {
            (None, Subscribers::Plain(set)) => {
                set.insert(conn);
            }
            (None, Subscribers::Filtered(f)) => {
                f.plain.insert(conn);
            }
            (Some(id), subs) => {
                if let Subscribers::Plain(set) = subs {
                    let plain = std::mem::take(set);
                    *subs = Subscribers::Filtered(Box::new(Filtered {
                        plain,
                        ..Filtered::default()
                    }));
                }
                let Subscribers::Filtered(f) = subs else {
                    unreachable!("made filtered above")
                };
                f.groups.entry(id).or_default().insert(conn);
                f.of.insert(conn, id);
            }
        }
        match from {
            None => Placed::Added,
            Some(from) => Placed::Moved { from },
        }
    }

    /// Removes `conn`: `None` if it was not subscribed, else the filter it had.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Option<FilterId>> {
        let f = match self {
            Subscribers::Plain(set) => return set.remove(conn).then_some(None),
            Subscribers::Filtered(f) => f,
        };
        let Some(id) = f.of.remove(&conn) else {
            return f.plain.remove(conn).then_some(None);
        };
        if let Some(group) = f.groups.get_mut(&id) {
            group.remove(conn);
            if group.is_empty() {
                f.groups.swap_remove(&id);
            }
        }
        if f.of.is_empty() {
            // The last filtered subscriber left: back to a plain set.
            let plain = std::mem::take(&mut f.plain);
            *self = Subscribers::Plain(plain);
        } else if f.of.len() * 4 < f.of.capacity() {
            f.of.shrink_to(f.of.len() * 2);
        }
        Some(Some(id))
    }

    /// Calls `f` for every subscriber, filter or not (admin queries, control events).
    #[inline]
    pub(super) fn for_each(&self, f: &mut impl FnMut(ConnId)) {
        match self {
            Subscribers::Plain(set) => set.for_each(f),
            Subscribers::Filtered(g) => {
                g.plain.for_each(f);
                g.groups.values().for_each(|set| set.for_each(f));
            }
        }
    }

    /// Calls `f` for every subscriber without a filter and for those whose filter `pass`es
    /// (asked once per filter); returns how many were turned away.
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
                g.plain.for_each(f);
                let mut skipped = 0;
                for (&id, set) in &g.groups {
                    if pass(id) {
                        set.for_each(f);
                    } else {
                        skipped += set.len();
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
        out.sort_unstable();
        (out, skipped)
    }

    #[test]
    fn filters_group_subscribers_and_a_plain_set_comes_back() {
        let mut s = Subscribers::default();
        assert_eq!(s.insert(1, None), Placed::Added);
        assert_eq!(s.insert(2, Some(7)), Placed::Added);
        assert_eq!(s.insert(3, Some(7)), Placed::Added);
        assert_eq!(s.insert(4, Some(8)), Placed::Added);
        assert_eq!(s.insert(3, Some(7)), Placed::Same);
        assert_eq!(s.insert(1, None), Placed::Same);
        assert_eq!(s.len(), 4);
        assert_eq!(admitted(&s, &[7]), (vec![1, 2, 3], 1));
        assert_eq!(admitted(&s, &[]), (vec![1], 3));
        assert_eq!(admitted(&s, &[7, 8]), (vec![1, 2, 3, 4], 0));
        // Replacing: another filter, none, or one where there was none.
        assert_eq!(s.insert(3, Some(8)), Placed::Moved { from: Some(7) });
        assert_eq!(s.insert(4, None), Placed::Moved { from: Some(8) });
        assert_eq!(s.insert(1, Some(9)), Placed::Moved { from: None });
        assert_eq!(s.filter_of(3), Some(Some(8)));
        assert_eq!(s.filter_of(4), Some(None));
        assert_eq!(s.filter_of(5), None);
        assert_eq!(admitted(&s, &[8]), (vec![3, 4], 2));
        assert_eq!(s.len(), 4);
        assert_eq!(s.remove(1), Some(Some(9)));
        assert_eq!(s.remove(2), Some(Some(7)));
        assert_eq!(s.remove(2), None);
        assert!(matches!(s, Subscribers::Filtered(_)));
        assert_eq!(s.remove(3), Some(Some(8)));
        let Subscribers::Plain(set) = &s else {
            panic!("no filtered subscriber left: plain again")
        };
        assert_eq!(set.len(), 1);
        assert_eq!(s.remove(4), Some(None));
        assert!(s.is_empty());
    }
}
