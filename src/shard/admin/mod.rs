//! The admin HTTP API (docs/API.md): statistics, connections, topics, history, presence,
//! broadcast, disconnect and user messages. Every endpoint needs an admin token.
//!
//! A question about every shard is asked like `/metrics` asks for statistics: the shard the
//! request arrived on keeps one `Gather` in its HTTP waiter (`http::Waiters`), sends the [`AdminQuery`] to
//! each peer over the mesh (control messages: never dropped), answers its own part, and renders
//! the response once every part ([`AdminPart`]) is in. No shard ever touches another's state.
//! `/v1/topics` takes two rounds: the page of topics from their owners, then the subscriber
//! counts of those topics from every shard.
//!
//! Also here: the per-user index of each shard's connections (user messages, `/v1/online`,
//! disconnect by user) and presence events. Both cost nothing to connections and topics that
//! do not use them: the index is touched only when an identity is set or its connection
//! removed, presence only on (un)subscribes, and only when a topic class enables it.

//!
//! Files: `ask.rs` (requests parsed, questions sent to the shards), `answer.rs` (one shard's
//! part), `render.rs` (the JSON answer once every part is in), `users.rs` (per-user index,
//! presence, user messages).

mod answer;
mod ask;
mod dialect;
mod render;
mod users;

pub(crate) use dialect::CfAsk;

use ask::user_of_topic;
pub(crate) use render::{end, key, merge_users, num, render_user, string};
use render::{first_by, push_conn_id};

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use crate::{config::Config, frame::SharedFrame, stats::CloseReason};

/// A shard's admin state.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// Authenticated WebSocket connections by user (set with the identity, removed with the
    /// connection).
    users: HashMap<Box<str>, Vec<u32>>,
    /// Some `[[topics]]` class has `presence` on.
    presence: bool,
    /// Centrifugo `history` / `presence` / `presence_stats` commands waiting for the shards,
    /// by connection (key, epoch): at most `dialect::CF_GATHERS_PER_CONN` each.
    cf_gathers: HashMap<(u32, u32), u8>,
}

impl AdminState {
    pub(crate) fn new(cfg: &Config) -> AdminState {
        AdminState {
            users: HashMap::new(),
            presence: cfg.topics.iter().any(|c| c.presence),
            cf_gathers: HashMap::new(),
        }
    }

    /// A reloaded configuration (`reload.rs`).
    pub(crate) fn configure(&mut self, cfg: &Config) {
        self.presence = cfg.topics.iter().any(|c| c.presence);
    }
}

/// What a shard is asked.
#[derive(Debug, Clone)]
pub enum AdminQuery {
    Stats,
    Connections(Box<ConnFilter>),
    /// Queue this frame (built once by the asking shard) to every WebSocket connection.
    Broadcast(SharedFrame),
    /// Close the matching WebSocket connections with `code` and `reason`.
    Disconnect(Box<DisconnectReq>),
    /// Owned topics starting with `prefix`, after `after`, the first `limit` by name.
    Topics {
        prefix: Box<str>,
        after: Option<Box<str>>,
        limit: usize,
    },
    /// Connections with a pattern matching each topic.
    Subscribers(Arc<[Box<str>]>),
    /// The owner's retained frames of `topic` after `since` (`reverse`: before `since`, or all
    /// when it is 0, the newest first).
    History {
        topic: Box<str>,
        since: u64,
        limit: usize,
        bytes_max: usize,
        reverse: bool,
    },
    /// Users (and anonymous connections) subscribed to exactly this topic.
    Presence(Box<str>),
    /// Users with connections, after `after`, the first `limit` by name.
    Online {
        after: Option<Box<str>>,
        limit: usize,
    },
}

#[derive(Debug, Clone)]
pub struct ConnFilter {
    user: Option<Box<str>>,
    topic: Option<Box<str>>,
    /// With `topic`: only connections subscribed to exactly it (not through a wildcard).
    exact: bool,
    /// Only connections after this (shard, no).
    after: Option<(usize, u64)>,
    limit: usize,
}

#[derive(Debug, Clone)]
pub struct DisconnectReq {
    user: Option<Box<str>>,
    conn_no: Option<u64>,
    code: u16,
    reason: Box<str>,
}

/// One shard's answer.
#[derive(Debug)]
pub enum AdminPart {
    Stats(Box<Snapshot>),
    Connections(Vec<ConnInfo>),
    Count(usize),
    Topics(Vec<TopicInfo>),
    /// Per topic of the query, in its order.
    Subscribers(Vec<usize>),
    /// `None`: the owner does not know the topic.
    History(Option<Box<HistoryPart>>),
    Users {
        users: Vec<(Box<str>, usize)>,
        anonymous: usize,
    },
}

/// One shard's numbers for `GET /v1/stats`.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    shard: usize,
    connections: u64,
    websockets: u64,
    subscriptions: u64,
    patterns: u64,
    topics: u64,
    messages_in: u64,
    deliveries: u64,
    bytes_out: u64,
    queued_bytes: u64,
    largest_queue_bytes: u64,
    closes: [u64; CloseReason::ALL.len()],
    mesh_drops: u64,
    /// Frames skipped by `conflate` / `throttled` and dropped by `drop_oldest`.
    conflated: u64,
    dropped_oldest: u64,
}

impl Snapshot {
    fn add(&mut self, o: &Snapshot) {
        self.connections += o.connections;
        self.websockets += o.websockets;
        self.subscriptions += o.subscriptions;
        self.patterns += o.patterns;
        self.topics += o.topics;
        self.messages_in += o.messages_in;
        self.deliveries += o.deliveries;
        self.bytes_out += o.bytes_out;
        self.queued_bytes += o.queued_bytes;
        self.largest_queue_bytes = self.largest_queue_bytes.max(o.largest_queue_bytes);
        for (a, b) in self.closes.iter_mut().zip(o.closes.iter()) {
            *a += b;
        }
        self.mesh_drops += o.mesh_drops;
        self.conflated += o.conflated;
        self.dropped_oldest += o.dropped_oldest;
    }

    fn render(&self, out: &mut Vec<u8>) {
        num(out, "connections", self.connections);
        num(out, "websockets", self.websockets);
        num(out, "subscriptions", self.subscriptions);
        num(out, "patterns", self.patterns);
        num(out, "topics", self.topics);
        num(out, "messages_in", self.messages_in);
        num(out, "deliveries", self.deliveries);
        num(out, "bytes_out", self.bytes_out);
        num(out, "queued_bytes", self.queued_bytes);
        num(out, "largest_queue_bytes", self.largest_queue_bytes);
        num(
            out,
            "slow_consumer_closes",
            self.closes[CloseReason::SlowConsumer as usize],
        );
        key(out, "closes");
        out.push(b'{');
        for (r, n) in CloseReason::ALL.iter().zip(self.closes.iter()) {
            num(out, r.as_str(), *n);
        }
        end(out, b'}');
        out.push(b',');
        num(out, "conflated", self.conflated);
        num(out, "dropped_oldest", self.dropped_oldest);
        num(out, "mesh_drops", self.mesh_drops);
    }
}

#[derive(Debug)]
pub struct ConnInfo {
    shard: usize,
    no: u64,
    ip: IpAddr,
    user: Option<Box<str>>,
    age_s: u64,
    subs: Vec<Box<str>>,
    /// (pattern, canonical filter JSON) for each filtered subscription.
    filters: Vec<(Box<str>, Box<str>)>,
    queued_bytes: usize,
    /// Frames this connection skipped (`conflate`, `drop_oldest`, `throttled`).
    skipped: u32,
    tls: bool,
    /// `v1`, `centrifugo` or `binance` ([`crate::dialect::Dialect::as_str`]).
    protocol: &'static str,
}

#[derive(Debug)]
pub struct TopicInfo {
    name: Box<str>,
    seq: u64,
    epoch: u64,
    history: usize,
}

#[derive(Debug)]
pub struct HistoryPart {
    seq: u64,
    epoch: u64,
    frames: Vec<SharedFrame>,
}

/// An admin request collecting parts (in its HTTP waiter, `http::Waiters`).
pub(crate) struct Gather {
    pub(super) kind: Kind,
    /// Parts still to arrive.
    pending: usize,
    pub(super) parts: Vec<AdminPart>,
    /// Cluster mode: the other nodes' parts (`cluster_api`).
    pub(super) cluster: super::cluster_api::ClusterStep,
}

impl Gather {
    pub(super) fn new(kind: Kind, cluster: super::cluster_api::ClusterStep) -> Gather {
        Gather {
            kind,
            pending: 0,
            parts: Vec::new(),
            cluster,
        }
    }
}

/// What to render once every part is in.
pub(super) enum Kind {
    Stats,
    Connections {
        limit: usize,
    },
    /// `{"<field>": sum of counts}`.
    Count(&'static str),
    /// First round of `/v1/topics`.
    Topics {
        limit: usize,
    },
    /// Second round: subscriber counts for this page.
    TopicSubscribers {
        page: Vec<TopicInfo>,
        limit: usize,
    },
    History {
        topic: Box<str>,
    },
    Presence {
        topic: Box<str>,
    },
    Online {
        limit: usize,
    },
    /// A Centrifugo client's `history`, `presence` or `presence_stats`: answered on its
    /// connection (`dialect.rs`).
    Centrifugo(Box<CfAsk>),
}
