//! One shard's part of an admin answer: its numbers, connections, topics, history, users;
//! and the actions (broadcast, disconnect) applied to its own connections.

use std::{collections::HashMap, rc::Rc};

use super::*;
use crate::dialect::Dialect;
use crate::shard::{
    State,
    conn::{Conn, Phase},
};
use crate::{
    frame::{OutFrame, SharedFrame, monotonic_ns},
    stats::CloseReason,
};

impl State {
    /// This shard's part.
    pub(super) fn admin_answer(&mut self, query: AdminQuery) -> AdminPart {
        match query {
            AdminQuery::Stats => AdminPart::Stats(Box::new(self.snapshot())),
            AdminQuery::Connections(f) => AdminPart::Connections(self.list_connections(&f)),
            AdminQuery::Broadcast(frame) => AdminPart::Count(self.broadcast(frame)),
            AdminQuery::Disconnect(d) => AdminPart::Count(self.disconnect(&d)),
            AdminQuery::Topics {
                prefix,
                after,
                limit,
            } => {
                let mut page: Vec<_> = self
                    .topics
                    .iter()
                    .filter(|(name, _)| {
                        name.starts_with(&*prefix) && after.as_deref().is_none_or(|a| ***name > *a)
                    })
                    .collect();
                first_by(&mut page, limit, |a, b| a.0.cmp(b.0));
                let v = page
                    .into_iter()
                    .map(|(name, t)| TopicInfo {
                        name: name.clone(),
                        seq: t.seq,
                        epoch: t.epoch,
                        history: t.history.as_ref().map_or(0, |h| h.retained()),
                    })
                    .collect();
                AdminPart::Topics(v)
            }
            AdminQuery::Subscribers(topics) => {
                let counts = topics
                    .iter()
                    .map(|t| {
                        let mut keys = Vec::new();
                        self.index.for_each_subscriber(t, |k| keys.push(k));
                        keys.sort_unstable();
                        keys.dedup();
                        keys.iter()
                            .filter(|k| self.conns[**k].phase == Phase::Ws)
                            .count()
                    })
                    .collect();
                AdminPart::Subscribers(counts)
            }
            AdminQuery::History {
                topic,
                since,
                limit,
                bytes_max,
                reverse,
            } => {
                let now_ns = monotonic_ns();
                AdminPart::History(self.topics.get_mut(&topic).map(|t| {
                    let frames = t
                        .history
                        .as_mut()
                        .map(|h| h.page(since, limit, bytes_max, reverse, now_ns))
                        .unwrap_or_default();
                    Box::new(HistoryPart {
                        seq: t.seq,
                        epoch: t.epoch,
                        frames,
                    })
                }))
            }
            AdminQuery::Presence(topic) => {
                let mut users: HashMap<Box<str>, usize> = HashMap::new();
                let mut anonymous = 0;
                self.index.for_each_exact(&topic, |k| {
                    let conn = &self.conns[k];
                    if conn.phase != Phase::Ws {
                        return;
                    }
                    match &conn.ident {
                        Some(i) => *users.entry(i.user.clone()).or_default() += 1,
                        None => anonymous += 1,
                    }
                });
                AdminPart::Users {
                    users: users.into_iter().collect(),
                    anonymous,
                }
            }
            AdminQuery::Online { after, limit } => {
                let mut users: Vec<(Box<str>, usize)> = self
                    .admin
                    .users
                    .iter()
                    .filter(|(u, _)| after.as_deref().is_none_or(|a| ***u > *a))
                    .map(|(u, keys)| {
                        let open = keys
                            .iter()
                            .filter(|k| self.conns[**k].phase == Phase::Ws)
                            .count();
                        (u.clone(), open)
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect();
                first_by(&mut users, limit, |a, b| a.0.cmp(&b.0));
                AdminPart::Users {
                    users,
                    anonymous: 0,
                }
            }
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let c = &self.stats.c;
        let mut s = Snapshot {
            shard: self.shard,
            connections: self.conns.len() as u64,
            subscriptions: self.index.subscription_count() as u64,
            patterns: self.index.pattern_count() as u64,
            topics: self.topics.len() as u64,
            messages_in: c.messages_in,
            deliveries: c.deliveries,
            bytes_out: c.bytes_out,
            closes: c.closed,
            mesh_drops: c.mesh_drops,
            conflated: c.conflated,
            dropped_oldest: c.dropped_oldest,
            ..Snapshot::default()
        };
        for (_, conn) in self.conns.iter() {
            let queued = conn.out.bytes() as u64;
            s.queued_bytes += queued;
            s.largest_queue_bytes = s.largest_queue_bytes.max(queued);
            s.websockets += u64::from(conn.phase == Phase::Ws);
        }
        s
    }

    pub(super) fn list_connections(&self, f: &ConnFilter) -> Vec<ConnInfo> {
        let keys: Vec<u32> = match &f.topic {
            Some(t) => {
                let mut keys = Vec::new();
                if f.exact {
                    self.index.for_each_exact(t, |k| keys.push(k));
                } else {
                    self.index.for_each_subscriber(t, |k| keys.push(k));
                }
                keys.sort_unstable();
                keys.dedup();
                keys
            }
            None => self.conns.iter().map(|(k, _)| k).collect(),
        };
        // The page is chosen first; only its entries are copied out.
        let mut page: Vec<(u32, &Conn)> = keys
            .into_iter()
            .map(|k| (k, &self.conns[k]))
            .filter(|(_, c)| c.phase == Phase::Ws && !c.echo)
            .filter(|(_, c)| f.after.is_none_or(|a| (self.shard, c.no) > a))
            .filter(|(_, c)| {
                f.user
                    .as_deref()
                    .is_none_or(|u| c.ident.as_ref().is_some_and(|i| *i.user == *u))
            })
            .collect();
        first_by(&mut page, f.limit, |a, b| a.1.no.cmp(&b.1.no));
        page.into_iter()
            .map(|(key, c)| ConnInfo {
                shard: self.shard,
                no: c.no,
                ip: c.ip(),
                user: c.ident.as_ref().map(|i| i.user.clone()),
                age_s: (self.now_ms / 1000).saturating_sub(u64::from(c.accepted_s)),
                subs: c.subs.clone(),
                // Canonical filter texts (JSON) of the filtered patterns, in `subs`' order.
                filters: c
                    .subs
                    .iter()
                    .filter_map(|p| {
                        let f = self.index.filter_of(p, key)?;
                        Some((p.clone(), Box::<str>::from(f.canonical())))
                    })
                    .collect(),
                queued_bytes: c.out.bytes(),
                skipped: c.skipped,
                tls: c.tls.is_some(),
                protocol: c.dialect.as_str(),
            })
            .collect()
    }

    /// Queues a broadcast frame to every WebSocket connection that has a form of it (protocol
    /// v1: the frame; Centrifugo: a `message` push with the same `data`, built once per shard;
    /// Binance streams have none); returns how many.
    pub(super) fn broadcast(&mut self, frame: SharedFrame) -> usize {
        let frame: OutFrame = Rc::new(frame);
        let keys: Vec<(u32, Dialect)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Ws && !c.echo && c.dialect != Dialect::Binance)
            .map(|(k, c)| (k, c.dialect))
            .collect();
        let mut centrifugo: Option<OutFrame> = None;
        for (key, dialect) in &keys {
            if dialect.is_centrifugo() {
                let push = centrifugo.get_or_insert_with(|| {
                    // `{"op":"broadcast","ts":…,"data":<data>}`, built by `broadcast_query`.
                    let payload = frame.wire(0);
                    let data = payload
                        .windows(8)
                        .position(|w| w == b",\"data\":")
                        .map_or(&b"null"[..], |at| &payload[at + 8..payload.len() - 1]);
                    let mut json = Vec::with_capacity(data.len() + 32);
                    crate::dialect::centrifugo::message_push(&mut json, data);
                    Rc::new(std::sync::Arc::new(crate::frame::text_frame(&json)))
                });
                self.enqueue(*key, push.clone());
            } else {
                self.enqueue(*key, frame.clone());
            }
        }
        keys.len()
    }

    /// Closes the WebSocket connections `d` names; returns how many.
    pub(super) fn disconnect(&mut self, d: &DisconnectReq) -> usize {
        let keys: Vec<u32> = match (&d.user, d.conn_no) {
            (Some(u), _) => self.admin.users.get(&**u).cloned().unwrap_or_default(),
            (None, Some(no)) => self
                .conns
                .iter()
                .filter(|(_, c)| c.no == no)
                .map(|(k, _)| k)
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut n = 0;
        for key in keys {
            if self.conns[key].phase == Phase::Ws {
                // The operator's code as given, on every protocol (Centrifugo's SDKs reconnect
                // on 4000-4499 and stop on 4500-4999, the latter only with a reason: they get
                // one always).
                let centrifugo = self.conns[key].dialect.is_centrifugo();
                let reason = if d.reason.is_empty() && centrifugo {
                    "disconnect"
                } else {
                    &d.reason
                };
                let mut frame = Vec::with_capacity(4 + reason.len());
                crate::ws::frame::encode_close(&mut frame, d.code, reason);
                self.close_with(key, frame, CloseReason::Admin);
                n += 1;
            }
        }
        n
    }
}
