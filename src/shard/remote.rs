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
//! "Continuous" holds within one generation (`State::cluster_gen`): a topic first seen, or
//! one this node stopped receiving (its last matching pattern left), starts over from the
//! next message it gets. Positions for subscribes (`since` recovery, `cache`) are answered
//! from the local history when it covers them, else after a fetch from the broker; so a
//! client can recover on any node.

use std::{collections::VecDeque, sync::Arc};

use super::{State, history::GapReason};
use crate::{
    cluster::{Cmd, Fetched, PublishCmd, Received, envelope::FLAG_TO_USER},
    frame::{SharedFrame, encode_data_frame, monotonic_ns},
    mesh::ReplyTo,
    protocol::{self, ErrorCode},
};

/// Messages a topic's owner holds while a fetch fills a hole; past this, the oldest held
/// are dropped and the fetch's answer reports them as a gap.
const HELD_MAX: usize = 16_384;

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
            self.apply_publish_reply(cmd.reply, Err(ErrorCode::RateLimited));
        }
    }

    /// This shard's interest change, for the broker (cluster mode only).
    pub(crate) fn broker_interest(&mut self, pattern: &str, add: bool, seq: u64) {
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
        if m.seq == 0 || !self.ensure_topic(&m.topic) {
            return;
        }
        let cur = self.cluster_gen;
        let state = self.topics.get_mut(&*m.topic).expect("ensured above");
        if state.live_gen == cur && state.epoch != 0 && state.epoch != m.epoch {
            self.new_epoch_under_subscribers(&m.topic, m.epoch);
        }
        let state = self.topics.get_mut(&*m.topic).expect("ensured above");
        if state.live_gen == cur && state.epoch == 0 && state.seq == 0 {
            // The broker had nothing of the topic when this node looked: its first epoch
            // starts at seq 1, and anything before this message is a hole to repair.
            state.epoch = m.epoch;
        }
        if state.live_gen != cur || state.epoch != m.epoch {
            // No continuous view yet (first message, the node stopped receiving the topic for
            // a while, a new epoch): the stream starts here.
            if state.epoch != m.epoch || state.seq + 1 != m.seq {
                if let Some(h) = state.history.as_mut() {
                    h.clear();
                }
                state.history_gen = u64::MAX;
            }
            state.epoch = m.epoch;
            state.seq = m.seq - 1;
            state.live_gen = cur;
        }
        if m.seq <= state.seq {
            self.stats.c.cluster_duplicates += 1;
            return;
        }
        let waiting = state.remote.as_ref().is_some_and(|w| w.fetching);
        if waiting || m.seq > state.seq + 1 {
            let w = state.remote.get_or_insert_with(Default::default);
            if w.held.len() == HELD_MAX {
                w.held.pop_front();
            }
            w.held.push_back(m.clone());
            if !waiting {
                self.stats.c.cluster_holes += 1;
                self.start_fetch(&m.topic);
            }
            return;
        }
        self.accept_remote(&m);
    }

    /// The broker lost a topic this node was delivering (a restart without persistence,
    /// eviction): its sequence starts over in `epoch`. Subscribers get one `gap` (reason
    /// `epoch`, `to` = `u64::MAX`), then the new epoch from `seq` 1 (a missing start is
    /// repaired or reported like any hole).
    fn new_epoch_under_subscribers(&mut self, topic: &str, epoch: u64) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        let (old_epoch, from) = (state.epoch, state.seq + 1);
        state.epoch = epoch;
        state.seq = 0;
        if let Some(h) = state.history.as_mut() {
            h.clear();
        }
        state.history_gen = u64::MAX;
        self.gap_to_subscribers(topic, old_epoch, from, u64::MAX, GapReason::Epoch);
    }

    /// Delivers the next message of its topic.
    fn accept_remote(&mut self, m: &Received) {
        let State {
            topics,
            interest,
            interest_gen,
            stats,
            ..
        } = self;
        let Some(state) = topics.get_mut(&*m.topic) else {
            return;
        };
        state.seq = m.seq;
        let (frame, mask) = super::fanout::encode_once(
            state,
            interest,
            *interest_gen,
            stats,
            &m.topic,
            m.seq,
            m.ts_us,
            &m.data,
        );
        self.dispatch(&m.topic, frame, mask, m.flags & FLAG_TO_USER != 0);
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
        let max = state.history.as_ref().map_or(1, |h| h.capacity()).max(1);
        bridge.send(Cmd::Fetch {
            shard: self.shard as u8,
            topic: topic.into(),
            max,
        });
    }

    /// The broker's answer to a fetch: the history merged, holes filled (or reported),
    /// held messages and waiting positions released.
    pub(crate) fn on_fetched(&mut self, f: Fetched) {
        let cur = self.cluster_gen;
        let now_ns = monotonic_ns();
        let topic = f.topic;
        let Some(state) = self.topics.get(&*topic) else {
            return;
        };
        if f.ok
            && state.live_gen == cur
            && state.epoch != 0
            && f.epoch != 0
            && f.epoch != state.epoch
        {
            // Its messages, from `seq` 1, are news for the subscribers (below).
            self.new_epoch_under_subscribers(&topic, f.epoch);
        }
        let Some(state) = self.topics.get_mut(&*topic) else {
            return;
        };
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
            let baseline = state.live_gen != cur || (f.epoch != 0 && f.epoch != state.epoch);
            if baseline {
                // No continuous live view: the broker's messages are the topic's past.
                state.epoch = f.epoch;
                state.seq = f.last;
                state.live_gen = cur;
                if let Some(h) = state.history.as_mut() {
                    h.clear();
                    for m in f.msgs.iter().filter(|m| m.epoch == f.epoch) {
                        h.push(encode(m), now_ns);
                        encoded += 1;
                    }
                }
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
            state.history_gen = cur;
        }
        self.stats.c.serializations += encoded;
        // News and held messages, in order; a hole nobody can fill becomes one `gap`.
        news.extend(w.held.drain(..));
        news.sort_by_key(|m| m.seq);
        let mut news = news.into_iter();
        while let Some(m) = news.next() {
            let Some(state) = self.topics.get_mut(&*topic) else {
                return;
            };
            if m.seq <= state.seq || m.epoch != state.epoch {
                continue;
            }
            if m.seq > state.seq + 1 {
                if f.ok && !w.retried {
                    // Published after the fetch read the broker, and missed live: the broker
                    // has them now. One more fetch before calling them lost.
                    w.retried = true;
                    w.held.push_back(m);
                    w.held.extend(news);
                    state.remote = Some(Box::new(w));
                    return self.start_fetch(&topic);
                }
                let (from, to, epoch) = (state.seq + 1, m.seq - 1, state.epoch);
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
            topics,
            interest,
            interest_gen,
            ..
        } = self;
        let Some(state) = topics.get_mut(topic) else {
            return;
        };
        let mask = super::fanout::shard_mask(state, interest, *interest_gen, topic);
        self.send_to_shards(mask, &frame);
        if mask & (1 << self.shard) != 0 {
            self.deliver_local(topic, std::rc::Rc::new(frame));
        }
    }

    /// Owner side of a subscribe's position request: answered now, or (cluster mode) after
    /// the broker's view of the topic arrives.
    pub(crate) fn position_request(&mut self, topic: &str, asked: Asked) {
        if self.shared.bridge.is_some() && self.needs_broker(topic, asked.since) {
            if let Some(state) = self.topics.get_mut(topic) {
                state
                    .remote
                    .get_or_insert_with(Default::default)
                    .positions
                    .push(asked);
                self.start_fetch(topic);
                return;
            }
        }
        let pos = self.position(topic, asked.since);
        self.answer_position(asked, pos);
    }

    /// Whether the local state cannot answer a position for `since` (cluster mode).
    fn needs_broker(&mut self, topic: &str, since: Option<(u64, u64)>) -> bool {
        if !self.ensure_topic(topic) {
            return false;
        }
        let cur = self.cluster_gen;
        let st = &self.topics[topic];
        if st.remote.as_ref().is_some_and(|w| w.fetching) || st.live_gen != cur {
            return true;
        }
        if st.history_gen == cur {
            return false;
        }
        let first = st.history.as_ref().and_then(|h| h.first_seq());
        match since {
            Some((s, e)) if (e == st.epoch || e == 0) && s < st.seq => {
                first.is_none_or(|f| f > s + 1)
            }
            None if st.cache => first.is_none(),
            _ => false,
        }
    }

    /// The broker connection is back: every topic this node receives is checked against the
    /// broker's history, so what was published meanwhile is delivered (or reported lost).
    pub(crate) fn broker_up(&mut self) {
        let cur = self.cluster_gen;
        let topics: Vec<Box<str>> = self
            .topics
            .iter()
            .filter(|(_, t)| t.live_gen == cur)
            .map(|(name, _)| name.clone())
            .collect();
        for topic in topics {
            let mut mask = 0;
            self.interest.for_each_match(&topic, |m| mask |= *m);
            if mask != 0 {
                self.start_fetch(&topic);
            }
        }
    }
}
