//! Binance market streams on the shard (docs/DIALECTS.md; the wire format is
//! `crate::dialect::binance`): the upgrade under `binance.prefix` with the streams its URL
//! names, and the control requests. Streams are topics (by the `[[binance.streams]]`
//! templates), so subscriptions, permissions, fan-out and metrics are the core's.

use super::{State, http::Answer, recovery::SubAnswer};
use crate::{
    dialect::{
        Dialect, Format,
        binance::{self, Request},
    },
    pubsub::topic::validate_topic,
    stats::{CloseReason, SecEvent},
    ws::{close as cc, http::Request as HttpRequest},
};

/// A stream name refused: why, in words a client can act on.
fn unknown_stream(name: &str) -> String {
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    format!(
        "invalid stream `{shown}`: stream names are lower case (what a stream template reads \
         must map back to the same name) and one topic segment (letters, digits, `_:@-`)"
    )
}

impl State {
    /// A request under `binance.prefix`: `None` if its path is not a stream path (404 then).
    pub(super) fn binance_route(&mut self, key: u32, req: &HttpRequest<'_>) -> Option<Answer> {
        let b = &self.cfg.binance;
        let rest = req.path.strip_prefix(b.prefix.as_str())?;
        let target = binance::target(rest, req.query)?;
        let keep_alive = req.keep_alive;
        if req.method != crate::ws::http::Method::Get {
            return Some(self.upgrade_method_not_allowed(key, req));
        }
        let max = b.streams_per_conn_max;
        let topics = match self.binance_topics(&target.streams, 0, max) {
            Ok(topics) => topics,
            Err(msg) => {
                self.respond_error(key, 400, "invalid_stream", &msg, keep_alive);
                return Some(Answer::Responded { keep_alive });
            }
        };
        let format = if target.combined {
            Format::BinanceCombined
        } else {
            Format::BinanceRaw
        };
        let answer = self.upgrade(key, req, false, Dialect::Binance, format);
        if matches!(answer, Answer::Upgraded) && !topics.is_empty() {
            let names: Vec<&str> = target.streams.iter().map(|s| s.as_ref()).collect();
            if self.binance_permitted(key, &names, &topics, None) {
                let accepted: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.subscribe_accepted(key, None, &accepted, Vec::new(), SubAnswer::Quiet, None);
            }
        }
        Some(answer)
    }

    /// The topics of stream `names`, each once, if every name is known and `held + new`
    /// stays within `max`; the answer for the client if not.
    fn binance_topics<S: AsRef<str>>(
        &self,
        names: &[S],
        held: usize,
        max: usize,
    ) -> Result<Vec<String>, String> {
        let mut topics: Vec<String> = Vec::with_capacity(names.len());
        binance::with_streams(|m| {
            for name in names {
                let name = name.as_ref();
                let topic = m
                    .topic_of(name)
                    .filter(|t| validate_topic(t).is_ok())
                    .ok_or_else(|| unknown_stream(name))?;
                if !topics.contains(&topic) {
                    topics.push(topic);
                }
            }
            Ok::<(), String>(())
        })?;
        if held + topics.len() > max {
            return Err(format!(
                "{held} streams held, {} more requested; the limit is {max}",
                topics.len()
            ));
        }
        Ok(topics)
    }

    /// Whether `key` may subscribe to every one of `topics` (streams `names`); if not, the
    /// client is told (`id`: a `SUBSCRIBE`'s error reply; `None`: streams of the URL, close
    /// 4003) and nothing is subscribed.
    fn binance_permitted(
        &mut self,
        key: u32,
        names: &[&str],
        topics: &[String],
        id: Option<&[u8]>,
    ) -> bool {
        let Some(i) = topics.iter().position(|t| !self.may_subscribe(key, t)) else {
            return true;
        };
        self.stats.security(SecEvent::ForbiddenSubscribe);
        let name = names
            .iter()
            .find(|n| binance::with_streams(|m| m.topic_of(n)).as_deref() == Some(&topics[i]))
            .copied()
            .unwrap_or(&topics[i]);
        let msg = format!("no permission to subscribe to `{name}`");
        match id {
            Some(id) => self.reply_with(key, |out| {
                binance::error(out, Some(id), 2, &format!("Invalid request: {msg}"))
            }),
            None => self.close_code(key, cc::FORBIDDEN, &msg, CloseReason::Rejected),
        }
        false
    }

    /// A text message on a Binance connection: one control request.
    pub(crate) fn binance_message(&mut self, key: u32, text: &[u8]) {
        let max = self.cfg.binance.streams_per_conn_max;
        let (id, req) = binance::parse(text, max);
        let id: Option<Box<[u8]>> = id.map(Into::into);
        let req = match req {
            Ok(req) => req,
            Err(r) => {
                return self.reply_with(key, |out| {
                    binance::error(out, id.as_deref(), r.code, &r.msg)
                });
            }
        };
        match req {
            Request::Subscribe(names) => {
                let held = self.conns[key].subs.len();
                let fresh: Vec<&String> = names.iter().collect();
                let topics = match self.binance_topics(&fresh, 0, usize::MAX) {
                    Ok(t) => t,
                    Err(msg) => {
                        let msg = format!("Invalid request: {msg}");
                        return self
                            .reply_with(key, |out| binance::error(out, id.as_deref(), 2, &msg));
                    }
                };
                let subs = &self.conns[key].subs;
                let new = topics
                    .iter()
                    .filter(|t| !subs.iter().any(|s| **s == ***t))
                    .count();
                if held + new > max {
                    let msg = format!(
                        "Invalid request: {held} streams held, {new} more requested; the limit \
                         is {max}"
                    );
                    return self.reply_with(key, |out| binance::error(out, id.as_deref(), 2, &msg));
                }
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                if !self.binance_permitted(
                    key,
                    &names,
                    &topics,
                    Some(id.as_deref().unwrap_or(b"null")),
                ) {
                    return;
                }
                let accepted: Vec<&str> = topics.iter().map(String::as_str).collect();
                self.subscribe_accepted(key, id, &accepted, Vec::new(), SubAnswer::Reply, None);
            }
            Request::Unsubscribe(names) => {
                // Unknown names are ignored, as Binance does: unsubscribing is idempotent.
                let topics: Vec<String> =
                    binance::with_streams(|m| names.iter().filter_map(|n| m.topic_of(n)).collect());
                for topic in &topics {
                    self.drop_subscription(key, topic);
                }
                self.reply_with(key, |out| binance::result_null(out, id.as_deref()));
            }
            Request::List => {
                let names: Vec<String> = binance::with_streams(|m| {
                    self.conns[key]
                        .subs
                        .iter()
                        .filter_map(|t| m.stream_of(t))
                        .collect()
                });
                self.reply_with(key, |out| {
                    binance::result_list(out, id.as_deref(), names.iter().map(String::as_str))
                });
            }
            Request::SetCombined(on) => {
                let format = if on {
                    Format::BinanceCombined
                } else {
                    Format::BinanceRaw
                };
                self.conns[key].out.set_format(format);
                self.reply_with(key, |out| binance::result_null(out, id.as_deref()));
            }
            Request::GetCombined => {
                let on = self.conns[key].out.format() == Format::BinanceCombined as u8;
                self.reply_with(key, |out| binance::result_bool(out, id.as_deref(), on));
            }
        }
    }
}
