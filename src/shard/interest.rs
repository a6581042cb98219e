//! Interest: which shards have a local subscriber for which patterns. Each shard keeps the
//! view of every shard (itself included), so a topic's owner knows where to send a frame
//! without asking anyone.
//!
//! When a pattern gets its first (or loses its last) local subscriber, the shard tells every
//! peer (and, in cluster mode, the broker bridge). A `subscribe` is acknowledged only once
//! every peer (and the broker) has applied the interest it caused, so a client that has its
//! ack receives every later publish: `acked_by_all` is that barrier.

use std::collections::HashMap;

use super::{State, msg::InterestMsg, msg::MeshMsg};
use crate::pubsub::trie::PatternTrie;

/// The interest of every shard, by pattern, and the acknowledgements of this shard's own.
#[derive(Debug)]
pub(crate) struct Interest {
    /// Bit `s` of a pattern's mask: shard `s` has a local subscriber.
    trie: PatternTrie<u64>,
    /// Bumped on every change: cached topic masks older than this are recomputed.
    generation: u64,
    /// Sequence of the last interest message this shard broadcast, per pattern it added.
    sent: HashMap<Box<str>, u64>,
    seq: u64,
    /// Highest interest sequence each peer has acknowledged.
    acked: Vec<u64>,
    /// Cluster: the bridge has this shard's interest messages up to this sequence at the
    /// broker (`u64::MAX` in memory mode: nothing to wait for).
    broker_acked: u64,
    me: usize,
}

impl Interest {
    pub(crate) fn new(me: usize, shards: usize, cluster: bool) -> Interest {
        Interest {
            trie: PatternTrie::default(),
            generation: 0,
            sent: HashMap::new(),
            seq: 0,
            acked: vec![0; shards],
            broker_acked: if cluster { 0 } else { u64::MAX },
            me,
        }
    }

    /// Changes whenever any shard's interest changes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The shards with a subscriber whose pattern matches `topic`.
    pub(crate) fn mask_of(&self, topic: &str) -> u64 {
        let mut mask = 0;
        self.trie.for_each_match(topic, |m| mask |= *m);
        mask
    }

    /// Whether some subscriber of this node (any shard) matches `topic`.
    pub(crate) fn any_match(&self, topic: &str) -> bool {
        let mut any = false;
        self.trie.for_each_match(topic, |_| any = true);
        any
    }

    /// Whether some shard holds `pattern` (exactly this pattern, not one matching it).
    pub(crate) fn holds(&self, pattern: &str) -> bool {
        self.trie.get(pattern).is_some_and(|mask| *mask != 0)
    }

    /// Applies shard `from`'s interest change; true if no shard has `pattern` any more.
    pub(crate) fn apply(&mut self, from: u8, pattern: &str, add: bool) -> bool {
        self.generation += 1;
        let bit = 1u64 << from;
        if add {
            *self.trie.entry(pattern) |= bit;
            return false;
        }
        let Some(mask) = self.trie.get_mut(pattern) else {
            return false;
        };
        *mask &= !bit;
        if *mask != 0 {
            return false;
        }
        self.trie.remove(pattern);
        true
    }

    /// Numbers this shard's own change for broadcast; the sequence to send with it.
    fn next_broadcast(&mut self, pattern: &str, add: bool) -> u64 {
        self.seq += 1;
        if add {
            self.sent.insert(pattern.into(), self.seq);
        } else {
            self.sent.remove(pattern);
        }
        self.seq
    }

    /// The sequence every peer must have acknowledged before a subscribe to `pattern` is.
    pub(crate) fn needed_for(&self, pattern: &str) -> u64 {
        self.sent.get(pattern).copied().unwrap_or(0)
    }

    pub(crate) fn peer_acked(&mut self, from: u8, seq: u64) {
        let slot = &mut self.acked[from as usize];
        *slot = (*slot).max(seq);
    }

    pub(crate) fn broker_acked(&mut self, seq: u64) {
        self.broker_acked = self.broker_acked.max(seq);
    }

    /// The highest sequence of this shard's interest every peer (and the broker) applied.
    pub(crate) fn acked_by_all(&self) -> u64 {
        (0..self.acked.len())
            .filter(|s| *s != self.me)
            .map(|s| self.acked[s])
            .min()
            .unwrap_or(u64::MAX)
            .min(self.broker_acked)
    }
}

impl State {
    /// This shard's interest in `pattern` appeared or vanished: update the local view and
    /// tell the peers and the broker.
    pub(crate) fn interest_changed(&mut self, pattern: &str, add: bool) {
        let me = self.shard as u8;
        self.apply_interest(me, pattern, add);
        let peers = self.shared.shards;
        if peers == 1 && self.shared.bridge.is_none() {
            return;
        }
        let seq = self.interest.next_broadcast(pattern, add);
        for dst in (0..peers).filter(|d| *d != self.shard) {
            let msg = InterestMsg {
                from: me,
                pattern: pattern.into(),
                add,
                seq,
            };
            let _ = self.mesh.send(dst, MeshMsg::Interest(Box::new(msg)));
        }
        self.broker_interest(pattern, add, seq);
    }

    /// Applies an interest change (this shard's or a peer's); a pattern no shard holds any
    /// more is no longer received from the broker.
    pub(crate) fn apply_interest(&mut self, from: u8, pattern: &str, add: bool) {
        if self.interest.apply(from, pattern, add) {
            self.interest_gone(pattern);
        }
    }
}
