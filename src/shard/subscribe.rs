//! The `subscribe` and `unsubscribe` ops: patterns validated and checked against the
//! connection's rights and limits, the filter parsed within its bounds and interned in the
//! shard's table, the local index and interest updated, and the ack sent once every shard (and
//! the broker) knows of the new interest and every position asked for is in (`recovery.rs`).

use super::{
    State,
    recovery::{PendingSub, SubAnswer, Wanted},
};
use crate::{
    protocol::{self, ErrorCode, parse_epoch},
    pubsub::trie::is_wildcard,
    pubsub::{
        filter::{Filter, FilterError, FilterId, Refusal},
        index::{SubOutcome, UnsubOutcome},
        topic::{validate_pattern, validate_topic},
    },
    stats::SecEvent,
};

impl State {
    /// The `subscribe` op: invalid topics get an error each, the rest are subscribed (with
    /// `filter`, the raw JSON of the op's `filter`, replacing the filter a pattern had) and
    /// acknowledged together once other shards know of any new interest. A filter that is
    /// refused refuses the whole request.
    pub(crate) fn subscribe(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        topics: &[std::borrow::Cow<'_, str>],
        since: &[protocol::Since<'_>],
        filter: Option<&[u8]>,
    ) {
        let filter = match filter.map(|raw| Filter::parse(raw, &self.cfg.limits.filter())) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(f))) => Some(f),
            Some(Err(e)) => return self.filter_refused(key, id.as_deref(), e),
        };
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
        let sub_max = self.cfg.limits.subscriptions_per_conn_max;
        if accepted.is_empty() {
            return;
        }
        let conn = &self.conns[key];
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
        let filter = match filter {
            None => None,
            Some(f) => match self.index.intern(&f, self.cfg.limits.filters_per_shard_max) {
                Ok(fid) => Some(fid),
                Err(_) => {
                    let max = self.cfg.limits.filters_per_shard_max;
                    let message = format!(
                        "this shard holds {max} distinct filters, its limit \
                         (limits.filters_per_shard_max): subscribe with a filter already in \
                         use, without one, or later"
                    );
                    let refusal = Refusal::Table;
                    return self.filter_refused(
                        key,
                        id.as_deref(),
                        FilterError { refusal, message },
                    );
                }
            },
        };
        // Positions: every topic named in `since` that one of the accepted patterns covers
        // (and, in `subscribe_accepted`, every exact topic of the request).
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
        self.subscribe_accepted(key, id, &accepted, wanted, SubAnswer::Reply, filter);
        if let Some(fid) = filter {
            // The subscriptions hold it now (or nothing does, and it goes).
            self.index.release_filter(fid);
        }
    }

    /// A subscribe refused for its filter: counted by reason and answered (`capacity` for a
    /// full table, `bad_request` otherwise); nothing of the request was done.
    fn filter_refused(&mut self, key: u32, id: Option<&[u8]>, e: FilterError) {
        self.stats.c.filter_rejects[e.refusal as usize] += 1;
        let code = match e.refusal {
            Refusal::Table => ErrorCode::Capacity,
            _ => ErrorCode::BadRequest,
        };
        self.reply_with(key, |out| protocol::error(out, id, code, &e.message, None));
    }

    /// Subscribes `key` to `accepted` (valid patterns it may have, within its limit) with
    /// `filter` (held by the caller; protocol v1 only), every protocol alike: the local index
    /// and interest updated, then the answer (`answer`) once every shard (and the broker) knows
    /// of the new interest and the position of every topic in `wanted` (with the client's
    /// `since`) and of every exact topic of `accepted` is in. A pattern already held gets
    /// `filter` in place of the one it had (listed in the v1 ack's `replaced` if it changed).
    pub(crate) fn subscribe_accepted(
        &mut self,
        key: u32,
        id: Option<Box<[u8]>>,
        accepted: &[&str],
        mut wanted: Vec<Wanted>,
        answer: SubAnswer,
        filter: Option<FilterId>,
    ) {
        let mut need = 0;
        let mut replaced = Vec::new();
        for topic in accepted {
            match self.index.subscribe(topic, key, filter) {
                SubOutcome::Added { first } => {
                    self.conns[key].subs.push((*topic).into());
                    self.presence_changed(key, topic, true);
                    if first {
                        self.interest_changed(topic, true);
                    }
                }
                SubOutcome::Refiltered => replaced.push((*topic).into()),
                SubOutcome::AlreadySubscribed => {}
            }
            need = need.max(self.interest.needed_for(topic));
        }
        for t in accepted {
            if !is_wildcard(t) && !wanted.iter().any(|(w, _)| **w == **t) {
                wanted.push(((*t).into(), None));
            }
        }
        let token = self.recovery.wait(PendingSub {
            conn: key,
            epoch: self.conns[key].epoch(),
            need,
            id,
            topics: accepted.iter().map(|t| (*t).into()).collect(),
            waiting: wanted.len(),
            positions: Vec::with_capacity(wanted.len()),
            answer,
            cancelled: Vec::new(),
            replaced,
        });
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
            self.drop_subscription(key, topic);
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
        let max = self.cfg.limits.topics_per_request_max;
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

    /// Unsubscribes `key` from `pattern` if it is subscribed (its other subscriptions keep
    /// their order: `GET /v1/connections`, Binance's `LIST_SUBSCRIPTIONS`); whether it was.
    pub(crate) fn drop_subscription(&mut self, key: u32, pattern: &str) -> bool {
        let subs = &mut self.conns[key].subs;
        let Some(i) = subs.iter().position(|s| **s == *pattern) else {
            return false;
        };
        subs.remove(i);
        self.unsubscribe_pattern(pattern, key);
        self.cancel_pending(key, pattern, false);
        true
    }

    /// Removes `key` from `pattern` in the index; tells peers when it was the last one here.
    pub(crate) fn unsubscribe_pattern(&mut self, pattern: &str, key: u32) {
        self.forget_paced_pattern(key, pattern);
        let outcome = self.index.unsubscribe(pattern, key);
        if let UnsubOutcome::Removed { last } = outcome {
            self.presence_changed(key, pattern, false);
            if last {
                self.interest_changed(pattern, false);
            }
        }
    }
}
