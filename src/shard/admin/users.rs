//! The per-user index of a shard's connections (user messages, `/v1/online`, disconnect by
//! user) and presence events (`presence.<topic>`). Both cost nothing to connections and
//! topics that do not use them.

use super::*;
use crate::shard::{
    State,
    conn::{Conn, Phase},
};
use crate::{
    frame::OutFrame,
    protocol::push_json_str,
    publish::ReplyTo,
    pubsub::{
        topic::{matches, validate_topic},
        trie::is_wildcard,
    },
};

impl State {
    /// Connection `key` got its identity (upgrade or first `auth`): index it by user, and
    /// announce it on the presence topics it already subscribed to.
    pub(in crate::shard) fn user_indexed(&mut self, key: u32) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(ident) = &conn.ident else {
            return;
        };
        let user = ident.user.clone();
        match self.admin.users.get_mut(&*user) {
            Some(keys) => keys.push(key),
            None => {
                self.admin.users.insert(user.clone(), vec![key]);
            }
        }
        if self.admin.presence && !conn.subs.is_empty() {
            let (no, subs) = (conn.no, conn.subs.clone());
            for topic in &subs {
                self.presence_event(&user, no, topic, true);
            }
        }
    }

    /// Connection `conn` (slab key `key`) was removed: out of the user index, `leave` on its
    /// presence topics.
    pub(in crate::shard) fn conn_gone(&mut self, key: u32, conn: &Conn) {
        let Some(ident) = &conn.ident else {
            return;
        };
        if let Some(keys) = self.admin.users.get_mut(&*ident.user) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.admin.users.remove(&*ident.user);
            }
        }
        if self.admin.presence {
            for topic in &conn.subs {
                self.presence_event(&ident.user, conn.no, topic, false);
            }
        }
    }

    /// Connection `key` subscribed to (`join`) or unsubscribed from `pattern`.
    pub(in crate::shard) fn presence_changed(&mut self, key: u32, pattern: &str, join: bool) {
        if !self.admin.presence {
            return;
        }
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(ident) = &conn.ident else {
            return;
        };
        let (user, no) = (ident.user.clone(), conn.no);
        self.presence_event(&user, no, pattern, join);
    }

    /// Publishes `{"event":"join"|"leave","user":..,"conn":..}` to `presence.<topic>` if
    /// `topic` is an exact topic whose class has presence on (and the presence topic is not
    /// over the topic length limit).
    pub(super) fn presence_event(&mut self, user: &str, no: u64, topic: &str, join: bool) {
        if is_wildcard(topic) || topic.starts_with("presence.") || !has_presence(&self.cfg, topic) {
            return;
        }
        self.publish_presence(user, no, topic, join);
    }

    /// A reload changed which classes have presence (`reload.rs`; `old`: the configuration
    /// before): the members of exact topics whose class turned it on `join`, of those whose
    /// class turned it off `leave`, so a presence view never keeps a ghost nor loses a member.
    pub(in crate::shard) fn presence_reclassed(&mut self, old: &Config) {
        if !self.admin.presence && !old.topics.iter().any(|c| c.presence) {
            return;
        }
        let mut events = Vec::new();
        for (_, conn) in self.conns.iter() {
            let Some(ident) = conn.ident.as_ref().filter(|_| conn.phase == Phase::Ws) else {
                continue;
            };
            for topic in &conn.subs {
                if is_wildcard(topic) || topic.starts_with("presence.") {
                    continue;
                }
                let now = has_presence(&self.cfg, topic);
                if has_presence(old, topic) != now {
                    events.push((ident.user.clone(), conn.no, topic.clone(), now));
                }
            }
        }
        for (user, no, topic, join) in events {
            self.publish_presence(&user, no, &topic, join);
        }
    }

    /// Publishes a presence event of `topic` (see [`State::presence_event`]).
    fn publish_presence(&mut self, user: &str, no: u64, topic: &str, join: bool) {
        let presence_topic = format!("presence.{topic}");
        if validate_topic(&presence_topic).is_err() {
            return;
        }
        let mut data = Vec::with_capacity(64 + user.len());
        data.extend_from_slice(b"{\"event\":\"");
        data.extend_from_slice(if join { b"join" } else { b"leave" });
        data.extend_from_slice(b"\",\"user\":");
        push_json_str(&mut data, user);
        data.extend_from_slice(b",\"conn\":\"");
        push_conn_id(&mut data, self.shard, no);
        data.extend_from_slice(b"\"}");
        self.ingest_publish(&presence_topic, data, None, ReplyTo::None);
    }

    /// A user message's frame: to local subscribers of its topic and to every local connection
    /// of its user, once each.
    pub(in crate::shard) fn deliver_user(&mut self, frame: OutFrame) {
        self.deliver_local(frame.topic(), frame.clone());
        let Some(keys) = user_of_topic(frame.topic()).and_then(|u| self.admin.users.get(u)) else {
            return;
        };
        let keys = keys.clone();
        // `deliver_local` stamped every connection it visited with this round.
        let round = self.conns.round();
        for key in keys {
            let conn = &mut self.conns[key];
            // A dialect's client gets a user's messages only on a channel or stream it
            // subscribed (above): its protocol has no frame for unsolicited ones.
            if conn.dialect != crate::dialect::Dialect::V1 || !conn.takes_round(round) {
                continue;
            }
            if conn.recovering && self.recovering_frame(key, &frame) {
                continue;
            }
            self.enqueue(key, frame.clone());
        }
    }
}

/// Whether the class of exact topic `topic` has presence on in `cfg`.
fn has_presence(cfg: &Config, topic: &str) -> bool {
    let class = cfg.topics.iter().find(|c| matches(&c.pattern, topic));
    class.is_some_and(|c| c.presence)
}
