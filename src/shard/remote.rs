//! Cluster mode, owner side (docs/CLUSTER.md "Ordering and repair").
//!
//! The broker assigns every message's `seq` and `epoch`; a topic's owner shard turns the
//! broker's stream into the exactly-once, in-order stream its subscribers get:
//!
//! - `seq <= last`: already delivered (a message can arrive twice: two matching broker
//!   subscriptions, a replayed fetch): dropped.
//! - `seq == last + 1`: encoded once and fanned out, as a local publish would be.
//! - `seq > last + 1`: a hole (a message lost between broker and node, a broker outage). The
//!   owner holds what follows, fetches the missing part from the broker's history, delivers
//!   it in order, then the held messages. What the broker no longer has becomes one `gap`
//!   event (reason `lost`) to the topic's subscribers.
//!
//! The baseline comes from the broker only: a topic first seen, or one this node stopped
//! receiving (no subscription matches it any more: `TopicState::live` false), holds its live
//! messages until a fetch says where the topic stands; what arrived live is then delivered,
//! what came before is history. A message of another epoch is also held until a fetch
//! confirms the broker's epoch (a stale copy cannot flip a topic back). Positions for
//! subscribes (`since` recovery, `cache`) are answered from the local history when it covers
//! them, else after a fetch from the broker; so a client can recover on any node.

use std::{collections::VecDeque, sync::Arc};

use super::State;
use crate::{
    cluster::{Cmd, Fetched, PublishCmd, Received, envelope::FLAG_TO_USER},
    frame::{SharedFrame, encode_data_frame, monotonic_ns},
    limits::CLUSTER_HELD_PER_TOPIC_MAX,
    protocol::{self, ErrorCode, GapReason},
    publish::ReplyTo,
};

/// A position request: who asked, for which pending subscribe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    pub from: u8,
    pub token: u32,
    pub conn_epoch: u32,
    pub since: Option<(u64, u64)>,
}

/// A topic waiting for the broker's history.
#[derive(Debug, Default)]
pub(crate) struct RemoteWait {
    fetching: bool,
    /// A hole was left after a fetch and a second fetch is under way: what it cannot fill
    /// is reported lost.
    retried: bool,
    held: VecDeque<Received>,
    positions: Vec<Asked>,
}

impl RemoteWait {
    /// For a second fetch: `m` and the rest of the sorted news held again, once each (a
    /// message both fetched and held live is one message, not a broker duplicate when the
    /// next answer counts those).
    fn hold_again(&mut self, m: Received, rest: impl Iterator<Item = Received>) {
        self.retried = true;
        let mut last = (m.epoch, m.seq);
        self.held.push_back(m);
        for n in rest {
            if (n.epoch, n.seq) != last {
                last = (n.epoch, n.seq);
                self.held.push_back(n);
            }
        }
    }
}

impl State {
    /// A local publish in cluster mode: the broker sequences it; the outcome comes back as
    /// `MeshMsg::Published`, the message itself with the broker's live traffic.
    pub(crate) fn publish_to_broker(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
        reply: ReplyTo,
        to_user: bool,
    ) {
        let bridge = self.shared.bridge.as_ref().expect("cluster mode");
        let cmd = PublishCmd {
            topic: topic.into(),
            data,
            idem,
            to_user,
            shard: self.shard as u8,
            reply,
        };
        if let Err(cmd) = bridge.send_publish(cmd) {
            self.stats.c.mesh_drops += 1;
            self.apply_publish_reply(cmd.reply, Err(ErrorCode::Capacity));
        }
    }

    /// This shard's interest change, for the broker (cluster mode only). With the live
    /// reader in shard 0 (`live.rs`) shard 0 subscribes for the node: a peer's change reaches
    /// it over the mesh, its own here.
    pub(crate) fn broker_interest(&mut self, pattern: &str, add: bool, seq: u64) {
        if super::live::in_shard(&self.shared.boot) {
            if self.live.is_some() {
                self.live_interest(self.shard as u8, pattern, seq);
            }
            return;
        }
        if let Some(bridge) = &self.shared.bridge {
            bridge.send(Cmd::Interest {
                shard: self.shard as u8,
                pattern: pattern.into(),
                add,
                seq,
            });
        }
    }

    /// A message the broker sequenced, at its topic's owner.
    pub(crate) fn on_remote(&mut self, m: Received) {
        if m.seq == 0 {
            return;
        }
        let to_user = m.flags & FLAG_TO_USER != 0;
        if !self.topics.contains(&m.topic) && !to_user && !self.has_interest(&m.topic) {
            // Nobody here wants it (a Redis glob matches more than the pattern did): no
            // state for it, so foreign traffic cannot fill the topic table.
            return;
        }
        let Ok(state) = self.ensure_topic(&m.topic) else {
            // The table is full of topics that are needed: this one cannot be tracked.
            return;
        };
        let fetching = state.remote.as_ref().is_some_and(|w| w.fetching);
        if !state.live || fetching {
            // No continuous view yet (first message, interest came back, a fetch under
            // way): the broker's history sets the baseline; until then, hold.
            self.hold(m);
            return;
        }
        if state.epoch == 0 && state.seq == 0 {
            // The broker had nothing of the topic when this node looked: this is its first
            // epoch, from seq 1 (anything before this message is a hole to repair).
            state.epoch = m.epoch;
        }
        if m.epoch != state.epoch {
            // Another epoch: the broker lost the topic, or this is a stale copy. Only the
            // broker can say which: hold and ask it.
            self.hold(m);
            return;
        }
        if m.seq <= state.seq {
            self.stats.c.cluster_duplicates += 1;
            return;
        }
        if m.seq != state.seq.saturating_add(1) {
            self.stats.c.cluster_holes += 1;
            self.hold(m);
            return;
        }
        self.accept_remote(&m);
    }

    /// Keeps `m` until the topic's fetch answers (starting one), dropping the oldest held
    /// past `CLUSTER_HELD_PER_TOPIC_MAX` (the fetch's answer then reports them).
    fn hold(&mut self, mut m: Received) {
        let Some(state) = self.topics.get_mut(&m.topic) else {
            return;
        };
        // A live message's data is a slice of the read buffer it came in (64 KiB, shared by
        // every message of that read): held, it would keep the whole buffer alive, one per
        // held message in the worst case. Held messages are the rare path (a fetch under way):
        // they keep a copy of their own data.
        m.data = bytes::Bytes::copy_from_slice(&m.data);
        let w = state.remote.get_or_insert_with(Default::default);
        if w.held.len() == CLUSTER_HELD_PER_TOPIC_MAX {
            w.held.pop_front();
        }
        let topic = m.topic.clone();
        w.held.push_back(m);
        self.start_fetch(&topic);
    }

    /// Whether some subscription on this node matches `topic`.
    fn has_interest(&self, topic: &str) -> bool {
        self.interest.any_match(topic)
    }

    /// This node stopped receiving `pattern` from the broker: topics no remaining pattern
    /// matches lose their continuous view (their next messages start from a fetch).
    pub(crate) fn interest_gone(&mut self, pattern: &str) {
        if self.shared.bridge.is_none() {
            return;
        }
        let State {
            topics, interest, ..
        } = self;
        for (name, st) in topics.iter_mut() {
            if st.live && crate::pubsub::topic::matches(pattern, name) && !interest.any_match(name)
            {
                st.live = false;
                st.history_full = false;
            }
        }
    }

    /// The broker lost a topic this node was delivering (a restart without persistence,
    /// eviction): its sequence starts over in `epoch`. Subscribers get one `gap` (reason
    /// `epoch`, `to` = `u64::MAX`), then the new epoch from `seq` 1 (a missing start is
    /// repaired or reported like any hole).
    fn new_epoch_under_subscribers(&mut self, topic: &str, epoch: u64) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        let (old_epoch, from) = (state.epoch, state.seq.saturating_add(1));
        state.epoch = epoch;
        state.seq = 0;
        if let Some(h) = state.history.as_mut() {
            h.clear();
        }
        state.history_full = false;
        self.gap_to_subscribers(topic, old_epoch, from, u64::MAX, GapReason::Epoch);
    }

    /// Delivers the next message of its topic.
    fn accept_remote(&mut self, m: &Received) {
        let to_user = m.flags & FLAG_TO_USER != 0;
        self.commit(&m.topic, m.seq, m.ts_us, &m.data, to_user);
    }

    /// Asks the broker for `topic`'s position and history (once at a time per topic).
    fn start_fetch(&mut self, topic: &str) {
        let Some(bridge) = self.shared.bridge.clone() else {
            return;
        };
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        let w = state.remote.get_or_insert_with(Default::default);
        if w.fetching {
            return;
        }
        w.fetching = true;
        // A baseline needs what this topic's history keeps; a hole may be longer: the broker
        // keeps up to the largest class history of any topic.
        let own = state.history.as_ref().map_or(1, |h| h.capacity()).max(1);
        let max = if state.live {
            // What the bridge set the broker up with: its configuration is the start one.
            let broker = self.shared.boot.topics.iter().map(|c| c.history_size).max();
            own.max(broker.unwrap_or(0))
        } else {
            own
        };
        bridge.send(Cmd::Fetch {
            shard: self.shard as u8,
            topic: topic.into(),
            max,
        });
    }

    /// The broker's answer to a fetch: the history merged, holes filled (or reported),
    /// held messages and waiting positions released.
    pub(crate) fn on_fetched(&mut self, f: Fetched) {
        let now_ns = monotonic_ns();
        let topic = f.topic;
        let Some(state) = self.topics.get(&topic) else {
            return;
        };
        if f.ok && state.live && state.epoch != 0 && f.epoch != 0 && f.epoch != state.epoch {
            // The broker lost the topic under live subscribers: its new epoch's messages,
            // from `seq` 1, are news for them (below).
            self.new_epoch_under_subscribers(&topic, f.epoch);
        }
        let Some(state) = self.topics.get_mut(&topic) else {
            return;
        };
        if state.live && state.epoch == 0 && state.seq == 0 {
            // Empty at the broker when this node last looked: its first epoch.
            state.epoch = f.epoch;
        }
        let mut w = state.remote.take().map(|b| *b).unwrap_or_default();
        w.fetching = false;
        let mut news: Vec<Received> = Vec::new();
        let mut encoded = 0;
        if f.ok {
            let class = state.frame_class;
            let encode = |m: &Received| -> SharedFrame {
                Arc::new(
                    encode_data_frame(&topic, m.seq, m.ts_us, &m.data, now_ns).with_class(class),
                )
            };
            if !state.live {
                // No continuous live view. What arrived live (held) is news for the
                // subscribers here; the broker's messages before it are the topic's past.
                let first_held = w
                    .held
                    .iter()
                    .filter(|m| m.epoch == f.epoch)
                    .map(|m| m.seq)
                    .min();
                let past = first_held.map_or(f.last, |s| (s - 1).min(f.last));
                state.epoch = f.epoch;
                state.seq = past;
                state.live = true;
                if let Some(h) = state.history.as_mut() {
                    h.clear();
                }
                let (older, newer): (Vec<Received>, Vec<Received>) = f
                    .msgs
                    .into_iter()
                    .filter(|m| m.epoch == f.epoch)
                    .partition(|m| m.seq <= past);
                if let Some(h) = state.history.as_mut() {
                    for m in &older {
                        h.push(encode(m), now_ns);
                        encoded += 1;
                    }
                }
                news = newer;
            } else {
                // Older than what was delivered: history; newer: news (a hole being filled,
                // or messages still on their way live, which will then be dropped).
                let seq = state.seq;
                let (older, newer): (Vec<Received>, Vec<Received>) = f
                    .msgs
                    .into_iter()
                    .filter(|m| m.epoch == state.epoch)
                    .partition(|m| m.seq <= seq);
                if let Some(h) = state.history.as_mut() {
                    // Only what the history lacks and has room for is encoded.
                    let first = h.first_seq();
                    let room = h.capacity() - h.retained();
                    let mut take: Vec<SharedFrame> = older
                        .iter()
                        .rev()
                        .filter(|m| first.is_none_or(|f| m.seq < f))
                        .take(room)
                        .map(&encode)
                        .collect();
                    take.reverse();
                    encoded += take.len() as u64;
                    h.prepend(take);
                }
                news = newer;
            }
            state.history_full = true;
        }
        self.stats.c.serializations += encoded;
        if !f.ok && !state.live {
            // The broker could not be asked and this node has no view of the topic: the held
            // messages wait for the next attempt (the next message of the topic starts one).
            // A subscribe waiting for a position is told its stream cannot be checked: a gap
            // from its `since` on, so it resynchronises instead of trusting a guess.
            let positions = std::mem::take(&mut w.positions);
            state.remote = Some(Box::new(w));
            for asked in positions {
                self.answer_position(asked, unchecked(&topic, asked));
            }
            return;
        }
        // News and held messages, in order; a hole nobody can fill becomes one `gap`. A message
        // held twice came twice from the broker: a duplicate, as on the live path (one also in
        // the fetch's answer is not: that is the same message read two ways).
        let mut held: Vec<Received> = w.held.drain(..).collect();
        held.sort_by_key(|m| (m.epoch, m.seq));
        let twice = held
            .windows(2)
            .filter(|p| (p[0].epoch, p[0].seq) == (p[1].epoch, p[1].seq))
            .count();
        self.stats.c.cluster_duplicates += twice as u64;
        news.extend(held);
        news.sort_by_key(|m| m.seq);
        let mut news = news.into_iter();
        while let Some(m) = news.next() {
            let Some(state) = self.topics.get_mut(&topic) else {
                return;
            };
            if state.live && state.epoch == 0 && state.seq == 0 {
                // The broker had nothing of the topic when the fetch read it: this message,
                // published since, opened its first epoch (as on the live path).
                state.epoch = m.epoch;
            }
            if state.live && m.epoch != state.epoch && !w.retried {
                // Of another epoch than the one the broker showed: published after the fetch
                // read it (the broker lost the topic and started over since), or stale. One
                // more fetch says which, instead of waiting for the topic's next message.
                w.hold_again(m, news);
                state.remote = Some(Box::new(w));
                return self.start_fetch(&topic);
            }
            if !state.live || m.seq <= state.seq || m.epoch != state.epoch {
                // Without a view (the fetch failed), or of another epoch even after a second
                // fetch: nothing here can place it.
                continue;
            }
            if m.seq > state.seq.saturating_add(1) {
                if !w.retried {
                    // Published after the fetch read the broker, and missed live (or the
                    // fetch failed): one more fetch before calling them lost.
                    w.hold_again(m, news);
                    state.remote = Some(Box::new(w));
                    return self.start_fetch(&topic);
                }
                if m.seq > state.seq.saturating_add(CLUSTER_HELD_PER_TOPIC_MAX as u64)
                    && f.last < m.seq
                {
                    // Far beyond anything the broker has: not a message of this topic's
                    // stream (forged or corrupt). Dropped, not trusted.
                    self.stats.c.cluster_implausible += 1;
                    continue;
                }
                let (from, to, epoch) = (state.seq + 1, m.seq - 1, state.epoch);
                // The history now has a hole: it no longer answers for what came before.
                if let Some(h) = state.history.as_mut() {
                    h.clear();
                }
                state.history_full = false;
                self.gap_to_subscribers(&topic, epoch, from, to, GapReason::Lost);
            }
            self.accept_remote(&m);
        }
        for asked in w.positions {
            let pos = self.position(&topic, asked.since);
            self.answer_position(asked, pos);
        }
    }

    /// Messages `from..=to` of `topic` are lost for this node (`to` = `u64::MAX`: the epoch
    /// ended): its subscribers get a `gap`.
    fn gap_to_subscribers(
        &mut self,
        topic: &str,
        epoch: u64,
        from: u64,
        to: u64,
        reason: GapReason,
    ) {
        self.stats.c.gaps += 1;
        let mut json = Vec::with_capacity(128);
        protocol::gap(&mut json, topic, epoch, from, to, reason);
        let frame = Arc::new(crate::frame::topic_event(topic, &json));
        let State {
            topics, interest, ..
        } = self;
        let Some(state) = topics.get_mut(topic) else {
            return;
        };
        let mask = state.shard_mask(interest, topic);
        self.send_to_shards(mask, &frame);
        if mask & (1 << self.shard) != 0 {
            self.deliver_local(topic, std::rc::Rc::new(frame));
        }
    }

    /// Owner side of a subscribe's position request: answered now, or (cluster mode) after
    /// the broker's view of the topic arrives.
    pub(crate) fn position_request(&mut self, topic: &str, asked: Asked) {
        if self.shared.bridge.is_some() {
            match self.needs_broker(topic, asked.since) {
                Some(true) => {
                    if let Some(state) = self.topics.get_mut(topic) {
                        let w = state.remote.get_or_insert_with(Default::default);
                        w.positions.push(asked);
                        self.start_fetch(topic);
                        return;
                    }
                }
                Some(false) => {}
                // The table is full: the topic cannot be checked against the broker.
                None => return self.answer_position(asked, unchecked(topic, asked)),
            }
        }
        let pos = self.position(topic, asked.since);
        self.answer_position(asked, pos);
    }

    /// Whether the local state cannot answer a position for `since` (cluster mode); `None`
    /// if the topic cannot be tracked (table full).
    fn needs_broker(&mut self, topic: &str, since: Option<(u64, u64)>) -> Option<bool> {
        let st = self.ensure_topic(topic).ok()?;
        if st.remote.as_ref().is_some_and(|w| w.fetching) || !st.live {
            return Some(true);
        }
        let same_epoch = |e: u64| e == st.epoch || e == 0;
        Some(match since {
            // The client saw more than this node has delivered yet (it comes from a node
            // that was ahead): the broker has it.
            Some((s, e)) if same_epoch(e) && s > st.seq => true,
            _ if st.history_full => false,
            Some((s, e)) if same_epoch(e) && s < st.seq => {
                let first = st.history.as_ref().and_then(|h| h.first_seq());
                first.is_none_or(|f| f > s + 1)
            }
            None if st.cache => st.history.as_ref().is_none_or(|h| h.retained() == 0),
            _ => false,
        })
    }

    /// The broker connection is back: every topic this node receives is checked against the
    /// broker's history, so what was published meanwhile is delivered (or reported lost).
    pub(crate) fn broker_up(&mut self) {
        let topics: Vec<Box<str>> = self
            .topics
            .iter()
            .filter(|(_, t)| t.live)
            .map(|(name, _)| name.clone())
            .collect();
        for topic in topics {
            if self.has_interest(&topic) {
                self.start_fetch(&topic);
            }
        }
    }
}

/// The answer for a topic this node cannot check against the broker (the broker could not be
/// asked, or the topic table is full): a gap from the client's `since` on, so it
/// resynchronises instead of trusting a guess.
fn unchecked(topic: &str, asked: Asked) -> super::recovery::Position {
    super::recovery::Position {
        topic: topic.into(),
        seq: asked.since.map_or(0, |(s, _)| s),
        epoch: asked.since.map_or(0, |(_, e)| e),
        gap: asked
            .since
            .map(|(s, _)| (s.saturating_add(1), u64::MAX, GapReason::Lost)),
        replay: Vec::new(),
    }
}
