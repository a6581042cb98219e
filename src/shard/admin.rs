//! The admin HTTP API (docs/API.md): statistics, connections, topics, history, presence,
//! broadcast, disconnect and user messages. Every endpoint needs an admin token.
//!
//! A question about every shard is asked like `/metrics` asks for statistics: the shard the
//! request arrived on keeps one [`Gather`] in its `HttpWaiter`, sends the [`AdminQuery`] to
//! each peer over the mesh (control messages: never dropped), answers its own part, and renders
//! the response once every part ([`AdminPart`]) is in. No shard ever touches another's state.
//! `/v1/topics` takes two rounds: the page of topics from their owners, then the subscriber
//! counts of those topics from every shard.
//!
//! Also here: the per-user index of each shard's connections (user messages, `/v1/online`,
//! disconnect by user) and presence events. Both cost nothing to connections and topics that
//! do not use them: the index is touched only when an identity is set or its connection
//! removed, presence only on (un)subscribes, and only when a topic class enables it.

use std::{collections::HashMap, mem, net::IpAddr, rc::Rc, sync::Arc};

use serde::Deserialize;

use super::{
    State,
    conn::{Conn, Phase},
    http::{Answer, Handler, present},
    msg::{AdminRep, AdminReq, MeshMsg},
};
use crate::{
    config::Config,
    frame::{OutFrame, SharedFrame, monotonic_ns, text_frame, unix_us},
    limits::{ADMIN_PAGE_DEFAULT, ADMIN_PAGE_MAX, CLOSE_REASON_BYTES_MAX},
    protocol::epoch_str,
    protocol::{self, push_json_str},
    publish::ReplyTo,
    pubsub::{
        topic::{matches, validate_topic},
        trie::is_wildcard,
    },
    stats::CloseReason,
    ws::http::{Request, write_response},
};

/// A shard's admin state.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    /// Authenticated WebSocket connections by user (set with the identity, removed with the
    /// connection).
    users: HashMap<Box<str>, Vec<u32>>,
    /// Some `[[topics]]` class has `presence` on.
    presence: bool,
}

impl AdminState {
    pub(crate) fn new(cfg: &Config) -> AdminState {
        AdminState {
            users: HashMap::new(),
            presence: cfg.topics.iter().any(|c| c.presence),
        }
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
    /// The owner's retained frames of `topic` after `since`.
    History {
        topic: Box<str>,
        since: u64,
        limit: usize,
        bytes_max: usize,
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
    queued_bytes: usize,
    /// Frames this connection skipped (`conflate`, `drop_oldest`, `throttled`).
    skipped: u32,
    tls: bool,
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

/// An admin request collecting parts (in `HttpWaiter::gather`).
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
}

/// A request refused: status, error code, message.
type Bad = (u16, &'static str, String);

/// What an admin request turned into.
enum Asked {
    /// Ask `targets` (a shard mask), render when all answered.
    Gather(AdminQuery, Kind, u64),
    /// Waiting for a topic's owner (`/v1/send`).
    Waiting(futures_channel::oneshot::Receiver<Vec<u8>>),
}

fn bad(message: impl Into<String>) -> Bad {
    (400, "bad_request", message.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    #[serde(default, deserialize_with = "present")]
    data: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    conn: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    user: String,
    topic: String,
    #[serde(default, deserialize_with = "present")]
    data: bool,
    idem: Option<String>,
}

/// The query parameters `names` of `query` (percent-decoded); unknown or repeated ones are
/// refused. `token` (the admin credential) is taken by every endpoint and skipped here.
fn params<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Result<[Option<String>; N], Bad> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == "token" {
            // The credential, already checked by `http_access` (every endpoint takes it).
            continue;
        }
        let Some(i) = names.iter().position(|n| *n == k) else {
            let known = if N == 0 {
                "none".into()
            } else {
                names.join(", ")
            };
            return Err(bad(format!(
                "unknown query parameter {k:?} (known: {known})"
            )));
        };
        if out[i].is_some() {
            return Err(bad(format!("query parameter {k:?} is repeated")));
        }
        out[i] = Some(super::auth::percent_decode(v));
    }
    Ok(out)
}

/// `limit`: default `ADMIN_PAGE_DEFAULT`, 1..=`ADMIN_PAGE_MAX`.
fn page_limit(v: Option<String>) -> Result<usize, Bad> {
    match v {
        None => Ok(ADMIN_PAGE_DEFAULT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=ADMIN_PAGE_MAX).contains(&n) => Ok(n),
            _ => Err(bad(format!(
                "limit must be an integer from 1 to {ADMIN_PAGE_MAX}, not {v:?}"
            ))),
        },
    }
}

/// A connection id `<shard>-<no>`.
fn parse_conn_id(s: &str, shards: usize) -> Option<(usize, u64)> {
    let (shard, no) = s.split_once('-')?;
    let shard: usize = shard.parse().ok()?;
    (shard < shards).then_some(())?;
    Some((shard, no.parse().ok()?))
}

fn required(v: Option<String>, name: &str) -> Result<String, Bad> {
    match v {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(bad(format!("query parameter {name:?} is required"))),
    }
}

fn valid_topic(topic: &str) -> Result<(), Bad> {
    validate_topic(topic).map_err(|e| bad(format!("topic {topic:?}: {e}")))
}

/// The user of a user-message topic `user.<id>.…`.
fn user_of_topic(topic: &str) -> Option<&str> {
    topic.strip_prefix("user.")?.split('.').next()
}

/// A JSON body: `T`, plus the raw `data` value if the body has one.
fn parse_body<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    shape: &str,
) -> Result<(T, Option<Vec<u8>>), Bad> {
    let parsed: T =
        serde_json::from_slice(body).map_err(|e| bad(format!("body must be {shape}: {e}")))?;
    let data = protocol::scan_top_level(body)
        .data
        .map(|r| body[r].to_vec());
    Ok((parsed, data))
}

impl State {
    /// Routes an admin request (access already checked).
    pub(super) fn admin_http(
        &mut self,
        key: u32,
        handler: Handler,
        req: &Request<'_>,
        body: &[u8],
    ) -> Answer {
        let keep_alive = req.keep_alive;
        let q = req.query;
        let all = self.all_shards();
        let asked: Result<Asked, Bad> = match handler {
            Handler::Stats => {
                params(q, []).map(|_| Asked::Gather(AdminQuery::Stats, Kind::Stats, all))
            }
            Handler::Connections => self.connections_query(q).map(|(f, limit)| {
                Asked::Gather(AdminQuery::Connections(f), Kind::Connections { limit }, all)
            }),
            Handler::Topics => params(q, ["prefix", "limit", "cursor"]).and_then(|[p, l, c]| {
                let limit = page_limit(l)?;
                let query = AdminQuery::Topics {
                    prefix: p.unwrap_or_default().into(),
                    after: c.filter(|c| !c.is_empty()).map(Into::into),
                    limit: limit + 1,
                };
                Ok(Asked::Gather(query, Kind::Topics { limit }, all))
            }),
            Handler::History => self.history_query(q),
            Handler::Cluster => {
                return match params(q, []) {
                    Ok(_) => self.cluster_status(keep_alive),
                    Err((status, code, message)) => {
                        self.respond_error(key, status, code, &message, keep_alive);
                        Answer::Responded { keep_alive }
                    }
                };
            }
            Handler::Presence => params(q, ["topic"]).and_then(|[t]| {
                let topic = required(t, "topic")?;
                valid_topic(&topic)?;
                let kind = Kind::Presence {
                    topic: topic.as_str().into(),
                };
                Ok(Asked::Gather(AdminQuery::Presence(topic.into()), kind, all))
            }),
            Handler::Online => params(q, ["limit", "cursor"]).and_then(|[l, c]| {
                let limit = page_limit(l)?;
                let query = AdminQuery::Online {
                    after: c.filter(|c| !c.is_empty()).map(Into::into),
                    limit: limit + 1,
                };
                Ok(Asked::Gather(query, Kind::Online { limit }, all))
            }),
            Handler::Broadcast => params(q, []).and_then(|_| self.broadcast_query(body, all)),
            Handler::Disconnect => params(q, []).and_then(|_| self.disconnect_query(body)),
            Handler::Send => params(q, []).and_then(|_| self.send_request(body, keep_alive)),
            other => unreachable!("{other:?} is not an admin route"),
        };
        match asked {
            Ok(Asked::Waiting(rx)) => Answer::Await(rx),
            Ok(Asked::Gather(query, kind, targets)) => {
                let gather = Gather::new(kind, self.cluster_step(&query));
                let (token, rx) = self.http_waiter(keep_alive, Some(Box::new(gather)));
                self.admin_send(token, query, targets);
                Answer::Await(rx)
            }
            Err((status, code, message)) => {
                self.respond_error(key, status, code, &message, keep_alive);
                Answer::Responded { keep_alive }
            }
        }
    }

    fn connections_query(&self, q: Option<&str>) -> Result<(Box<ConnFilter>, usize), Bad> {
        let [user, topic, l, c] = params(q, ["user", "topic", "limit", "cursor"])?;
        let limit = page_limit(l)?;
        if let Some(t) = &topic {
            valid_topic(t)?;
        }
        let after = match c.filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(parse_conn_id(&c, self.shared.shards).ok_or_else(|| {
                bad(format!("cursor {c:?} is not a connection id like \"0-17\""))
            })?),
        };
        let filter = ConnFilter {
            user: user.filter(|u| !u.is_empty()).map(Into::into),
            topic: topic.map(Into::into),
            after,
            limit: limit + 1,
        };
        Ok((Box::new(filter), limit))
    }

    fn history_query(&self, q: Option<&str>) -> Result<Asked, Bad> {
        let [t, s, l] = params(q, ["topic", "since", "limit"])?;
        let topic = required(t, "topic")?;
        valid_topic(&topic)?;
        let since = match s {
            None => 0,
            Some(s) => s
                .parse()
                .map_err(|_| bad(format!("since must be a sequence number, not {s:?}")))?,
        };
        let limit = page_limit(l)?;
        let owner = crate::pubsub::topic::owner_shard(&topic, self.shared.shards);
        let query = AdminQuery::History {
            topic: topic.as_str().into(),
            since,
            limit,
            bytes_max: self.body_budget(),
        };
        let kind = Kind::History {
            topic: topic.into(),
        };
        Ok(Asked::Gather(query, kind, 1 << owner))
    }

    fn broadcast_query(&self, body: &[u8], all: u64) -> Result<Asked, Bad> {
        let (b, data) = parse_body::<BroadcastBody>(body, "{\"data\":...}")?;
        let data = data
            .filter(|_| b.data)
            .ok_or_else(|| bad("\"data\" is required"))?;
        self.check_data(data.len())?;
        let mut json = Vec::with_capacity(data.len() + 48);
        json.extend_from_slice(b"{\"op\":\"broadcast\",\"ts\":");
        json.extend_from_slice(itoa::Buffer::new().format(unix_us()).as_bytes());
        json.extend_from_slice(b",\"data\":");
        json.extend_from_slice(&data);
        json.push(b'}');
        // Built once here; every shard gets the same `Arc`.
        let frame: SharedFrame = Arc::new(text_frame(&json));
        Ok(Asked::Gather(
            AdminQuery::Broadcast(frame),
            Kind::Count("connections"),
            all,
        ))
    }

    fn check_data(&self, len: usize) -> Result<(), Bad> {
        let max = self.shared.cfg.limits.publish_data_bytes_max;
        if len > max {
            return Err((
                413,
                "message_too_large",
                format!("data is {len} bytes; the limit is {max}"),
            ));
        }
        Ok(())
    }

    fn disconnect_query(&self, body: &[u8]) -> Result<Asked, Bad> {
        let shape = "{\"user\":\"...\"} or {\"conn\":\"<shard>-<no>\"}, with optional \"code\" \
                     and \"reason\"";
        let (b, _) = parse_body::<DisconnectBody>(body, shape)?;
        let code = b.code.unwrap_or(4000);
        if !matches!(code, 1000 | 1001 | 1008 | 4000..=4999) {
            return Err(bad(format!(
                "code must be 1000, 1001, 1008 or 4000-4999, not {code}"
            )));
        }
        let reason = b.reason.unwrap_or_default();
        if reason.len() > CLOSE_REASON_BYTES_MAX {
            return Err(bad(format!(
                "reason is {} bytes; the limit is {CLOSE_REASON_BYTES_MAX}",
                reason.len()
            )));
        }
        let all = self.all_shards();
        let (user, conn_no, targets) = match (b.user, b.conn) {
            (Some(u), None) if !u.is_empty() => (Some(u.into()), None, all),
            (None, Some(c)) => {
                let (shard, no) = parse_conn_id(&c, self.shared.shards).ok_or_else(|| {
                    bad(format!("conn {c:?} is not a connection id like \"0-17\""))
                })?;
                (None, Some(no), 1 << shard)
            }
            _ => return Err(bad(format!("body must be {shape}"))),
        };
        let req = DisconnectReq {
            user,
            conn_no,
            code,
            reason: reason.into(),
        };
        let query = AdminQuery::Disconnect(Box::new(req));
        Ok(Asked::Gather(query, Kind::Count("disconnected"), targets))
    }

    /// `POST /v1/send`: sequenced by the topic's owner like a publish, answered like one.
    fn send_request(&mut self, body: &[u8], keep_alive: bool) -> Result<Asked, Bad> {
        let shape = "{\"user\":\"<id>\",\"topic\":\"user.<id>. ...\",\"data\":...}";
        let (b, data) = parse_body::<SendBody>(body, shape)?;
        let data = data
            .filter(|_| b.data)
            .ok_or_else(|| bad("\"data\" is required"))?;
        if b.user.is_empty() || b.user.contains('.') || validate_topic(&b.user).is_err() {
            return Err(bad(format!(
                "user {:?} must be one topic segment ([A-Za-z0-9_:@-], no dots)",
                b.user
            )));
        }
        valid_topic(&b.topic)?;
        if !b.topic.starts_with(&format!("user.{}.", b.user)) {
            return Err(bad(format!(
                "topic {:?} must start with \"user.{}.\"",
                b.topic, b.user
            )));
        }
        self.check_data(data.len())?;
        protocol::check_idem(b.idem.as_deref()).map_err(bad)?;
        let (token, rx) = self.http_waiter(keep_alive, None);
        let idem = b.idem.map(Into::into);
        let reply = ReplyTo::Http {
            token: token as u32,
        };
        self.ingest(&b.topic, data, idem, reply, true);
        Ok(Asked::Waiting(rx))
    }

    /// Every shard, as a mask.
    pub(crate) fn all_shards(&self) -> u64 {
        u64::MAX >> (64 - self.shared.shards)
    }

    /// Bytes an admin answer's body may take: it is queued on the asking connection like any
    /// frame, under `limits.write_queue_bytes_max`; half of it leaves room for the rest.
    fn body_budget(&self) -> usize {
        self.shared.cfg.limits.write_queue_bytes_max / 2
    }

    /// Asks `targets` (a shard mask, this shard included or not) for their part.
    pub(super) fn admin_send(&mut self, token: usize, query: AdminQuery, targets: u64) {
        if let Some(g) = self.gather_mut(token) {
            g.pending = targets.count_ones() as usize;
        }
        let mut peers = targets & !(1 << self.shard);
        while peers != 0 {
            let dst = peers.trailing_zeros() as usize;
            peers &= peers - 1;
            let req = AdminReq {
                from: self.shard as u8,
                token: token as u32,
                query: query.clone(),
            };
            // Control messages are never dropped by the mesh.
            let _ = self.mesh.send(dst, MeshMsg::Admin(Box::new(req)));
        }
        if targets & (1 << self.shard) != 0 {
            let part = self.admin_answer(query);
            self.admin_part(token as u32, part);
        }
    }

    pub(super) fn gather_mut(&mut self, token: usize) -> Option<&mut Gather> {
        self.http_waiters
            .get_mut(token)
            .and_then(|w| w.gather.as_deref_mut())
    }

    /// A peer's question.
    pub(crate) fn admin_request_from_peer(&mut self, req: AdminReq) {
        let part = self.admin_answer(req.query);
        let rep = AdminRep {
            token: req.token,
            part,
        };
        let _ = self
            .mesh
            .send(req.from as usize, MeshMsg::AdminReply(Box::new(rep)));
    }

    /// One part of an answer arrived (from a peer or this shard).
    pub(crate) fn admin_part(&mut self, token: u32, part: AdminPart) {
        let Some(g) = self.gather_mut(token as usize) else {
            return;
        };
        g.parts.push(part);
        g.pending = g.pending.saturating_sub(1);
        if g.pending == 0 {
            self.admin_complete(token as usize);
        }
    }

    /// This shard's part.
    fn admin_answer(&mut self, query: AdminQuery) -> AdminPart {
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
                            .filter(|k| self.conns[**k as usize].phase == Phase::Ws)
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
            } => {
                let now_ns = monotonic_ns();
                AdminPart::History(self.topics.get_mut(&topic).map(|t| {
                    let frames = t
                        .history
                        .as_mut()
                        .map(|h| h.page(since, limit, bytes_max, now_ns))
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
                    let conn = &self.conns[k as usize];
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
                            .filter(|k| self.conns[**k as usize].phase == Phase::Ws)
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

    fn snapshot(&self) -> Snapshot {
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

    fn list_connections(&self, f: &ConnFilter) -> Vec<ConnInfo> {
        let keys: Vec<u32> = match &f.topic {
            Some(t) => {
                let mut keys = Vec::new();
                self.index.for_each_subscriber(t, |k| keys.push(k));
                keys.sort_unstable();
                keys.dedup();
                keys
            }
            None => self.conns.iter().map(|(k, _)| k as u32).collect(),
        };
        // The page is chosen first; only its entries are copied out.
        let mut page: Vec<&Conn> = keys
            .into_iter()
            .map(|k| &self.conns[k as usize])
            .filter(|c| c.phase == Phase::Ws && !c.echo)
            .filter(|c| f.after.is_none_or(|a| (self.shard, c.no) > a))
            .filter(|c| {
                f.user
                    .as_deref()
                    .is_none_or(|u| c.ident.as_ref().is_some_and(|i| *i.user == *u))
            })
            .collect();
        first_by(&mut page, f.limit, |a, b| a.no.cmp(&b.no));
        page.into_iter()
            .map(|c| ConnInfo {
                shard: self.shard,
                no: c.no,
                ip: c.ip(),
                user: c.ident.as_ref().map(|i| i.user.clone()),
                age_s: (self.now_ms / 1000).saturating_sub(u64::from(c.accepted_s)),
                subs: c.subs.clone(),
                queued_bytes: c.out.bytes(),
                skipped: c.skipped,
                tls: c.tls.is_some(),
            })
            .collect()
    }

    /// Queues a broadcast frame to every WebSocket connection; returns how many.
    fn broadcast(&mut self, frame: SharedFrame) -> usize {
        let frame: OutFrame = Rc::new(frame);
        let keys: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Ws && !c.echo)
            .map(|(k, _)| k as u32)
            .collect();
        for key in &keys {
            self.enqueue(*key, frame.clone());
        }
        keys.len()
    }

    /// Closes the WebSocket connections `d` names; returns how many.
    fn disconnect(&mut self, d: &DisconnectReq) -> usize {
        let keys: Vec<u32> = match (&d.user, d.conn_no) {
            (Some(u), _) => self.admin.users.get(&**u).cloned().unwrap_or_default(),
            (None, Some(no)) => self
                .conns
                .iter()
                .filter(|(_, c)| c.no == no)
                .map(|(k, _)| k as u32)
                .collect(),
            (None, None) => Vec::new(),
        };
        let mut n = 0;
        for key in keys {
            if self.conns[key as usize].phase == Phase::Ws {
                self.close_code(key, d.code, &d.reason, CloseReason::Admin);
                n += 1;
            }
        }
        n
    }

    /// Every part is in: render, or start the next round.
    pub(super) fn admin_complete(&mut self, token: usize) {
        if self.cluster_parts_pending(token) {
            return;
        }
        let Some(g) = self.gather_mut(token) else {
            return;
        };
        let parts = mem::take(&mut g.parts);
        let kind = mem::replace(&mut g.kind, Kind::Count(""));
        let budget = self.body_budget();
        let mut out = Vec::with_capacity(1024);
        out.push(b'{');
        match kind {
            Kind::Stats => self.render_stats(&mut out, parts),
            Kind::Connections { limit } => {
                let mut conns = collect_parts(parts, |p| match p {
                    AdminPart::Connections(v) => Some(v),
                    _ => None,
                });
                conns.sort_unstable_by_key(|c| (c.shard, c.no));
                let list = List::new("connections", conns.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_conn(out, &conns[i]),
                    |i| conn_id(conns[i].shard, conns[i].no),
                );
            }
            Kind::Count(field) => {
                let n: usize = collect_parts(parts, |p| match p {
                    AdminPart::Count(n) => Some(vec![n]),
                    _ => None,
                })
                .iter()
                .sum();
                num(&mut out, field, n as u64);
            }
            Kind::Topics { limit } => {
                let mut topics = collect_parts(parts, |p| match p {
                    AdminPart::Topics(v) => Some(v),
                    _ => None,
                });
                first_by(&mut topics, limit + 1, |a, b| a.name.cmp(&b.name));
                if !topics.is_empty() {
                    let names: Arc<[Box<str>]> =
                        topics.iter().take(limit).map(|t| t.name.clone()).collect();
                    if let Some(g) = self.gather_mut(token) {
                        g.kind = Kind::TopicSubscribers {
                            page: topics,
                            limit,
                        };
                    }
                    let all = self.all_shards();
                    return self.admin_send(token, AdminQuery::Subscribers(names), all);
                }
                out.extend_from_slice(b"\"topics\":[],\"next_cursor\":null");
            }
            Kind::TopicSubscribers {
                page: topics,
                limit,
            } => {
                let mut counts = vec![0; topics.len().min(limit)];
                for p in parts {
                    if let AdminPart::Subscribers(v) = p {
                        for (a, b) in counts.iter_mut().zip(v) {
                            *a += b;
                        }
                    }
                }
                let list = List::new("topics", topics.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_topic(out, &topics[i], counts[i]),
                    |i| topics[i].name.to_string(),
                );
            }
            Kind::History { topic } => match parts.into_iter().next() {
                Some(AdminPart::History(Some(h))) => {
                    string(&mut out, "topic", &topic);
                    string(&mut out, "epoch", &epoch_str(h.epoch));
                    num(&mut out, "seq", h.seq);
                    key(&mut out, "messages");
                    out.push(b'[');
                    for f in &h.frames {
                        out.extend_from_slice(frame_payload(f.bytes()));
                        out.push(b',');
                    }
                    end(&mut out, b']');
                }
                _ => {
                    let message =
                        format!("topic {topic:?} is unknown: nothing was published to it");
                    let body = super::http::error_body("not_found", &message);
                    return self.admin_respond(token, 404, body);
                }
            },
            Kind::Presence { topic } => {
                let (users, anonymous) = merge_users(parts);
                string(&mut out, "topic", &topic);
                let list = List::new("users", users.len(), usize::MAX, budget);
                let cut = list.items(&mut out, |out, i| render_user(out, &users[i]));
                num(&mut out, "anonymous", anonymous as u64);
                if cut {
                    out.extend_from_slice(b"\"truncated\":true,");
                }
                self.render_missing_nodes(token, &mut out);
            }
            Kind::Online { limit } => {
                self.render_missing_nodes(token, &mut out);
                let (users, _) = merge_users(parts);
                let list = List::new("users", users.len(), limit, budget);
                list.render(
                    &mut out,
                    |out, i| render_user(out, &users[i]),
                    |i| users[i].0.to_string(),
                );
            }
        }
        end(&mut out, b'}');
        self.admin_respond(token, 200, out);
    }

    fn render_stats(&self, out: &mut Vec<u8>, parts: Vec<AdminPart>) {
        let mut shards = collect_parts(parts, |p| match p {
            AdminPart::Stats(s) => Some(vec![*s]),
            _ => None,
        });
        shards.sort_by_key(|s| s.shard);
        let mut total = Snapshot::default();
        for s in &shards {
            total.add(s);
        }
        num(out, "shards", self.shared.shards as u64);
        num(out, "uptime_s", self.shared.started.elapsed().as_secs());
        key(out, "total");
        out.push(b'{');
        total.render(out);
        end(out, b'}');
        out.push(b',');
        key(out, "per_shard");
        out.push(b'[');
        for s in &shards {
            out.push(b'{');
            num(out, "shard", s.shard as u64);
            s.render(out);
            end(out, b'}');
            out.push(b',');
        }
        end(out, b']');
    }

    pub(super) fn admin_respond(&mut self, token: usize, status: u16, body: Vec<u8>) {
        let Some(waiter) = self.http_waiters.try_remove(token) else {
            return;
        };
        let mut out = Vec::with_capacity(body.len() + 160);
        write_response(
            &mut out,
            status,
            "application/json",
            &body,
            waiter.keep_alive,
            &[],
        );
        let _ = waiter.tx.send(out);
    }

    // --- per-user index and presence ---

    /// Connection `key` got its identity (upgrade or first `auth`): index it by user, and
    /// announce it on the presence topics it already subscribed to.
    pub(crate) fn user_indexed(&mut self, key: u32) {
        let Some(conn) = self.conns.get(key as usize) else {
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
    pub(crate) fn conn_gone(&mut self, key: u32, conn: &Conn) {
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
    pub(crate) fn presence_changed(&mut self, key: u32, pattern: &str, join: bool) {
        if !self.admin.presence {
            return;
        }
        let Some(conn) = self.conns.get(key as usize) else {
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
    fn presence_event(&mut self, user: &str, no: u64, topic: &str, join: bool) {
        if is_wildcard(topic) || topic.starts_with("presence.") {
            return;
        }
        let class = self
            .shared
            .cfg
            .topics
            .iter()
            .find(|c| matches(&c.pattern, topic));
        if !class.is_some_and(|c| c.presence) {
            return;
        }
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
    pub(crate) fn deliver_user(&mut self, frame: OutFrame) {
        self.deliver_local(frame.topic(), frame.clone());
        let Some(keys) = user_of_topic(frame.topic()).and_then(|u| self.admin.users.get(u)) else {
            return;
        };
        let keys = keys.clone();
        // `deliver_local` stamped every connection it visited with this round.
        let round = self.round;
        for key in keys {
            let conn = &mut self.conns[key as usize];
            if conn.round == round || conn.phase != Phase::Ws {
                continue;
            }
            conn.round = round;
            if conn.recovering && self.recovering_frame(key, &frame) {
                continue;
            }
            self.enqueue(key, frame.clone());
        }
    }
}

/// The items of every part `pick` takes.
fn collect_parts<T>(parts: Vec<AdminPart>, pick: impl Fn(AdminPart) -> Option<Vec<T>>) -> Vec<T> {
    parts.into_iter().filter_map(pick).flatten().collect()
}

/// Keeps the first `n` of `v` by `cmp`, sorted.
fn first_by<T>(v: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) {
    if v.len() > n {
        v.select_nth_unstable_by(n, &cmp);
        v.truncate(n);
    }
    v.sort_unstable_by(cmp);
}

fn push_conn_id(out: &mut Vec<u8>, shard: usize, no: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(shard).as_bytes());
    out.push(b'-');
    out.extend_from_slice(itoa::Buffer::new().format(no).as_bytes());
}

/// `"k":`
pub(super) fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `"k":v,`
pub(super) fn num(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    out.push(b',');
}

/// `"k":"v",`
pub(super) fn string(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    push_json_str(out, v);
    out.push(b',');
}

/// Closes an object or array whose members each end in `,`.
pub(super) fn end(out: &mut Vec<u8>, close: u8) {
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.push(close);
}

fn conn_id(shard: usize, no: u64) -> String {
    format!("{shard}-{no}")
}

/// A JSON array member `"<name>":[…],` of `len` items: at most `limit`, and no more than fit
/// in `budget` bytes of the body (one at least).
struct List {
    name: &'static str,
    len: usize,
    limit: usize,
    budget: usize,
}

impl List {
    fn new(name: &'static str, len: usize, limit: usize, budget: usize) -> List {
        List {
            name,
            len,
            limit,
            budget,
        }
    }

    /// The items, then `"next_cursor"`: the cursor of the last item rendered when some were
    /// left out, else `null`.
    fn render(
        &self,
        out: &mut Vec<u8>,
        render: impl FnMut(&mut Vec<u8>, usize),
        cursor: impl Fn(usize) -> String,
    ) {
        let shown = self.items_shown(out, render);
        key(out, "next_cursor");
        if shown < self.len {
            push_json_str(out, &cursor(shown - 1));
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b',');
    }

    /// The items only; true when some were left out.
    fn items(&self, out: &mut Vec<u8>, render: impl FnMut(&mut Vec<u8>, usize)) -> bool {
        self.items_shown(out, render) < self.len
    }

    fn items_shown(&self, out: &mut Vec<u8>, mut render: impl FnMut(&mut Vec<u8>, usize)) -> usize {
        key(out, self.name);
        out.push(b'[');
        let mut shown = 0;
        while shown < self.len.min(self.limit) {
            let mark = out.len();
            render(out, shown);
            out.push(b',');
            if out.len() > self.budget && shown > 0 {
                out.truncate(mark);
                break;
            }
            shown += 1;
        }
        end(out, b']');
        out.push(b',');
        shown
    }
}

fn render_conn(out: &mut Vec<u8>, c: &ConnInfo) {
    out.push(b'{');
    string(out, "conn", &conn_id(c.shard, c.no));
    string(out, "ip", &c.ip.to_string());
    key(out, "user");
    match &c.user {
        Some(u) => push_json_str(out, u),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b',');
    num(out, "shard", c.shard as u64);
    num(out, "age_s", c.age_s);
    key(out, "subscriptions");
    out.push(b'[');
    for t in &c.subs {
        push_json_str(out, t);
        out.push(b',');
    }
    end(out, b']');
    out.push(b',');
    num(out, "queued_bytes", c.queued_bytes as u64);
    num(out, "skipped", u64::from(c.skipped));
    key(out, "tls");
    out.extend_from_slice(if c.tls { b"true" } else { b"false" });
    out.push(b'}');
}

fn render_topic(out: &mut Vec<u8>, t: &TopicInfo, subscribers: usize) {
    out.push(b'{');
    string(out, "topic", &t.name);
    num(out, "seq", t.seq);
    string(out, "epoch", &epoch_str(t.epoch));
    num(out, "history", t.history as u64);
    num(out, "subscribers", subscribers as u64);
    end(out, b'}');
}

pub(super) fn render_user(out: &mut Vec<u8>, (user, n): &(Box<str>, usize)) {
    out.push(b'{');
    string(out, "user", user);
    num(out, "connections", *n as u64);
    end(out, b'}');
}

/// Users over all shards' parts (connection counts summed), sorted by name, and the
/// anonymous connections.
pub(super) fn merge_users(parts: Vec<AdminPart>) -> (Vec<(Box<str>, usize)>, usize) {
    let mut users: HashMap<Box<str>, usize> = HashMap::new();
    let mut anon = 0;
    for p in parts {
        if let AdminPart::Users {
            users: u,
            anonymous,
        } = p
        {
            anon += anonymous;
            for (name, n) in u {
                *users.entry(name).or_default() += n;
            }
        }
    }
    let mut users: Vec<(Box<str>, usize)> = users.into_iter().collect();
    users.sort_unstable();
    (users, anon)
}

/// The payload of an unmasked server frame (its JSON).
fn frame_payload(bytes: &[u8]) -> &[u8] {
    let header = match bytes.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    bytes.get(header..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let [a, b] = params(Some("user=al%40ice&limit=5"), ["user", "limit"]).unwrap();
        assert_eq!(a.as_deref(), Some("al@ice"));
        assert_eq!(b.as_deref(), Some("5"));
        assert!(
            params(Some("usr=x"), ["user"])
                .unwrap_err()
                .2
                .contains("usr")
        );
        assert!(params(Some("user=a&user=b"), ["user"]).is_err());
        assert!(params(Some("x=1"), []).is_err());
        assert!(params(None, ["user"]).unwrap()[0].is_none());
        assert_eq!(page_limit(None).unwrap(), ADMIN_PAGE_DEFAULT);
        assert_eq!(page_limit(Some("1000".into())).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(page_limit(Some(bad.into())).is_err(), "{bad}");
        }
        assert_eq!(parse_conn_id("1-17", 2), Some((1, 17)));
        assert_eq!(parse_conn_id("2-17", 2), None);
        assert_eq!(parse_conn_id("1-", 2), None);
        assert_eq!(user_of_topic("user.alice.orders"), Some("alice"));
        assert_eq!(user_of_topic("users.alice"), None);
    }

    #[test]
    fn lists_stop_at_the_limit_or_the_budget_with_a_cursor() {
        let render = |out: &mut Vec<u8>, i: usize| out.extend_from_slice(format!("{i}").as_bytes());
        let mut out = b"{".to_vec();
        List::new("x", 5, 3, 1 << 20).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1,2],"next_cursor":"2"}"#);
        let mut out = b"{".to_vec();
        List::new("x", 3, 3, 1 << 20).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1,2],"next_cursor":null}"#);
        // A budget of 10 bytes holds `{"x":[0,1` and no more; one item always fits.
        let mut out = b"{".to_vec();
        List::new("x", 5, 100, 10).render(&mut out, render, |i| i.to_string());
        end(&mut out, b'}');
        assert_eq!(out, br#"{"x":[0,1],"next_cursor":"1"}"#);
        let mut out = b"{".to_vec();
        assert!(List::new("x", 2, 100, 1).items(&mut out, render));
        assert_eq!(out, br#"{"x":[0],"#);
    }

    #[test]
    fn history_messages_are_frame_payloads() {
        let frame = crate::frame::encode_data_frame("t.a", 3, 7, br#"{"k":1}"#, 1);
        assert_eq!(
            frame_payload(frame.bytes()),
            br#"{"topic":"t.a","seq":3,"ts":7,"data":{"k":1}}"#
        );
        let big = "x".repeat(70_000);
        let frame = text_frame(big.as_bytes());
        assert_eq!(frame_payload(frame.bytes()), big.as_bytes());
    }
}
