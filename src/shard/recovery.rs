//! Recovery (docs/PROTOCOL.md "Recovery"): positions and replays for subscribes.
//!
//! **Owner side.** A topic's owner shard keeps, for topics whose class has `history_size > 0`,
//! a ring of the topic's last frames (`topics/history.rs`). Every topic has an `epoch`, drawn
//! when its owner creates the topic's state; `seq` counts within it.
//!
//! **Subscriber side.** A subscribe asks each exact topic's owner for its *position* (`seq`,
//! `epoch`), and for frames after a client's `since`. Ordering needs no locks: the request
//! travels on the subscriber→owner ring behind the interest message it may have caused, so the
//! owner answers with interest already applied; the answer travels on the owner→subscriber ring,
//! so every live frame the owner sends after answering arrives after the answer, and every one
//! sent before it has `seq <= ` the answered position. Until its answer arrives, live frames of
//! the topic for that connection are dropped (the answer's replay holds them); between the
//! answer and the completion of the whole request they are held. On completion the connection
//! gets: the ack (with positions), then per topic an optional `gap`, the replayed frames, the
//! held frames. No duplicate, no hole.

use std::rc::Rc;

use super::{
    State,
    msg::{MeshMsg, PositionRep, PositionReq},
};

use crate::{
    dialect::Dialect,
    frame::{OutFrame, SharedFrame, monotonic_ns},
    protocol::{self, GapReason},
    pubsub::topic::matches,
};

/// The frames held for `topic` (taken out of `held`).
pub(crate) fn take_held(held: &mut [(Box<str>, Vec<OutFrame>)], topic: &str) -> Vec<OutFrame> {
    held.iter_mut()
        .find(|(t, _)| **t == *topic)
        .map(|(_, h)| std::mem::take(h))
        .unwrap_or_default()
}

/// The owner's answer for one topic.
#[derive(Debug)]
pub struct Position {
    pub topic: Box<str>,
    pub seq: u64,
    pub epoch: u64,
    /// Missed and not replayed: `from..=to` (`to` may be below `from` only for `Epoch` with
    /// nothing published yet).
    pub gap: Option<(u64, u64, GapReason)>,
    pub replay: Vec<SharedFrame>,
}

/// One topic of one connection waiting for its position.
#[derive(Debug)]
pub(crate) struct Recovering {
    topic: Box<str>,
    token: u32,
    /// The position arrived (live frames are now held instead of dropped).
    ready: bool,
    held: Vec<OutFrame>,
}

/// A subscribe waiting for interest acknowledgements and owners' positions.
pub(crate) struct PendingSub {
    pub conn: u32,
    pub epoch: u32,
    /// Every peer must have acknowledged interest messages up to this sequence.
    pub need: u64,
    pub id: Option<Box<[u8]>>,
    /// Accepted patterns, for the ack.
    pub topics: Vec<Box<str>>,
    /// Positions still to arrive.
    pub waiting: usize,
    pub positions: Vec<Position>,
    pub answer: SubAnswer,
    /// Topics unsubscribed before the subscribe completed: no frames of theirs follow it.
    pub cancelled: Vec<Box<str>>,
    /// Accepted patterns the connection held already, whose filter this subscribe replaced
    /// (the v1 ack's `replaced`).
    pub replaced: Vec<Box<str>>,
}

/// How a completed subscribe is answered, in the connection's own protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubAnswer {
    /// The protocol's reply (v1 `ack`, Binance `result`, Centrifugo subscribe result).
    Reply,
    /// A Centrifugo subscribe that asked to recover (`was_recovering`).
    Recover,
    /// No reply: streams named in a Binance URL.
    Quiet,
}

/// The subscribes of this shard's connections waiting for their positions and interest
/// acknowledgements, and per connection the topics it recovers.
#[derive(Default)]
pub(crate) struct Recovery {
    pending: slab::Slab<PendingSub>,
    recovering: std::collections::HashMap<u32, Vec<Recovering>>,
}

impl Recovery {
    /// Registers a subscribe that waits; its token.
    pub(crate) fn wait(&mut self, p: PendingSub) -> u32 {
        self.pending.insert(p) as u32
    }
}

/// A topic whose position a subscribe needs, with the client's `since` (seq, epoch).
pub(crate) type Wanted = (Box<str>, Option<(u64, u64)>);

impl State {
    /// Owner side: the position of `topic` and what a client at `since` missed.
    pub(crate) fn position(&mut self, topic: &str, since: Option<(u64, u64)>) -> Position {
        let now_ns = monotonic_ns();
        let Some(state) = self.topics.get_mut(topic) else {
            // Nothing published (or nothing anyone needed kept it): no epoch yet, `seq` 0. A
            // client that saw messages of an earlier life of the topic has lost them.
            let gap = since
                .filter(|(s, _)| *s > 0)
                .map(|_| (1, 0, GapReason::Epoch));
            return Position {
                topic: topic.into(),
                seq: 0,
                epoch: 0,
                gap,
                replay: Vec::new(),
            };
        };
        // A replay fills at most half of the topic's lane at the subscriber.
        let bytes_max = self.bounds.lane_max[state.frame_class.lane as usize] as usize / 2;
        let (seq, epoch) = (state.seq, state.epoch);
        let mut gap = None;
        let mut replay = Vec::new();
        // Epoch 0 is "not known yet" (an ack for a topic nothing was published to, in
        // cluster mode): compared by `seq` alone.
        let since = since.map(|(s, e)| (s, if e == 0 { epoch } else { e }));
        match since {
            Some((s, e)) if e == epoch && s < seq => {
                if let Some(h) = state.history.as_mut() {
                    replay = h.after(s, now_ns, bytes_max);
                }
                let first = replay.first().map_or(seq + 1, |f| f.seq());
                if first > s + 1 {
                    gap = Some((s + 1, first - 1, GapReason::Evicted));
                }
            }
            // Up to date.
            Some((s, e)) if e == epoch && s == seq => {}
            Some(_) => gap = Some((1, seq, GapReason::Epoch)),
            None if state.cache => {
                replay.extend(state.history.as_mut().and_then(|h| h.last(now_ns)))
            }
            None => {}
        }
        Position {
            topic: topic.into(),
            seq,
            epoch,
            gap,
            replay,
        }
    }

    /// Subscriber side: asks the owner of each of `wanted` for its position (answered at once
    /// when this shard owns it), marking the topics recovering for `key`. `pending` must
    /// already be in `self.pending_subs` under `token`.
    pub(crate) fn request_positions(&mut self, key: u32, token: u32, wanted: Vec<Wanted>) {
        let conn_epoch = self.conns[key].epoch();
        let list = self.recovery.recovering.entry(key).or_default();
        for (topic, _) in &wanted {
            list.push(Recovering {
                topic: topic.clone(),
                token,
                ready: false,
                held: Vec::new(),
            });
        }
        self.conns[key].recovering = true;
        for (topic, since) in wanted {
            let owner = crate::pubsub::topic::owner_shard(&topic, self.shared.shards);
            if owner == self.shard {
                let asked = super::remote::Asked {
                    from: self.shard as u8,
                    token,
                    conn_epoch,
                    since,
                };
                self.position_request(&topic, asked);
            } else {
                let req = PositionReq {
                    topic,
                    since,
                    from: self.shard as u8,
                    token,
                    conn_epoch,
                };
                // Control messages are never dropped by the mesh.
                let _ = self.mesh.send(owner, MeshMsg::Position(Box::new(req)));
            }
        }
    }

    /// Owner side of a peer's position request.
    pub(crate) fn on_position_req(&mut self, req: PositionReq) {
        let asked = super::remote::Asked {
            from: req.from,
            token: req.token,
            conn_epoch: req.conn_epoch,
            since: req.since,
        };
        self.position_request(&req.topic, asked);
    }

    /// Sends the answer to whoever asked (this shard or a peer).
    pub(crate) fn answer_position(&mut self, asked: super::remote::Asked, pos: Position) {
        if asked.from as usize == self.shard {
            return self.position_arrived(asked.token, asked.conn_epoch, pos);
        }
        let rep = PositionRep {
            pos,
            token: asked.token,
            conn_epoch: asked.conn_epoch,
        };
        let _ = self
            .mesh
            .send(asked.from as usize, MeshMsg::PositionReply(Box::new(rep)));
    }

    /// A position for pending subscribe `token` arrived.
    pub(crate) fn position_arrived(&mut self, token: u32, conn_epoch: u32, pos: Position) {
        let Some(p) = self.recovery.pending.get_mut(token as usize) else {
            return;
        };
        if p.epoch != conn_epoch {
            return;
        }
        let key = p.conn;
        if let Some(r) = self.recovery.recovering.get_mut(&key).and_then(|l| {
            l.iter_mut()
                .find(|r| r.token == token && *r.topic == *pos.topic)
        }) {
            r.ready = true;
        }
        p.waiting -= 1;
        p.positions.push(pos);
        self.try_complete_sub(token);
    }

    /// Live frame `frame` of `topic` for recovering connection `key`: dropped before its
    /// position arrived, held after. Returns false if the topic is not recovering for `key`.
    pub(crate) fn recovering_frame(&mut self, key: u32, frame: &OutFrame) -> bool {
        let Some(list) = self.recovery.recovering.get_mut(&key) else {
            return false;
        };
        let topic = frame.topic();
        let Some(r) = list.iter_mut().find(|r| *r.topic == *topic) else {
            return false;
        };
        if r.ready {
            r.held.push(frame.clone());
        }
        true
    }

    /// Completes pending subscribe `token` if nothing is missing: the ack with positions, then
    /// per topic the gap, the replay and the held frames.
    pub(crate) fn try_complete_sub(&mut self, token: u32) {
        let acked = self.interest.acked_by_all();
        let Some(p) = self.recovery.pending.get(token as usize) else {
            return;
        };
        if p.waiting > 0 || p.need > acked {
            return;
        }
        let p = self.recovery.pending.remove(token as usize);
        let key = p.conn;
        let mut held: Vec<(Box<str>, Vec<OutFrame>)> = Vec::new();
        if let Some(list) = self.recovery.recovering.get_mut(&key) {
            let mut i = 0;
            while i < list.len() {
                if list[i].token == token {
                    let r = list.swap_remove(i);
                    held.push((r.topic, r.held));
                } else {
                    i += 1;
                }
            }
            if list.is_empty() {
                self.recovery.recovering.remove(&key);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.recovering = false;
                }
            }
        }
        if self.conns.get(key).is_none_or(|c| c.epoch() != p.epoch) {
            return;
        }
        let dialect = self.conns[key].dialect;
        // Topics unsubscribed meanwhile are answered (every request is) but get no frames:
        // no replay, no gap, nothing held.
        let mut p = p;
        let subs = &self.conns[key].subs;
        let cancelled = |t: &str| {
            p.cancelled.iter().any(|c| matches(c, t)) && !subs.iter().any(|s| matches(s, t))
        };
        for pos in p.positions.iter_mut() {
            if cancelled(&pos.topic) {
                pos.replay.clear();
                pos.gap = None;
                held.retain(|(t, _)| *t != pos.topic);
            }
        }
        if dialect.is_centrifugo() && p.answer != SubAnswer::Quiet {
            return self.centrifugo_subscribed(key, p, held);
        }
        match (dialect, p.answer) {
            (_, SubAnswer::Quiet) => {}
            (Dialect::Binance, _) => self.reply_with(key, |out| {
                crate::dialect::binance::result_null(out, p.id.as_deref())
            }),
            _ => {
                let mut json = Vec::with_capacity(64 + 64 * p.positions.len());
                // Positions of patterns withdrawn meanwhile leave the ack with them.
                let positions: Vec<protocol::TopicPosition<'_>> = p
                    .positions
                    .iter()
                    .filter(|pos| p.topics.iter().any(|t| matches(t, &pos.topic)))
                    .map(|pos| protocol::TopicPosition {
                        topic: &pos.topic,
                        seq: pos.seq,
                        epoch: pos.epoch,
                    })
                    .collect();
                protocol::ack_subscribe(
                    &mut json,
                    p.id.as_deref(),
                    &p.topics,
                    &positions,
                    &p.replaced,
                );
                self.reply(key, &json);
            }
        }
        for pos in p.positions {
            // Binance streams have no `seq` to recover from: no gap event.
            if let (Some((from, to, reason)), Dialect::V1) = (pos.gap, dialect) {
                self.stats.c.gaps += 1;
                self.reply_with(key, |out| {
                    protocol::gap(out, &pos.topic, pos.epoch, from, to, reason)
                });
            }
            let mut last = pos.seq;
            for f in pos.replay {
                last = last.max(f.seq());
                // Replayed frames pass the connection's filters like live ones.
                if !self.index.admits(&pos.topic, key, f.data()) {
                    self.stats.c.filter_skips += 1;
                    continue;
                }
                self.stats.c.replayed += 1;
                self.enqueue(key, Rc::new(f));
            }
            let frames = take_held(&mut held, &pos.topic);
            self.enqueue_held(key, frames, last);
        }
    }

    /// Frames held for a topic while its position was awaited, in order after `last` (the
    /// position or the last frame replayed).
    pub(crate) fn enqueue_held(&mut self, key: u32, frames: Vec<OutFrame>, mut last: u64) {
        for f in frames {
            // Held frames follow the answered position (FIFO rings); the check only guards
            // the invariant.
            if f.seq() > last {
                last = f.seq();
                self.enqueue(key, f);
            }
        }
    }

    /// Releases every pending subscribe whose interest is now acknowledged.
    pub(crate) fn release_pending_subs(&mut self) {
        let tokens: Vec<u32> = self
            .recovery
            .pending
            .iter()
            .map(|(t, _)| t as u32)
            .collect();
        for token in tokens {
            self.try_complete_sub(token);
        }
    }

    /// Whether a subscribe of `key` waits for the position of `topic`.
    pub(crate) fn is_recovering(&self, key: u32, topic: &str) -> bool {
        self.conns[key].recovering
            && self
                .recovery
                .recovering
                .get(&key)
                .is_some_and(|l| l.iter().any(|r| *r.topic == *topic))
    }

    /// `key` no longer subscribes to `pattern` (already removed from its subscriptions) while
    /// a subscribe of it waits: that subscribe still completes and is answered (every protocol
    /// answers every request), but without the frames (replayed, held or a gap) of the topics
    /// `pattern` covered and no remaining pattern covers. `withdrawn` (a reload took the
    /// right): the pattern also leaves the protocol v1 ack, after the `forbidden` error that
    /// said so.
    pub(crate) fn cancel_pending(&mut self, key: u32, pattern: &str, withdrawn: bool) {
        for (_, p) in self.recovery.pending.iter_mut() {
            if p.conn == key && p.topics.iter().any(|t| **t == *pattern) {
                p.cancelled.push(pattern.into());
                if withdrawn {
                    p.topics.retain(|t| **t != *pattern);
                    p.replaced.retain(|t| **t != *pattern);
                }
            }
        }
        if !self.conns[key].recovering {
            return;
        }
        let subs = &self.conns[key].subs;
        let gone = |t: &str| matches(pattern, t) && !subs.iter().any(|p| matches(p, t));
        if let Some(list) = self.recovery.recovering.get_mut(&key) {
            list.retain(|r| !gone(&r.topic));
            if list.is_empty() {
                self.recovery.recovering.remove(&key);
                self.conns[key].recovering = false;
            }
        }
    }

    /// A connection is gone: its recovering entries go with it (pending subscribes are
    /// dropped on completion by the epoch check).
    pub(crate) fn forget_recovering(&mut self, key: u32) {
        self.recovery.recovering.remove(&key);
    }
}
