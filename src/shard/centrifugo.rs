//! Centrifugo's client protocol on the shard (docs/DIALECTS.md; the wire format is
//! `crate::dialect::centrifugo`). Commands are handled strictly in order, as the SDKs expect
//! (centrifuge-js sends `connect` and its subscribes in one message); channels are tickcast
//! topics, so permissions, history, recovery and fan-out are the core's.

use super::{
    State,
    auth::TokenOutcome,
    recovery::{PendingSub, SubAnswer, take_held},
};
use crate::{
    dialect::{
        Dialect,
        centrifugo::{self as cf, Command, error},
    },
    frame::OutFrame,
    protocol::{epoch_str, parse_epoch},
    publish::ReplyTo,
    pubsub::{topic::validate_topic, trie::is_wildcard},
    stats::{CloseReason, SecEvent},
};

impl State {
    /// A text message: one command per line, handled in order. A line that is not a command
    /// closes the connection (3501), as Centrifugo does.
    ///
    /// The message counts once against the connection's message rate, so the commands one
    /// message may carry are bounded too: `limits.subscriptions_per_conn_max` + 16 (the SDKs
    /// send `connect` and every subscription of a reconnect in one message); more closes the
    /// connection (3501) before any is handled.
    pub(crate) fn centrifugo_message(&mut self, key: u32, text: &[u8]) {
        let max = self.cfg.limits.subscriptions_per_conn_max + 16;
        if cf::lines(text).nth(max).is_some() {
            return self.centrifugo_bad_request(key);
        }
        // The message paid for one command; each further one that makes the shards work for
        // it (history, presence, publish) pays its own share of the rate.
        let mut paid = true;
        for line in cf::lines(text) {
            let cmd: Command<'_> = match serde_json::from_slice(line) {
                Ok(cmd) => cmd,
                Err(_) => return self.centrifugo_bad_request(key),
            };
            if cmd.is_pong() {
                continue;
            }
            let costly = cmd.history.is_some()
                || cmd.presence.is_some()
                || cmd.presence_stats.is_some()
                || cmd.publish.is_some();
            if costly && !std::mem::take(&mut paid) && !self.rate_ok(key, false) {
                return;
            }
            if cmd.id == 0 && cmd.send.is_none() {
                return self.centrifugo_bad_request(key);
            }
            if !self.centrifugo_command(key, cmd) {
                return;
            }
            // A command may have closed the connection: the rest of the message is void.
            if self
                .conns
                .get(key)
                .is_none_or(|c| c.phase != super::conn::Phase::Ws)
            {
                return;
            }
        }
    }

    /// `key` (a dialect connection) missed messages of `topic` that cannot be recovered
    /// in place (a cluster `gap`): a Centrifugo client is unsubscribed with 2500 (insufficient
    /// state), so its SDK subscribes again asking to recover, and learns what was lost
    /// (`recovered: false`) or gets it; Binance streams have no positions and carry on.
    pub(crate) fn lost_messages(&mut self, key: u32, topic: &str) {
        // A subscribe of the topic waiting for its position learns of the loss from it
        // (`recovered: false`).
        if !self.conns[key].dialect.is_centrifugo() || self.is_recovering(key, topic) {
            return;
        }
        if !self.centrifugo_drop(key, topic) {
            return;
        }
        self.stats.c.gaps += 1;
        self.reply_with(key, |out| {
            let code = cf::UNSUBSCRIBE_INSUFFICIENT_STATE;
            cf::unsubscribe_push(out, topic, code, "insufficient state")
        });
    }

    /// JSON comes in text messages only.
    pub(crate) fn centrifugo_binary(&mut self, key: u32) {
        self.centrifugo_bad_request(key);
    }

    fn centrifugo_bad_request(&mut self, key: u32) {
        self.close_code(
            key,
            cf::DISCONNECT_BAD_REQUEST,
            "bad request",
            CloseReason::ProtocolError,
        );
    }

    fn cf_error(&mut self, key: u32, id: u32, code: u16, message: &str) {
        self.reply_with(key, |out| cf::error(out, id, code, message));
    }

    /// One command; false: stop handling this message (a failed connect).
    fn centrifugo_command(&mut self, key: u32, cmd: Command<'_>) -> bool {
        let id = cmd.id;
        let connected = self.conns[key].dialect == Dialect::Centrifugo;
        if let Some(c) = cmd.connect {
            if connected {
                self.centrifugo_bad_request(key);
                return false;
            }
            return self.centrifugo_connect(key, id, c.token.as_deref());
        }
        if !connected {
            // Anything before `connect`.
            self.centrifugo_bad_request(key);
            return false;
        }
        if cmd.refresh.is_none() && self.conns[key].auth != super::auth::AuthState::Ok {
            // The token expired and no `refresh` came (the SDKs refresh before `ttl` runs
            // out): as Centrifugo, the connection expires; the SDK reconnects, gets 109 and a
            // fresh token from its getToken.
            self.close_code(
                key,
                cf::DISCONNECT_EXPIRED,
                "connection expired",
                CloseReason::Unauthorized,
            );
            return false;
        }
        if let Some(s) = cmd.subscribe {
            self.centrifugo_subscribe(key, id, s);
        } else if let Some(u) = cmd.unsubscribe {
            self.centrifugo_drop(key, &u.channel);
            self.reply_with(key, |out| cf::empty_result(out, id, "unsubscribe"));
        } else if let Some(p) = cmd.publish {
            self.centrifugo_publish(key, id, &p.channel, p.data.get().as_bytes());
        } else if let Some(r) = cmd.refresh {
            return self.centrifugo_refresh(key, id, &r.token);
        } else if let Some((c, stats)) = cmd
            .presence
            .map(|c| (c, false))
            .or(cmd.presence_stats.map(|c| (c, true)))
        {
            if !self.centrifugo_readable(key, id, &c.channel) {
                return true;
            }
            // Who is subscribed is shown only where the channel's class has `presence` on
            // (as the join and leave events are).
            if !self.class_of(&c.channel).is_some_and(|c| c.presence) {
                let msg = "presence is not on for this channel";
                self.cf_error(key, id, error::NOT_AVAILABLE, msg);
                return true;
            }
            self.centrifugo_presence(key, id, &c.channel, stats);
        } else if let Some(h) = cmd.history {
            let topic = h.channel.as_ref();
            if !self.centrifugo_readable(key, id, topic) {
                return true;
            }
            if !self.keeps_history(topic) {
                self.cf_error(
                    key,
                    id,
                    error::NOT_AVAILABLE,
                    "history is not kept for this channel",
                );
                return true;
            }
            // An empty epoch: any; a malformed one cannot match (112).
            let epoch = |e: &str| match e {
                "" => 0,
                e => parse_epoch(e).unwrap_or(u64::MAX),
            };
            let since = h.since.map(|s| (s.offset, epoch(&s.epoch)));
            self.centrifugo_history(key, id, topic, h.limit, since, h.reverse);
        } else if cmd.rpc.is_some() || cmd.sub_refresh.is_some() {
            self.cf_error(key, id, error::NOT_AVAILABLE, "not available");
        } else if cmd.send.is_some() {
            // `send` expects no reply: there is no id to answer. Nothing receives it here.
        } else {
            self.cf_error(key, id, error::METHOD_NOT_FOUND, "method not found");
        }
        true
    }

    /// `connect`: the token (or the one of the upgrade, or none), then the connect result.
    fn centrifugo_connect(&mut self, key: u32, id: u32, token: Option<&str>) -> bool {
        match token.filter(|t| !t.is_empty()) {
            Some(token) => match self.take_token(key, token) {
                TokenOutcome::Taken { .. } => {}
                TokenOutcome::Invalid(crate::auth::AuthError::Expired) => {
                    // 109: the SDK fetches a fresh token (getToken) and connects again.
                    self.cf_error(key, id, error::TOKEN_EXPIRED, "token expired");
                    return false;
                }
                TokenOutcome::Invalid(_) | TokenOutcome::UserChanged => {
                    self.close_code(
                        key,
                        cf::DISCONNECT_INVALID_TOKEN,
                        "invalid token",
                        CloseReason::AuthFailed,
                    );
                    return false;
                }
                TokenOutcome::TooManyForUser => {
                    let msg = "too many connections for this user";
                    self.cf_error(key, id, error::LIMIT_EXCEEDED, msg);
                    return false;
                }
            },
            None if self.conns[key].auth != super::auth::AuthState::Ok => {
                self.cf_error(key, id, error::UNAUTHORIZED, "unauthorized");
                return false;
            }
            None => {}
        }
        let conn = &mut self.conns[key];
        conn.dialect = Dialect::Centrifugo;
        let client = format!("{}-{}", self.shard, conn.no);
        let ttl = self.centrifugo_ttl(key);
        let ping_s = self.cfg.centrifugo.ping_interval_s;
        self.reply_with(key, |out| cf::connect_result(out, id, &client, ttl, ping_s));
        true
    }

    /// Seconds until the connection's token expires (`None`: it does not).
    fn centrifugo_ttl(&self, key: u32) -> Option<u64> {
        let exp = self.conns[key].ident.as_ref()?.exp_s?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Some(exp.saturating_sub(now))
    }

    /// Channels a refresh or a reload took the right to are gone: an `unsubscribe` push each
    /// (2000: the SDK does not subscribe again). Their join and leave pushes
    /// (`presence.<channel>`) went with them and get none.
    pub(super) fn centrifugo_withdrawn(&mut self, key: u32, dropped: &[Box<str>]) {
        for channel in dropped
            .iter()
            .filter(|c| !c.starts_with(cf::PRESENCE_PREFIX))
        {
            self.reply_with(key, |out| {
                let code = cf::UNSUBSCRIBE_SERVER;
                cf::unsubscribe_push(out, channel, code, "permission denied")
            });
        }
    }

    /// `refresh`: a fresh token for the same user keeps the connection and its subscriptions.
    fn centrifugo_refresh(&mut self, key: u32, id: u32, token: &str) -> bool {
        match self.take_token(key, token) {
            TokenOutcome::Taken { dropped, .. } => {
                let client = format!("{}-{}", self.shard, self.conns[key].no);
                let ttl = self.centrifugo_ttl(key);
                self.reply_with(key, |out| cf::refresh_result(out, id, &client, ttl));
                self.centrifugo_withdrawn(key, &dropped);
                true
            }
            TokenOutcome::Invalid(crate::auth::AuthError::Expired) => {
                // As Centrifugo: the SDK reconnects and gets 109, then a fresh token.
                self.close_code(
                    key,
                    cf::DISCONNECT_EXPIRED,
                    "connection expired",
                    CloseReason::Unauthorized,
                );
                false
            }
            _ => {
                self.close_code(
                    key,
                    cf::DISCONNECT_INVALID_TOKEN,
                    "invalid token",
                    CloseReason::AuthFailed,
                );
                false
            }
        }
    }

    /// Whether `topic` is a channel `key` may read (subscribe to, ask the history or presence
    /// of); if not, the error reply is sent.
    fn centrifugo_readable(&mut self, key: u32, id: u32, topic: &str) -> bool {
        if validate_topic(topic).is_err() || is_wildcard(topic) {
            self.cf_error(key, id, error::UNKNOWN_CHANNEL, "unknown channel");
            return false;
        }
        if !self.may_subscribe(key, topic) {
            self.stats.security(SecEvent::ForbiddenSubscribe);
            self.cf_error(key, id, error::PERMISSION_DENIED, "permission denied");
            return false;
        }
        true
    }

    fn class_of(&self, topic: &str) -> Option<&crate::config::TopicClass> {
        let classes = &self.cfg.topics;
        classes
            .iter()
            .find(|c| crate::pubsub::topic::matches(&c.pattern, topic))
    }

    /// Whether `topic`'s class keeps history (`[[topics]]` `history_size`).
    fn keeps_history(&self, topic: &str) -> bool {
        self.class_of(topic).is_some_and(|c| c.history_size > 0)
    }

    /// Whether a subscriber of `topic` gets every offset (the SDKs call such a stream
    /// positioned): not when its class may skip frames (`conflate`, `drop_oldest`,
    /// `throttled`).
    fn gapless(&self, topic: &str) -> bool {
        use crate::config::{Delivery, SlowPolicy};
        self.class_of(topic).is_none_or(|c| {
            c.slow_policy == SlowPolicy::Disconnect && c.delivery != Delivery::Throttled
        })
    }

    fn centrifugo_subscribe(&mut self, key: u32, id: u32, s: cf::Subscribe<'_>) {
        let topic = s.channel.as_ref();
        if topic.starts_with(cf::PRESENCE_PREFIX) {
            // Presence events come as join and leave pushes of their channel (`join_leave`).
            return self.cf_error(key, id, error::UNKNOWN_CHANNEL, "unknown channel");
        }
        if !self.centrifugo_readable(key, id, topic) {
            return;
        }
        let conn = &self.conns[key];
        if conn.subs.iter().any(|t| **t == *topic) {
            return self.cf_error(key, id, error::ALREADY_SUBSCRIBED, "already subscribed");
        }
        if conn.subs.len() >= self.cfg.limits.subscriptions_per_conn_max {
            return self.cf_error(key, id, error::LIMIT_EXCEEDED, "limit exceeded");
        }
        let (wanted, answer) = if s.recover {
            // Empty or all zeros (the epoch of a topic nothing was published to yet): "not
            // known", compared by offset alone. One we never gave cannot match: recovery
            // fails (`recovered: false`).
            let epoch = match s.epoch.as_deref() {
                None | Some("") => 0,
                Some(e) => parse_epoch(e).unwrap_or(u64::MAX),
            };
            (
                vec![(topic.into(), Some((s.offset, epoch)))],
                SubAnswer::Recover,
            )
        } else {
            (Vec::new(), SubAnswer::Reply)
        };
        let id = itoa::Buffer::new().format(id).as_bytes().into();
        self.subscribe_accepted(key, Some(id), &[topic], wanted, answer, None);
        // Join and leave pushes: the channel's presence events (`presence.<channel>`, where its
        // class has `presence`), which a client that may read the channel may see.
        if s.join_leave && self.class_of(topic).is_some_and(|c| c.presence) {
            let events = format!("{}{topic}", cf::PRESENCE_PREFIX);
            if validate_topic(&events).is_ok()
                && !self.conns[key].subs.iter().any(|t| **t == *events)
            {
                self.subscribe_accepted(key, None, &[&events], Vec::new(), SubAnswer::Quiet, None);
            }
        }
    }

    /// Unsubscribes `key` from `channel` and from its join and leave pushes.
    fn centrifugo_drop(&mut self, key: u32, channel: &str) -> bool {
        self.drop_subscription(key, &format!("{}{channel}", cf::PRESENCE_PREFIX));
        self.drop_subscription(key, channel)
    }

    /// A subscribe completed (`recovery.rs`): the result, with the missed publications when
    /// the client recovered, then the frames held meanwhile.
    pub(crate) fn centrifugo_subscribed(
        &mut self,
        key: u32,
        p: PendingSub,
        mut held: Vec<(Box<str>, Vec<OutFrame>)>,
    ) {
        let id: u32 =
            p.id.as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        // Its channel was withdrawn while it waited (a reload or refresh took the right; the
        // client also got the `unsubscribe` push): refused, as a new subscribe would be.
        if p.topics.is_empty() {
            let msg = "permission denied";
            return self.cf_error(key, id, error::PERMISSION_DENIED, msg);
        }
        let Some(pos) = p.positions.into_iter().next() else {
            return;
        };
        let recovering = p.answer == SubAnswer::Recover;
        let recovered = recovering && pos.gap.is_none();
        let recoverable = self.keeps_history(&pos.topic);
        let positioned = self.gapless(&pos.topic);
        // Publications go with the result only when they continue the client's position (or
        // are a cache topic's last message): the SDKs deliver them whatever `recovered` says.
        let replay: &[crate::frame::SharedFrame] = if !recovering || recovered {
            &pos.replay
        } else {
            &[]
        };
        let pubs: Vec<(u64, &[u8])> = replay.iter().map(|f| (f.seq(), f.data())).collect();
        // Recovered: the position the client gave (its publications move it to the top).
        let offset = match (recovered, pubs.first()) {
            (true, Some((first, _))) => first - 1,
            _ => pos.seq,
        };
        let epoch = epoch_str(pos.epoch);
        let mut json = Vec::with_capacity(128 + replay.iter().map(|f| f.len()).sum::<usize>());
        cf::subscribe_result(
            &mut json,
            id,
            &cf::Subscribed {
                positioned,
                recoverable,
                epoch: &epoch,
                offset,
                recovering: recovering.then_some(recovered),
                publications: &pubs,
            },
        );
        if recovering && !recovered {
            self.stats.c.gaps += 1;
        }
        self.stats.c.replayed += pubs.len() as u64;
        let last = pubs.last().map_or(pos.seq, |(s, _)| *s);
        self.reply(key, &json);
        let frames = take_held(&mut held, &pos.topic);
        self.enqueue_held(key, frames, last);
    }

    fn centrifugo_publish(&mut self, key: u32, id: u32, topic: &str, data: &[u8]) {
        if let Err((code, msg)) = self.check_publish(topic, data.len()) {
            let code = match code {
                crate::protocol::ErrorCode::InvalidTopic => error::UNKNOWN_CHANNEL,
                _ => error::BAD_REQUEST,
            };
            return self.cf_error(key, id, code, &msg);
        }
        if !self.may_publish(key, topic) {
            self.stats.security(SecEvent::ForbiddenPublish);
            return self.cf_error(key, id, error::PERMISSION_DENIED, "permission denied");
        }
        let epoch = self.conns[key].epoch();
        let id = Some(itoa::Buffer::new().format(id).as_bytes().into());
        self.ingest_publish(
            topic,
            data.to_vec(),
            None,
            ReplyTo::Conn {
                conn: key,
                epoch,
                id,
            },
        );
    }

    /// The outcome of a Centrifugo client's publish (`publish.rs`).
    pub(crate) fn centrifugo_published(
        &mut self,
        key: u32,
        id: Option<&[u8]>,
        ok: bool,
        message: &str,
    ) {
        let id: u32 = id
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ok {
            self.reply_with(key, |out| cf::empty_result(out, id, "publish"));
        } else {
            // Capacity, broker down: worth retrying (temporary).
            self.cf_error(key, id, error::INTERNAL, message);
        }
    }
}
