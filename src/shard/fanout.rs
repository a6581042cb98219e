//! Fan-out: a topic's owner hands each encoded frame to every shard with a matching
//! subscriber (one `Arc` per shard), and each shard queues it for its matching connections
//! (one `Rc` clone per connection). Because one shard sequences a topic and each pair of
//! shards is a FIFO ring, every shard sees a topic's frames in `seq` order, and so does every
//! subscriber that keeps up.
//!
//! Filters (`crate::pubsub::filter`) are evaluated here, on the shard of the subscribers they
//! belong to, whoever sequenced the message (this node's owner shard or, in cluster mode, the
//! broker): a filter chooses which connections are handed the frame, never its bytes, so the
//! frame stays the one encoded once. Each distinct filter with a subscriber of the topic on
//! this shard is evaluated at most once per message, on data parsed at most once, and a shard
//! that holds no filter does neither.

use std::{rc::Rc, sync::Arc};

use super::{State, msg::MeshMsg, out::Offer, pacing::Pacing};
use crate::{
    frame::{OutFrame, SharedFrame, encode_data_frame, monotonic_ns},
    mesh::SendOutcome,
};

/// Encodes message `seq` of `topic` once and keeps it in the topic's history; returns the
/// frame and the shards to send it to. The topic's owner only.
fn encode_once(
    state: &mut super::topics::TopicState,
    interest: &super::interest::Interest,
    stats: &mut crate::stats::ShardStats,
    topic: &str,
    seq: u64,
    ts_us: u64,
    data: &[u8],
) -> (SharedFrame, u64) {
    let mask = state.shard_mask(interest, topic);
    // Built even when no shard listens (~100 ns), so `serializations` counts every publish
    // sequenced, with or without subscribers.
    let frame: SharedFrame = Arc::new(
        encode_data_frame(topic, seq, ts_us, data, monotonic_ns()).with_class(state.frame_class),
    );
    stats.c.serializations += 1;
    if let Some(h) = state.history.as_mut() {
        h.push(frame.clone(), frame.published_ns());
    }
    (frame, mask)
}

impl State {
    /// The one commit path, for messages sequenced here (`publish.rs`) and by the cluster's
    /// broker (`remote.rs`) alike: message `seq` of `topic` is the topic's next; it is encoded
    /// once, kept in the topic's history and handed to every shard with a matching subscriber
    /// (`to_user`: to every shard, for the user's connections). The topic's owner only.
    pub(crate) fn commit(&mut self, topic: &str, seq: u64, ts_us: u64, data: &[u8], to_user: bool) {
        let State {
            topics,
            interest,
            stats,
            ..
        } = self;
        let Some(state) = topics.get_mut(topic) else {
            return;
        };
        state.seq = seq;
        let (frame, mask) = encode_once(state, interest, stats, topic, seq, ts_us, data);
        self.dispatch(topic, frame, mask, to_user);
    }

    /// Hands an encoded frame of `topic` to every shard in `mask` (`to_user`: every shard,
    /// for the user's connections). The topic's owner only.
    pub(crate) fn dispatch(&mut self, topic: &str, frame: SharedFrame, mask: u64, to_user: bool) {
        if to_user {
            // The user's connections may be on any shard: every shard gets it.
            self.send_to_user_shards(&frame);
            self.deliver_user(Rc::new(frame));
        } else {
            self.send_to_shards(mask, &frame);
            if mask & (1 << self.shard) != 0 {
                self.deliver_local(topic, Rc::new(frame));
            }
        }
    }

    pub(crate) fn send_to_shards(&mut self, mask: u64, frame: &SharedFrame) {
        self.send_frame(mask, frame, MeshMsg::Deliver);
    }

    /// A user message's frame to every other shard.
    fn send_to_user_shards(&mut self, frame: &SharedFrame) {
        let all = self.all_shards();
        self.send_frame(all, frame, MeshMsg::DeliverUser);
    }

    #[inline]
    fn send_frame(&mut self, mask: u64, frame: &SharedFrame, msg: impl Fn(SharedFrame) -> MeshMsg) {
        let mut peers = mask & !(1 << self.shard);
        while peers != 0 {
            let dst = peers.trailing_zeros() as usize;
            peers &= peers - 1;
            match self.mesh.send(dst, msg(frame.clone())) {
                SendOutcome::Sent => {}
                SendOutcome::Spilled => self.stats.c.mesh_spills += 1,
                SendOutcome::Dropped(_) => self.stats.c.mesh_drops += 1,
            }
        }
    }

    /// Queues `frame` for every local connection subscribed to a pattern matching `topic`
    /// (through a subscription whose filter, if it has one, passes the frame's data), once per
    /// connection.
    pub(crate) fn deliver_local(&mut self, topic: &str, frame: OutFrame) {
        let round = self.conns.new_round();
        let bounds = self.bounds;
        let pacing = Pacing::of(&frame);
        let batched = matches!(pacing, Pacing::Batched { .. });
        let mut slow: Vec<u32> = Vec::new();
        // Connections needing more than a push: recovering ones, and paced deliveries.
        // (key, already queued)
        let mut special: Vec<(u32, bool)> = Vec::new();
        // A control-lane event of the topic (a cluster `gap`) is protocol v1's: dialect
        // connections get their own answer (`other_formats`).
        let event = !frame.is_data();
        let mut other_formats: Vec<u32> = Vec::new();
        let (mut conflated, mut dropped) = (0u64, 0u64);
        let State { index, conns, .. } = self;
        let (conns, writes) = conns.split();
        // A control event (a cluster `gap`) is every subscriber's: no filter applies.
        let data = (!event).then(|| frame.data());
        let work = index.for_each_receiver(topic, data, |key| {
            let conn = &mut conns[key];
            if !conn.takes_round(round) {
                return;
            }
            if event && conn.out.format() != 0 {
                return other_formats.push(key);
            }
            // Rare: a subscribe of this connection waits for positions (see `history`), or
            // the topic is throttled.
            if conn.recovering || matches!(pacing, Pacing::Throttled { .. }) {
                special.push((key, false));
                return;
            }
            match conn.out.offer(frame.clone(), &bounds) {
                Offer::Queued => {}
                Offer::Conflated => {
                    conn.skipped += 1;
                    conflated += 1;
                }
                Offer::Dropped(n) => {
                    conn.skipped += n;
                    dropped += n as u64;
                }
                Offer::Discarded(n) => {
                    conn.skipped += n;
                    dropped += n as u64;
                    return;
                }
                Offer::Slow => return slow.push(key),
            }
            if batched {
                if !conn.is_dirty() && !conn.paced {
                    special.push((key, true));
                }
            } else {
                writes.mark_dirty(key, conn);
            }
        });
        self.stats.c.conflated += conflated;
        self.stats.c.dropped_oldest += dropped;
        self.stats.c.filter_evaluations += work.evaluations;
        self.stats.c.filter_parses += work.parses;
        self.stats.c.filter_skips += work.skipped;
        for key in slow {
            self.slow_consumer(key);
        }
        for key in other_formats {
            self.lost_messages(key, topic);
        }
        for (key, queued) in special {
            if !queued {
                if self.conns[key].recovering && self.recovering_frame(key, &frame) {
                    continue;
                }
                if let Pacing::Throttled { interval_us } = pacing {
                    self.throttle(key, frame.clone(), interval_us);
                    continue;
                }
                if !self.offer_now(key, frame.clone(), !batched) {
                    continue;
                }
            }
            if let Pacing::Batched { window_us } = pacing {
                self.batch_later(key, window_us);
            }
        }
    }
}
