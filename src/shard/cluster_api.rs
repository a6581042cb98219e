//! Cluster-wide admin answers (docs/API.md "Cluster"): `GET /v1/cluster`, and the other
//! nodes' parts of `/v1/presence` and `/v1/online`.
//!
//! The asking shard gathers its node's parts as usual; then, in cluster mode, it asks the
//! bridge for every other live node's part ([`Cmd::Query`]). On each of those nodes the
//! bridge hands the query to shard 0 ([`QueryLocal`]), which gathers its node's part the same
//! way and returns it as JSON. A node that does not answer within `cluster.query_timeout_ms`
//! is named in `nodes_missing`. Nothing is stored at the broker, so a dead node's
//! connections vanish from the answers as soon as it stops answering.

use std::sync::atomic::Ordering;

use super::{
    State,
    admin::{AdminPart, AdminQuery, Gather, Kind, end, key, merge_users, num, render_user, string},
    http::Answer,
};
use crate::cluster::{Cmd, QueryLocal, QueryReply};

/// Where a gather stands with the other nodes.
#[derive(Debug, Default)]
pub(crate) enum ClusterStep {
    /// This node only (memory mode, or an endpoint that is per node).
    #[default]
    None,
    /// Once this node's parts are in, ask the other nodes this (JSON).
    Ask(Box<str>),
    /// Asked; waiting for the bridge's answer.
    Asked,
    /// The other nodes' parts are in; these nodes did not answer in time.
    Done(Vec<String>),
    /// A query from another node: this node's part goes back through the channel.
    Reply(Option<tokio::sync::oneshot::Sender<Vec<u8>>>),
}

impl State {
    /// The cluster step of an admin query: presence and online users are cluster-wide.
    pub(super) fn cluster_step(&self, query: &AdminQuery) -> ClusterStep {
        if self.shared.bridge.is_none() {
            return ClusterStep::None;
        }
        let ask = match query {
            AdminQuery::Presence(topic) => serde_json::json!({"q": "presence", "topic": &**topic}),
            AdminQuery::Online { after, limit } => {
                serde_json::json!({"q": "online", "after": after.as_deref(), "limit": limit})
            }
            _ => return ClusterStep::None,
        };
        ClusterStep::Ask(ask.to_string().into())
    }

    /// Whether gather `token` must wait for other nodes (asking them the first time), or
    /// was another node's question (answered here).
    pub(super) fn cluster_parts_pending(&mut self, token: usize) -> bool {
        let shard = self.shard as u8;
        let bridge = self.shared.bridge.clone();
        let Some(g) = self.gather_mut(token) else {
            return false;
        };
        match std::mem::take(&mut g.cluster) {
            ClusterStep::Ask(path) => {
                g.cluster = ClusterStep::Asked;
                if let Some(bridge) = bridge {
                    bridge.send(Cmd::Query {
                        shard,
                        token: token as u32,
                        path,
                    });
                }
                true
            }
            ClusterStep::Asked => {
                g.cluster = ClusterStep::Asked;
                true
            }
            ClusterStep::Reply(tx) => {
                let (users, anonymous) = merge_users(std::mem::take(&mut g.parts));
                let mut out = Vec::with_capacity(64 + 32 * users.len());
                out.push(b'{');
                key(&mut out, "users");
                out.push(b'[');
                for u in &users {
                    render_user(&mut out, u);
                    out.push(b',');
                }
                end(&mut out, b']');
                out.push(b',');
                num(&mut out, "anonymous", anonymous as u64);
                end(&mut out, b'}');
                if let Some(tx) = tx {
                    let _ = tx.send(out);
                }
                // Answered through the bridge's channel, not the waiter's.
                drop(self.http_waiters.take(token));
                true
            }
            other => {
                g.cluster = other;
                false
            }
        }
    }

    /// The other nodes' parts arrived: merged, then the answer is rendered.
    pub(crate) fn query_reply(&mut self, r: QueryReply) {
        #[derive(serde::Deserialize)]
        struct User {
            user: String,
            connections: usize,
        }
        #[derive(serde::Deserialize)]
        struct Part {
            users: Vec<User>,
            anonymous: usize,
        }
        let Some(g) = self.gather_mut(r.token as usize) else {
            return;
        };
        for (node, body) in r.parts {
            match serde_json::from_slice::<Part>(&body) {
                Ok(p) => g.parts.push(AdminPart::Users {
                    users: p
                        .users
                        .into_iter()
                        .map(|u| (u.user.into(), u.connections))
                        .collect(),
                    anonymous: p.anonymous,
                }),
                Err(e) => {
                    crate::warn_sampled!(node, error = %e, "cluster: unreadable query answer")
                }
            }
        }
        g.cluster = ClusterStep::Done(r.missing);
        self.admin_complete(r.token as usize);
    }

    /// `"nodes_missing":[…],` when some node did not answer.
    pub(super) fn render_missing_nodes(&mut self, token: usize, out: &mut Vec<u8>) {
        let Some(ClusterStep::Done(missing)) = self.gather_mut(token).map(|g| &g.cluster) else {
            return;
        };
        if missing.is_empty() {
            return;
        }
        key(out, "nodes_missing");
        out.push(b'[');
        for n in missing {
            crate::protocol::push_json_str(out, n);
            out.push(b',');
        }
        end(out, b']');
        out.push(b',');
    }

    /// Another node's presence or online query: this node's part, gathered from its shards.
    pub(crate) fn query_local(&mut self, q: QueryLocal) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&q.path) else {
            return;
        };
        let (query, kind) = match v["q"].as_str() {
            Some("presence") => {
                let Some(topic) = v["topic"].as_str() else {
                    return;
                };
                (
                    AdminQuery::Presence(topic.into()),
                    Kind::Presence {
                        topic: topic.into(),
                    },
                )
            }
            Some("online") => {
                let limit = v["limit"].as_u64().unwrap_or(1) as usize;
                let after = v["after"].as_str().map(Into::into);
                (AdminQuery::Online { after, limit }, Kind::Online { limit })
            }
            _ => return,
        };
        let gather = Gather::new(kind, ClusterStep::Reply(q.reply));
        let (token, _) = self.http_waiters.add(false, Some(Box::new(gather)));
        let all = self.all_shards();
        self.admin_send(token, query, all);
    }

    /// `GET /v1/cluster`: the engine, this node and every live node (from heartbeats).
    pub(super) fn cluster_status(&mut self, keep_alive: bool) -> Answer {
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        let connections = self.shared.connections.load(Ordering::Relaxed) as u64;
        let leader = self.shared.bridge.as_ref().is_some_and(|b| b.is_leader());
        let me = |out: &mut Vec<u8>, id: &str| {
            out.push(b'{');
            string(out, "node", id);
            out.extend_from_slice(b"\"self\":true,");
            if leader {
                out.extend_from_slice(b"\"leader\":true,");
            }
            num(out, "connections", connections);
            num(out, "shards", self.shared.shards as u64);
            string(out, "addr", &self.shared.local_addr.to_string());
            num(out, "age_ms", 0);
            end(out, b'}');
        };
        match &self.shared.bridge {
            None => {
                string(&mut out, "engine", "memory");
                key(&mut out, "nodes");
                out.push(b'[');
                me(&mut out, "local");
                out.extend_from_slice(b"],");
            }
            Some(b) => {
                let engine = match b.engine {
                    crate::config::Engine::Nats => "nats",
                    crate::config::Engine::Redis => "redis",
                    crate::config::Engine::Memory => "memory",
                };
                string(&mut out, "engine", engine);
                string(&mut out, "node", &b.node_id);
                string(&mut out, "broker", if b.is_up() { "up" } else { "down" });
                if b.live_in_shard {
                    string(&mut out, "live", if b.is_live_up() { "up" } else { "down" });
                }
                key(&mut out, "nodes");
                out.push(b'[');
                me(&mut out, &b.node_id);
                out.push(b',');
                for n in b.nodes() {
                    out.push(b'{');
                    string(&mut out, "node", &n.id);
                    num(&mut out, "connections", n.connections);
                    num(&mut out, "shards", n.shards);
                    string(&mut out, "addr", &n.addr);
                    num(&mut out, "started", n.started_unix_s);
                    num(&mut out, "age_ms", n.age_ms());
                    end(&mut out, b'}');
                    out.push(b',');
                }
                end(&mut out, b']');
                out.push(b',');
            }
        }
        end(&mut out, b'}');
        let (token, rx) = self.http_waiters.add(keep_alive, None);
        self.admin_respond(token, 200, out);
        Answer::Await(rx)
    }
}
