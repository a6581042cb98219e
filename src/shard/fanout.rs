//! Publishing and fan-out.
//!
//! Every topic has one owner shard (a hash of its name). A publish entering anywhere goes to
//! the owner, which alone assigns the topic's `seq`, builds the frame once
//! ([`crate::frame::encode_data_frame`]) and sends one handle to each shard that has a
//! subscriber matching the topic. Because one shard sequences a topic and each pair of shards
//! is a FIFO ring, every shard sees a topic's frames in `seq` order, and so does every
//! subscriber that keeps up.
//!
//! Interest: when a pattern gets its first (or loses its last) local subscriber, the shard
//! tells every peer. A `subscribe` is acknowledged only once every peer has applied the
//! interest it caused, so a client that has its ack receives every later publish.

use std::{rc::Rc, sync::Arc};

use super::{
    State,
    conn::Phase,
    history::{PendingSub, Wanted},
    idem::IdemWindow,
    msg::{InterestMsg, MeshMsg, PublishMsg},
    out::Offer,
    pacing::Pacing,
};
use crate::{
    frame::{OutFrame, SharedFrame, encode_data_frame, monotonic_ns, unix_us},
    mesh::SendOutcome,
    protocol::Published,
    protocol::{self, ErrorCode, parse_epoch},
    publish::{PublishOutcome, ReplyTo},
    pubsub::trie::is_wildcard,
    pubsub::{
        index::{SubOutcome, UnsubOutcome},
        topic::{validate_pattern, validate_topic},
    },
    stats::{Gauges, SecEvent},
};

/// Encodes message `seq` of `topic` once and keeps it in the topic's history; returns the
/// frame and the shards to send it to. The topic's owner only.
#[allow(clippy::too_many_arguments)]
pub(super) fn encode_once(
    state: &mut super::topics::TopicState,
    interest: &crate::pubsub::trie::PatternTrie<u64>,
    interest_gen: u64,
    stats: &mut crate::stats::ShardStats,
    topic: &str,
    seq: u64,
    ts_us: u64,
    data: &[u8],
) -> (SharedFrame, u64) {
    let mask = state.shard_mask(interest, interest_gen, topic);
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

/// Why a publish got `capacity`: the topic table of its owner is full of topics that are
/// needed, a cross-shard queue is full, or (cluster mode) the queue of publishes waiting for
/// the broker is.
pub(crate) const CAPACITY_MESSAGE: &str =
    "publish refused: the server is at capacity (topic table or publish queue full); retry later";

impl State {
    /// A validated publish enters here (client op, HTTP, demo feed).
    pub fn ingest_publish(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
        reply: ReplyTo,
    ) {
        self.ingest(topic, data, idem, reply, false)
    }

    /// A publish (`to_user`: a user message, `POST /v1/send`, whose topic is
    /// `user.<id>.…`) goes to its topic's owner.
    pub(crate) fn ingest(
        &mut self,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
        reply: ReplyTo,
        to_user: bool,
    ) {
        crate::fault::check(crate::fault::Site::Shard, topic);
        self.stats.c.publishes += 1;
        if self.shared.bridge.is_some() {
            return self.publish_to_broker(topic, data, idem, reply, to_user);
        }
        let owner = crate::pubsub::topic::owner_shard(topic, self.shared.shards);
        if owner == self.shard {
            self.sequence(topic, &data, idem, reply, self.shard, to_user);
            return;
        }
        let msg = PublishMsg {
            topic: topic.into(),
            data,
            origin: self.shard as u8,
            reply,
            idem,
            to_user,
        };
        match self.mesh.send(owner, MeshMsg::Publish(Box::new(msg))) {
            SendOutcome::Sent => {}
            SendOutcome::Spilled => self.stats.c.mesh_spills += 1,
            SendOutcome::Dropped(MeshMsg::Publish(msg)) => {
                self.stats.c.mesh_drops += 1;
                self.apply_publish_reply(msg.reply, Err(ErrorCode::Capacity));
            }
            SendOutcome::Dropped(_) => unreachable!("send gives back what it was given"),
        }
    }

    /// Owner side: next `seq`, encode once, hand the frame to every interested shard. The
    /// outcome goes back to `origin`, the shard the publish entered on.
    fn sequence(
        &mut self,
        topic: &str,
        data: &[u8],
        idem: Option<Box<str>>,
        reply: ReplyTo,
        origin: usize,
        to_user: bool,
    ) {
        if self.ensure_topic(topic).is_err() {
            return self.publish_done(reply, Err(ErrorCode::Capacity), origin);
        }
        let idem_max = self.shared.cfg.limits.idem_keys_per_topic;
        let idem_ttl_ns = self.shared.cfg.cluster.idem_window_s * 1_000_000_000;
        let now_ns = monotonic_ns();
        let State {
            topics,
            interest,
            interest_gen,
            stats,
            ..
        } = self;
        let state = topics.get_mut(topic).expect("ensured above");
        let topic_epoch = state.epoch;
        if let Some(key) = idem {
            let window = state
                .idem
                .get_or_insert_with(|| Box::new(IdemWindow::new(idem_ttl_ns)));
            if let Some(seq) = window.get(&key, now_ns) {
                let done = Published {
                    seq,
                    epoch: topic_epoch,
                    duplicate: true,
                };
                stats.c.duplicates += 1;
                return self.publish_done(reply, Ok(done), origin);
            }
            window.insert(key, state.seq + 1, idem_max, now_ns);
        }
        state.seq += 1;
        let seq = state.seq;
        let (frame, mask) = encode_once(
            state,
            interest,
            *interest_gen,
            stats,
            topic,
            seq,
            unix_us(),
            data,
        );
        self.dispatch(topic, frame, mask, to_user);
        let done = Published {
            seq,
            epoch: topic_epoch,
            duplicate: false,
        };
        self.publish_done(reply, Ok(done), origin);
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

    /// Queues `frame` for every local connection subscribed to a pattern matching `topic`,
    /// once per connection.
    pub(crate) fn deliver_local(&mut self, topic: &str, frame: OutFrame) {
        self.round += 1;
        let round = self.round;
        let bounds = self.bounds;
        let pacing = Pacing::of(&self.shared.cfg, &frame);
        let batched = matches!(pacing, Pacing::Batched { .. });
        let mut slow: Vec<u32> = Vec::new();
        // Connections needing more than a push: recovering ones, and paced deliveries.
        // (key, already queued)
        let mut special: Vec<(u32, bool)> = Vec::new();
        let (mut conflated, mut dropped) = (0u64, 0u64);
        let State {
            index,
            conns,
            dirty,
            ..
        } = self;
        index.for_each_subscriber(topic, |key| {
            let conn = &mut conns[key as usize];
            if conn.round == round || conn.phase != Phase::Ws {
                return;
            }
            conn.round = round;
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
                if !conn.dirty && !conn.paced {
                    special.push((key, true));
                }
            } else if conn.mark_dirty() {
                dirty.push(key);
            }
        });
        self.stats.c.conflated += conflated;
        self.stats.c.dropped_oldest += dropped;
        for key in slow {
            self.slow_consumer(key);
        }
        for (key, queued) in special {
            if !queued {
                if self.conns[key as usize].recovering && self.recovering_frame(key, &frame) {
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

    /// The outcome of a publish reaches whoever waits for it (possibly on another shard).
    pub(crate) fn publish_done(
        &mut self,
        reply: ReplyTo,
        result: Result<Published, ErrorCode>,
        origin: usize,
    ) {
        if matches!(reply, ReplyTo::None) {
            return;
        }
        if origin == self.shard {
            return self.apply_publish_reply(reply, result);
        }
        // Control messages are never dropped by the mesh.
        let _ = self.mesh.send(
            origin,
            MeshMsg::Published(Box::new(PublishOutcome { reply, result })),
        );
    }

    pub(crate) fn apply_publish_reply(
        &mut self,
        reply: ReplyTo,
        result: Result<Published, ErrorCode>,
    ) {
        match reply {
            ReplyTo::None => {}
            ReplyTo::Http { token } => self.http_published(token, result),
            ReplyTo::Conn { conn, epoch, id } => {
                if self
                    .conns
                    .get(conn as usize)
                    .is_none_or(|c| c.epoch != epoch)
                {
                    return;
                }
                match result {
                    Ok(done) => {
                        if let Some(id) = id {
                            self.reply_with(conn, |out| protocol::ack_seq(out, Some(&id), done));
                        }
                    }
                    Err(code) => {
                        let message = match code {
                            ErrorCode::Capacity => CAPACITY_MESSAGE,
                            ErrorCode::Unavailable => {
                                "the cluster broker did not confirm the publish: retry with the \
                                 same idem"
                            }
                            _ => "publish failed",
                        };
                        self.reply_with(conn, |out| {
                            protocol::error(out, id.as_deref(), code, message, None)
                        });
                    }
                }
            }
        }
    }

    /// Why a publish to `topic` with `data_len` bytes of data is refused, if it is (the same
    /// rule for the `publish` op and `POST /v1/publish`).
    pub(crate) fn check_publish(
        &self,
        topic: &str,
        data_len: usize,
    ) -> Result<(), (ErrorCode, String)> {
        validate_topic(topic).map_err(|e| (ErrorCode::InvalidTopic, e.to_string()))?;
        let max = self.shared.cfg.limits.publish_data_bytes_max;
        if data_len > max {
            let msg = format!("data is {data_len} bytes; the limit is {max}");
            return Err((ErrorCode::MessageTooLarge, msg));
        }
        Ok(())
    }

    /// The `publish` op.
    pub(crate) fn publish_op(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        topic: &str,
        data: Vec<u8>,
        idem: Option<Box<str>>,
    ) {
        if let Err((code, msg)) = self.check_publish(topic, data.len()) {
            let topic = (code == ErrorCode::InvalidTopic).then_some(topic);
            return self.reply_with(key, |out| {
                protocol::error(out, id.as_deref(), code, &msg, topic)
            });
        }
        if !self.may_publish(key, topic) {
            self.stats.security(SecEvent::ForbiddenPublish);
            return self.reply_with(key, |out| {
                let msg = "no permission to publish to this topic";
                protocol::error(out, id.as_deref(), ErrorCode::Forbidden, msg, Some(topic))
            });
        }
        let epoch = self.conns[key as usize].epoch;
        self.ingest_publish(
            topic,
            data,
            idem,
            ReplyTo::Conn {
                conn: key,
                epoch,
                id,
            },
        );
    }

    /// The `subscribe` op: invalid topics get an error each, the rest are subscribed and
    /// acknowledged together once other shards know of any new interest.
    pub(crate) fn subscribe(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        topics: &[std::borrow::Cow<'_, str>],
        since: &[protocol::Since<'_>],
    ) {
        let Some(mut accepted) = self.valid_patterns(key, id.as_deref(), topics) else {
            return;
        };
        // Each pattern is checked once, here; deliveries are never checked.
        accepted.retain(|topic| {
            if self.may_subscribe(key, topic) {
                return true;
            }
            self.stats.security(SecEvent::ForbiddenSubscribe);
            self.reply_with(key, |out| {
                let msg = "no permission to subscribe to this topic";
                protocol::error(out, id.as_deref(), ErrorCode::Forbidden, msg, Some(topic))
            });
            false
        });
        let sub_max = self.shared.cfg.limits.subscriptions_per_conn_max;
        if accepted.is_empty() {
            return;
        }
        let conn = &self.conns[key as usize];
        let new = accepted
            .iter()
            .filter(|t| !conn.subs.iter().any(|s| &**s == **t))
            .count();
        if conn.subs.len() + new > sub_max {
            let msg = format!(
                "{} subscriptions held, {new} more requested; the limit is {sub_max}",
                conn.subs.len()
            );
            return self.reply_with(key, |out| {
                protocol::error(
                    out,
                    id.as_deref(),
                    ErrorCode::TooManySubscriptions,
                    &msg,
                    None,
                )
            });
        }
        let mut need = 0;
        for topic in &accepted {
            if let SubOutcome::Added { first } = self.index.subscribe(topic, key) {
                self.conns[key as usize].subs.push((*topic).into());
                self.presence_changed(key, topic, true);
                if first {
                    self.interest_changed(topic, true);
                }
            }
            need = need.max(self.interest_sent.get(*topic).copied().unwrap_or(0));
        }
        // Positions: every exact topic of the request, and every topic named in `since`
        // that one of the accepted patterns covers.
        let mut wanted: Vec<Wanted> = Vec::new();
        for s in since {
            let covered = validate_topic(&s.topic).is_ok()
                && accepted
                    .iter()
                    .any(|p| crate::pubsub::topic::matches(p, &s.topic));
            let epoch = parse_epoch(&s.epoch);
            let refused = match (covered, epoch) {
                (false, _) => "\"since\" names a topic no accepted pattern of this request covers",
                (true, None) => "\"since\" epoch must be 1 to 16 hex digits, as acks report it",
                (true, Some(_)) => "",
            };
            let Some(epoch) = epoch.filter(|_| covered) else {
                self.reply_with(key, |out| {
                    let (code, topic) = (ErrorCode::BadRequest, Some(&*s.topic));
                    protocol::error(out, id.as_deref(), code, refused, topic)
                });
                continue;
            };
            if !wanted.iter().any(|(w, _)| **w == *s.topic) {
                wanted.push((s.topic.as_ref().into(), Some((s.seq, epoch))));
            }
        }
        for t in &accepted {
            if !is_wildcard(t) && !wanted.iter().any(|(w, _)| **w == **t) {
                wanted.push(((*t).into(), None));
            }
        }
        let token = self.pending_subs.insert(PendingSub {
            conn: key,
            epoch: self.conns[key as usize].epoch,
            need,
            id,
            topics: accepted.iter().map(|t| (*t).into()).collect(),
            waiting: wanted.len(),
            positions: Vec::with_capacity(wanted.len()),
        }) as u32;
        if !wanted.is_empty() {
            self.request_positions(key, token, wanted);
        }
        self.try_complete_sub(token);
    }

    /// The `unsubscribe` op: idempotent; acknowledges every valid topic given.
    pub(crate) fn unsubscribe(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        topics: &[std::borrow::Cow<'_, str>],
    ) {
        let Some(valid) = self.valid_patterns(key, id.as_deref(), topics) else {
            return;
        };
        for topic in &valid {
            let subs = &mut self.conns[key as usize].subs;
            if let Some(i) = subs.iter().position(|s| &**s == *topic) {
                subs.swap_remove(i);
                self.unsubscribe_pattern(topic, key);
            }
        }
        if !valid.is_empty() {
            self.reply_with(key, |out| protocol::ack_topics(out, id.as_deref(), &valid));
        }
    }

    /// The topics of a (un)subscribe that are valid patterns, each once. Every invalid one gets
    /// its own `invalid_topic` error (with the request id and the topic); a request naming more
    /// than `limits.topics_per_request_max` topics gets `bad_request` and `None`.
    fn valid_patterns<'t>(
        &mut self,
        key: u32,
        id: Option<&[u8]>,
        topics: &'t [std::borrow::Cow<'_, str>],
    ) -> Option<Vec<&'t str>> {
        let max = self.shared.cfg.limits.topics_per_request_max;
        if topics.len() > max {
            let msg = format!("at most {max} topics per request");
            self.reply_with(key, |out| {
                protocol::error(out, id, ErrorCode::BadRequest, &msg, None)
            });
            return None;
        }
        let mut valid: Vec<&str> = Vec::with_capacity(topics.len());
        for topic in topics {
            match validate_pattern(topic) {
                Ok(_) if valid.contains(&&**topic) => {}
                Ok(_) => valid.push(topic),
                Err(e) => {
                    let msg = e.to_string();
                    self.reply_with(key, |out| {
                        protocol::error(out, id, ErrorCode::InvalidTopic, &msg, Some(topic))
                    });
                }
            }
        }
        Some(valid)
    }

    /// Removes `key` from `pattern` in the index; tells peers when it was the last one here.
    pub(crate) fn unsubscribe_pattern(&mut self, pattern: &str, key: u32) {
        let outcome = self.index.unsubscribe(pattern, key);
        if let UnsubOutcome::Removed { last } = outcome {
            self.presence_changed(key, pattern, false);
            if last {
                self.interest_changed(pattern, false);
            }
        }
    }

    /// This shard's interest in `pattern` appeared or vanished: update the local view and
    /// broadcast it.
    fn interest_changed(&mut self, pattern: &str, add: bool) {
        let me = self.shard as u8;
        self.apply_interest(me, pattern, add);
        let peers = self.shared.shards;
        if peers == 1 && self.shared.bridge.is_none() {
            return;
        }
        self.interest_seq += 1;
        let seq = self.interest_seq;
        if add {
            self.interest_sent.insert(pattern.into(), seq);
        } else {
            self.interest_sent.remove(pattern);
        }
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

    fn apply_interest(&mut self, from: u8, pattern: &str, add: bool) {
        let bit = 1u64 << from;
        if add {
            *self.interest.entry(pattern) |= bit;
        } else if let Some(mask) = self.interest.get_mut(pattern) {
            *mask &= !bit;
            if *mask == 0 {
                self.interest.remove(pattern);
                // The node no longer gets this pattern from the broker.
                self.interest_gone(pattern);
            }
        }
        self.interest_gen += 1;
    }

    pub(crate) fn interest_acked_by_all(&self) -> u64 {
        (0..self.shared.shards)
            .filter(|s| *s != self.shard)
            .map(|s| self.interest_acked[s])
            .min()
            .unwrap_or(u64::MAX)
            .min(self.bridge_acked)
    }

    /// Handles up to `budget` messages from other shards. Returns how many there were.
    pub(crate) fn drain_mesh(&mut self, budget: usize) -> usize {
        let mut inbox = std::mem::take(&mut self.inbox);
        let n = self.mesh.drain(budget, |msg| inbox.push(msg));
        for msg in inbox.drain(..) {
            self.on_mesh(msg);
        }
        self.inbox = inbox;
        n
    }

    fn on_mesh(&mut self, msg: MeshMsg) {
        match msg {
            MeshMsg::Deliver(frame) => {
                // One Rc per frame per shard; subscribers get clones of it.
                let frame: OutFrame = Rc::new(frame);
                self.deliver_local(frame.topic(), frame.clone());
            }
            MeshMsg::Publish(msg) => {
                let PublishMsg {
                    topic,
                    data,
                    origin,
                    reply,
                    idem,
                    to_user,
                } = *msg;
                self.sequence(&topic, &data, idem, reply, origin as usize, to_user);
            }
            MeshMsg::Published(reply) => {
                let PublishOutcome { reply, result } = *reply;
                self.apply_publish_reply(reply, result);
            }
            MeshMsg::Interest(msg) => {
                self.apply_interest(msg.from, &msg.pattern, msg.add);
                let ack = MeshMsg::InterestAck {
                    from: self.shard as u8,
                    seq: msg.seq,
                };
                let _ = self.mesh.send(msg.from as usize, ack);
            }
            MeshMsg::InterestAck { from, seq } => {
                let slot = &mut self.interest_acked[from as usize];
                *slot = (*slot).max(seq);
                self.release_pending_subs();
            }
            MeshMsg::Position(req) => self.on_position_req(*req),
            MeshMsg::PositionReply(rep) => {
                let rep = *rep;
                self.position_arrived(rep.token, rep.conn_epoch, rep.pos);
            }
            MeshMsg::FlushStats { reply_to, token } => {
                self.flush_stats();
                let _ = self
                    .mesh
                    .send(reply_to as usize, MeshMsg::StatsFlushed { token });
            }
            MeshMsg::StatsFlushed { token } => self.stats_flushed(token),
            MeshMsg::DeliverUser(frame) => self.deliver_user(Rc::new(frame)),
            MeshMsg::Admin(req) => self.admin_request_from_peer(*req),
            MeshMsg::AdminReply(rep) => self.admin_part(rep.token, rep.part),
            MeshMsg::Shutdown => self.begin_shutdown(),
            MeshMsg::Remote(m) => self.on_remote(*m),
            MeshMsg::Fetched(f) => self.on_fetched(*f),
            MeshMsg::BrokerInterestAck { seq } => {
                self.bridge_acked = self.bridge_acked.max(seq);
                self.release_pending_subs();
            }
            MeshMsg::BrokerUp => self.broker_up(),
            MeshMsg::QueryLocal(q) => self.query_local(*q),
            MeshMsg::QueryReply(r) => self.query_reply(*r),
        }
    }

    /// Writes this shard's counters and gauges into the registry.
    pub(crate) fn flush_stats(&mut self) {
        let gauges = Gauges {
            connections: self.conns.len() as u64,
            handshakes: self.handshakes as u64,
            partial_bytes: (self.shard == 0).then(|| {
                self.shared
                    .partial_bytes
                    .load(std::sync::atomic::Ordering::Relaxed) as u64
            }),
            subscriptions: self.index.subscription_count() as u64,
            patterns: self.index.pattern_count() as u64,
            topics: self.topics.len() as u64,
        };
        self.stats.c.topics_dropped = self.topics.dropped();
        self.stats.flush(gauges, &self.shared.hub);
    }
}
