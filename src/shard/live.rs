//! Cluster mode over NATS, shard 0 (`cluster.nats_live_reader = "shard"`, the default): the
//! node's live messages read from the broker on the shard's own runtime (docs/CLUSTER.md,
//! "Inside a node").
//!
//! Everything else the broker does for a node (sequenced publishes, history, heartbeats,
//! queries) stays with the bridge thread's async-nats client. Live messages are the only
//! broker traffic whose rate is the publish rate, and through the bridge each one cost a wake
//! of the bridge thread and a wake of the shard from that thread (perf/README.md, "where a
//! cluster node's time goes"). Here shard 0 holds one plain-TCP NATS connection: its socket
//! is read like a client's, each message goes straight to its topic's owner shard (itself, or
//! one mesh hop), and nothing else runs per message.
//!
//! **Interest.** Shard 0 sees every shard's interest changes (they are broadcast to all
//! peers, `interest.rs`); it subscribes to a pattern while any shard holds it. A change is
//! acknowledged to the shard that made it (`MeshMsg::BrokerInterestAck`) once a `PING`
//! written after the `SUB`/`UNSUB` has its `PONG`: the server handles one connection's
//! operations in order, so from then on the subscription is in force. While disconnected a
//! change is acknowledged at once, as the bridge does: the subscription is made on the
//! reconnect, which repairs every topic.
//!
//! **Loss.** A lost connection (closed, a read or write error, a protocol error, nothing read
//! for `cluster.node_ttl_ms` — at least `LIVE_SILENCE_MIN_MS` — after a keep-alive `PING`
//! sent every `cluster.heartbeat_ms`, a server entering lame duck mode) is made again with the
//! bridge's backoff, starting with the next server: `cluster.url` may list several, and the
//! broker announces the other servers of its NATS cluster (INFO `connect_urls`), as it does to
//! every NATS client. Once the new connection's subscriptions are in force every shard repairs
//! its topics from the broker's history (`broker_up`), as after a loss of the bridge's
//! connection. While it is down, `/ready` says so (`Bridge::is_live_up`).

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    os::fd::OwnedFd,
    rc::Rc,
    task::{Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt, OwnedWriteHalf, Splitable},
    net::TcpStream,
};

use super::{Shard, State, msg::MeshMsg};
use crate::{
    cluster::{envelope, nats_wire},
    config::Config,
    limits::{CLUSTER_ANNOUNCED_SERVERS_MAX, LIVE_SILENCE_MIN_MS, READ_CHUNK_BYTES},
    mesh::SendOutcome,
};

/// The subscription id of `<prefix>.live.user.>`, always subscribed: a message for a user
/// may be for a connection on any node.
const USER_SID: u64 = 1;
const USER_PATTERN: &str = "user.>";

/// What a `PONG` confirms.
#[derive(Debug, Clone, Copy)]
enum Confirm {
    /// Shard `shard`'s interest change `seq` is in force at the broker.
    Ack { shard: u8, seq: u64 },
    /// A new connection's subscriptions are in force: every shard repairs its topics.
    Repair,
}

/// Shard 0's live connection (in [`State::live`]).
pub(crate) struct Live {
    /// Every pattern some shard of this node subscribes to, with its subscription id.
    subs: HashMap<Box<str>, u64>,
    next_sid: u64,
    prefix: String,
    /// Bumped on every connection and every loss: a writer of an older one stops.
    generation: u64,
    /// While connected: a duplicate of the connection's descriptor, to shut the socket down
    /// from a section (the reader then sees the end and reconnects). `None`: not connected.
    fd: Option<OwnedFd>,
    /// The connection was shut down from here; its reader has not seen the end yet.
    closing: bool,
    /// When the reader last got bytes (shard ms).
    last_read_ms: u64,
    /// `PONG`s received on this connection.
    pongs: u64,
    /// The server sent `PING`: one `PONG` is due (however many it sent).
    pong_due: bool,
    /// Bytes for the broker the writer has not taken yet.
    out: Vec<u8>,
    /// Changes written since the last `PING`: its `PONG` confirms them.
    batch: Vec<Confirm>,
    /// `PING`s written and not yet answered, oldest first: when (shard ms), and what each
    /// `PONG` confirms.
    waiting: VecDeque<(u64, Vec<Confirm>)>,
    last_ping_ms: u64,
    ping_due: bool,
    writer: Option<Waker>,
    /// The servers the broker announced last (INFO `connect_urls`: the other servers of a
    /// NATS cluster), tried after `cluster.url`'s own. Replaced by every announcement, so it
    /// is bounded by the server's control line (`nats_wire::CONTROL_LINE_MAX`).
    announced: Vec<ServerAt>,
    received: metrics::Counter,
    invalid: metrics::Counter,
    errors: metrics::Counter,
}

impl Live {
    pub(crate) fn new(cfg: &Config) -> Live {
        // Present (0) from the start: an alert on 0 fires for a reader that never connected.
        metrics::gauge!("tickcast_cluster_live_up").set(0.0);
        Live {
            subs: HashMap::new(),
            next_sid: USER_SID + 1,
            prefix: cfg.cluster.prefix.clone(),
            generation: 0,
            fd: None,
            closing: false,
            last_read_ms: 0,
            pongs: 0,
            pong_due: false,
            out: Vec::new(),
            batch: Vec::new(),
            waiting: VecDeque::new(),
            last_ping_ms: 0,
            ping_due: false,
            writer: None,
            announced: Vec::new(),
            received: metrics::counter!("tickcast_cluster_received_total"),
            invalid: metrics::counter!("tickcast_cluster_invalid_total"),
            errors: metrics::counter!("tickcast_cluster_live_errors_total"),
        }
    }

    /// Writes `SUB` for every wanted pattern (and the user messages' subject).
    fn write_subs(&mut self) {
        use std::io::Write;
        let Live {
            subs, out, prefix, ..
        } = self;
        let _ = write!(out, "SUB {prefix}.live.{USER_PATTERN} {USER_SID}\r\n");
        for (pattern, sid) in subs.iter() {
            let _ = write!(out, "SUB {prefix}.live.{pattern} {sid}\r\n");
        }
    }

    /// Subscribes to `pattern` while `held`, unsubscribes when no shard holds it any more.
    fn want(&mut self, pattern: &str, held: bool) {
        if pattern == USER_PATTERN {
            return;
        }
        if held && !self.subs.contains_key(pattern) {
            let sid = self.next_sid;
            self.next_sid += 1;
            self.subs.insert(pattern.into(), sid);
            if self.connected() {
                use std::io::Write;
                let _ = write!(self.out, "SUB {}.live.{pattern} {sid}\r\n", self.prefix);
            }
        } else if !held {
            let Some(sid) = self.subs.remove(pattern) else {
                return;
            };
            if self.connected() {
                use std::io::Write;
                let _ = write!(self.out, "UNSUB {sid}\r\n");
            }
        } else {
            return;
        }
        metrics::gauge!("tickcast_cluster_subscriptions").set(self.subs.len() as f64);
    }

    fn connected(&self) -> bool {
        self.fd.is_some()
    }

    fn kick(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Answers the server's `PING`, and ends the batch of changes with a `PING` when there is
    /// one (or a keep-alive is due).
    fn ping_if_needed(&mut self, now_ms: u64) {
        if !self.connected() {
            return;
        }
        if std::mem::take(&mut self.pong_due) {
            self.out.extend_from_slice(b"PONG\r\n");
        }
        if self.batch.is_empty() && !self.ping_due {
            return;
        }
        self.out.extend_from_slice(b"PING\r\n");
        self.waiting
            .push_back((now_ms, std::mem::take(&mut self.batch)));
        self.last_ping_ms = now_ms;
        self.ping_due = false;
    }

    fn shut_down(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
        }
        self.closing = true;
    }
}

pub(crate) use crate::cluster::live_in_shard as in_shard;

impl State {
    /// An interest change of shard `from` (this one's own, or a peer's) at shard 0: the
    /// broker subscription follows, and the change is acknowledged once it is in force.
    pub(crate) fn live_interest(&mut self, from: u8, pattern: &str, seq: u64) {
        let held = self.interest.holds(pattern);
        let Some(live) = self.live.as_mut() else {
            return;
        };
        live.want(pattern, held);
        if live.connected() {
            live.batch.push(Confirm::Ack { shard: from, seq });
            live.kick();
        } else {
            self.broker_ack(from, seq);
        }
    }

    fn broker_ack(&mut self, shard: u8, seq: u64) {
        if shard as usize == self.shard {
            self.interest.broker_acked(seq);
            self.release_pending_subs();
        } else {
            let _ = self
                .mesh
                .send(shard as usize, MeshMsg::BrokerInterestAck { seq });
        }
    }

    fn live_confirmed(&mut self, confirms: Vec<Confirm>) {
        for c in confirms {
            match c {
                Confirm::Ack { shard, seq } => self.broker_ack(shard, seq),
                Confirm::Repair => {
                    for dst in (0..self.shared.shards).filter(|d| *d != self.shard) {
                        let _ = self.mesh.send(dst, MeshMsg::BrokerUp);
                    }
                    self.broker_up();
                }
            }
        }
    }

    /// A new connection is ready: subscribe to everything wanted, then repair once that is
    /// in force. Returns the connection's generation.
    fn live_connected(&mut self, fd: OwnedFd) -> u64 {
        let now = self.clock();
        let live = self.live.as_mut().expect("shard 0 with a live reader");
        live.generation += 1;
        live.fd = Some(fd);
        live.closing = false;
        live.last_read_ms = now;
        live.pongs = 0;
        live.pong_due = false;
        live.out.clear();
        live.write_subs();
        live.batch.push(Confirm::Repair);
        live.last_ping_ms = now;
        live.kick();
        metrics::gauge!("tickcast_cluster_live_up").set(1.0);
        let generation = live.generation;
        if let Some(b) = &self.shared.bridge {
            b.set_live_up(true);
        }
        generation
    }

    /// The connection is gone: what waited for its `PONG`s is acknowledged now (it will be
    /// subscribed again on the next connection, which repairs every topic).
    fn live_lost(&mut self) {
        let live = self.live.as_mut().expect("shard 0 with a live reader");
        if !live.connected() {
            return;
        }
        live.generation += 1;
        // A writer blocked on the old socket ends with it.
        live.shut_down();
        live.fd = None;
        live.out.clear();
        live.ping_due = false;
        let mut confirms = std::mem::take(&mut live.batch);
        for (_, c) in live.waiting.drain(..) {
            confirms.extend(c);
        }
        live.kick();
        metrics::gauge!("tickcast_cluster_live_up").set(0.0);
        if let Some(b) = &self.shared.bridge {
            b.set_live_up(false);
        }
        confirms.retain(|c| matches!(c, Confirm::Ack { .. }));
        self.live_confirmed(confirms);
    }

    /// Keep-alive (from the shard's timer): a `PING` every `cluster.heartbeat_ms`; nothing
    /// read for `cluster.node_ttl_ms` (at least `LIVE_SILENCE_MIN_MS`) since an unanswered
    /// `PING` was sent means the broker is gone. Bytes read count as life, so a `PONG` queued
    /// behind a burst of messages, or a shard that was itself held up, is not taken for a
    /// dead broker.
    pub(crate) fn live_tick(&mut self, now: u64) {
        let (every, ttl) = (
            self.shared.boot.cluster.heartbeat_ms,
            self.shared
                .boot
                .cluster
                .node_ttl_ms
                .max(LIVE_SILENCE_MIN_MS),
        );
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if !live.connected() || live.closing {
            return;
        }
        if let Some((sent, _)) = live.waiting.front() {
            let quiet_since = (*sent).max(live.last_read_ms);
            if now.saturating_sub(quiet_since) > ttl {
                tracing::warn!(
                    silent_ms = now - quiet_since,
                    "cluster: NATS silent on the live connection after a PING; reconnecting"
                );
                live.shut_down();
                return;
            }
        }
        if now.saturating_sub(live.last_ping_ms) >= every {
            live.ping_due = true;
            live.kick();
        }
    }

    /// Handles every complete operation at the front of `buf`; an error ends the connection
    /// (why, for the log).
    fn live_ops(&mut self, buf: &mut BytesMut, max_payload: usize) -> Result<(), String> {
        loop {
            let (op, used) = match nats_wire::parse(buf, max_payload) {
                nats_wire::Parsed::Incomplete => return Ok(()),
                nats_wire::Parsed::Invalid(e) => return Err(format!("protocol error: {e}")),
                nats_wire::Parsed::Op(op, used) => (op, used),
            };
            if let nats_wire::Op::Msg { payload, .. } = op {
                // The payload stays in the read buffer (a message's data is a slice of it).
                let chunk = buf.split_to(used).freeze();
                self.live_message(chunk.slice(payload));
                continue;
            }
            if let nats_wire::Op::Info(r) = &op {
                // The cluster's servers changed, or this one is shutting down gracefully
                // (lame duck mode): then go to another before it closes the connection.
                let info =
                    info_json(&buf[r.clone()]).map_err(|e| format!("protocol error: {e}"))?;
                buf.advance(used);
                let live = self.live.as_mut().expect("shard 0 with a live reader");
                if let Some(servers) = announced(&info) {
                    live.announced = servers;
                }
                if lame_duck(&info) {
                    return Err("the server is entering lame duck mode".into());
                }
                continue;
            }
            buf.advance(used);
            let live = self.live.as_mut().expect("shard 0 with a live reader");
            match op {
                nats_wire::Op::Ping => {
                    live.pong_due = true;
                    live.kick();
                }
                nats_wire::Op::Pong => {
                    // A PONG nobody asked for would confirm changes the server has not seen.
                    let Some((_, confirms)) = live.waiting.pop_front() else {
                        return Err("protocol error: a PONG without a PING".into());
                    };
                    live.pongs += 1;
                    self.live_confirmed(confirms);
                }
                nats_wire::Op::Err(text) => {
                    // The server closes the connection after the errors that end it; the
                    // others (a permission refused) leave it up.
                    live.errors.increment(1);
                    crate::warn_sampled!(error = %text, "cluster: NATS error on the live connection");
                }
                nats_wire::Op::Ok | nats_wire::Op::Info(_) | nats_wire::Op::Msg { .. } => {}
            }
        }
    }

    /// A live message: to its topic's owner shard.
    fn live_message(&mut self, wire: Bytes) {
        let live = self.live.as_mut().expect("shard 0 with a live reader");
        match envelope::decode(&wire) {
            Ok(m) => {
                live.received.increment(1);
                let owner = crate::pubsub::topic::owner_shard(&m.topic, self.shared.shards);
                if owner == self.shard {
                    self.on_remote(m);
                    return;
                }
                // Queued for another shard, the message must not keep the whole read buffer
                // it is a slice of alive (it may wait behind a busy shard's backlog).
                let m = envelope::Received {
                    data: Bytes::copy_from_slice(&m.data),
                    ..m
                };
                if let SendOutcome::Dropped(_) = self.mesh.send(owner, MeshMsg::Remote(Box::new(m)))
                {
                    // The owner sees the hole and repairs it from the broker's history.
                    self.stats.c.mesh_drops += 1;
                }
            }
            Err(e) => {
                live.invalid.increment(1);
                crate::warn_sampled!(error = %e, "cluster: dropped an invalid message from the broker");
            }
        }
    }
}

/// One NATS server: from `cluster.url`, or announced by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerAt {
    host: url::Host<String>,
    port: u16,
}

impl ServerAt {
    /// `host[:port]` of a `nats://` URL (4222 when it names no port); a host name in lower
    /// case (`nats://` is not a scheme whose hosts the URL standard normalises).
    fn parse(url: &str) -> Option<ServerAt> {
        let parsed = url::Url::parse(url).ok()?;
        let host = match parsed.host()? {
            url::Host::Domain(name) => url::Host::Domain(name.to_ascii_lowercase()),
            other => other.to_owned(),
        };
        Some(ServerAt {
            host,
            port: parsed.port().unwrap_or(4222),
        })
    }

    /// The addresses to try, in order; a host name is resolved on a short-lived thread
    /// (`getaddrinfo` blocks, and the shard must not).
    async fn addrs(&self) -> Result<Vec<SocketAddr>, String> {
        let name = match &self.host {
            url::Host::Ipv4(ip) => return Ok(vec![SocketAddr::new(IpAddr::V4(*ip), self.port)]),
            url::Host::Ipv6(ip) => return Ok(vec![SocketAddr::new(IpAddr::V6(*ip), self.port)]),
            url::Host::Domain(name) => name.clone(),
        };
        // `nats://` is not a scheme the URL standard knows, so an IPv4 address comes as a
        // domain name: no lookup for it.
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let (tx, rx) = flume::bounded(1);
        let port = self.port;
        std::thread::Builder::new()
            .name("tc-resolve".into())
            .spawn(move || {
                use std::net::ToSocketAddrs;
                let found = (name.as_str(), port)
                    .to_socket_addrs()
                    .map(Vec::from_iter)
                    .map_err(|e| format!("resolve {name}: {e}"));
                let _ = tx.send(found);
            })
            .map_err(|e| format!("resolver thread: {e}"))?;
        let found = rx
            .recv_async()
            .await
            .map_err(|_| "resolver thread ended".to_string())??;
        if found.is_empty() {
            return Err("the host name resolves to no address".into());
        }
        Ok(found)
    }
}

impl std::fmt::Display for ServerAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The servers an INFO announces (`connect_urls`: every client address of the server's NATS
/// cluster), if it says: each once, at most `CLUSTER_ANNOUNCED_SERVERS_MAX`; entries that do
/// not parse are left out.
fn announced(info: &serde_json::Value) -> Option<Vec<ServerAt>> {
    let urls = info["connect_urls"].as_array()?;
    let mut servers = Vec::new();
    for u in urls {
        if servers.len() == CLUSTER_ANNOUNCED_SERVERS_MAX {
            break;
        }
        if let Some(s) = u
            .as_str()
            .and_then(|u| ServerAt::parse(&format!("nats://{u}")))
        {
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
    }
    Some(servers)
}

/// An `INFO`'s JSON.
fn info_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("an INFO that is not JSON: {e}"))
}

/// The server says it is shutting down gracefully (lame duck mode): it accepts no new
/// connections and will close this one.
fn lame_duck(info: &serde_json::Value) -> bool {
    info["ldm"].as_bool() == Some(true)
}

/// The broker's servers and credentials, from `cluster.url`.
struct Target {
    /// `cluster.url`'s servers, in order.
    servers: Vec<ServerAt>,
    shown: String,
    connect: Vec<u8>,
}

impl Target {
    fn new(cfg: &Config, node: &str) -> Result<Target, String> {
        let url = cfg.cluster_url();
        let shown = crate::config::redact_url(&url);
        let servers = crate::config::broker_urls(&url)
            .map(|u| ServerAt::parse(u).ok_or_else(|| format!("{shown}: a server without a host")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "tls_required": false,
            "name": format!("tickcast {node} live"),
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": false,
        });
        match crate::config::url_credentials(&url) {
            Some((user, Some(pass))) => {
                connect["user"] = user.into();
                connect["pass"] = pass.into();
            }
            Some((token, None)) => connect["auth_token"] = token.into(),
            None => {}
        }
        let mut line = b"CONNECT ".to_vec();
        line.extend_from_slice(connect.to_string().as_bytes());
        line.extend_from_slice(b"\r\nPING\r\n");
        Ok(Target {
            servers,
            shown,
            connect: line,
        })
    }

    /// The servers to try, in order: `cluster.url`'s, then those the broker announced (as
    /// NATS clients do), each once; the one that served `last` moves to the back, so a
    /// connection lost with its server (or a server in lame duck mode) is made to another.
    fn order(&self, announced: &[ServerAt], last: Option<&ServerAt>) -> Vec<ServerAt> {
        let mut all = self.servers.clone();
        for s in announced {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        if let Some(i) = last.and_then(|l| all.iter().position(|s| s == l)) {
            all.rotate_left(i + 1);
        }
        all
    }
}

/// Shard 0's live reader: connect, read until the connection is lost, reconnect with backoff.
pub(crate) async fn live_task(shard: Rc<Shard>) {
    let cfg = shard.shared.boot.clone();
    let node = shard
        .shared
        .bridge
        .as_ref()
        .map_or("", |b| b.node_id.as_str());
    let target = match Target::new(&cfg, node) {
        Ok(t) => t,
        Err(e) => {
            // Checked when the configuration was loaded; nothing to connect to.
            tracing::error!(error = %e, "cluster: no NATS address for the live reader");
            return;
        }
    };
    let limit = Duration::from_millis(cfg.cluster.publish_timeout_ms);
    let mut failures = 0;
    let mut ever = false;
    let mut last: Option<ServerAt> = None;
    loop {
        let announced = shard
            .st
            .borrow()
            .live
            .as_ref()
            .map(|l| l.announced.clone())
            .unwrap_or_default();
        let mut failed = Vec::new();
        let mut connected = None;
        for server in target.order(&announced, last.as_ref()) {
            match monoio::time::timeout(limit, handshake(&target, &server)).await {
                Ok(Ok(c)) => {
                    connected = Some((server, c));
                    break;
                }
                Ok(Err(e)) => failed.push(format!("{server}: {e}")),
                Err(_) => failed.push(format!(
                    "{server}: not set up within {} ms",
                    limit.as_millis()
                )),
            }
        }
        if let Some((server, (stream, buf, max_payload, servers))) = connected {
            if let Some(live) = shard.st.borrow_mut().live.as_mut() {
                if let Some(servers) = servers {
                    live.announced = servers;
                }
            }
            if ever {
                metrics::counter!("tickcast_cluster_live_reconnects_total").increment(1);
                tracing::warn!(%server, "cluster: live connection to NATS restored; repairing topics");
            }
            ever = true;
            let error = session(&shard, stream, buf, max_payload).await;
            let mut st = shard.st.borrow_mut();
            // The backoff starts over only after a connection that worked (its
            // subscriptions confirmed): a server that drops every connection right after
            // the handshake is not hammered every `reconnect_min_ms`.
            if st.live.as_ref().is_some_and(|l| l.pongs > 0) {
                failures = 0;
            }
            st.live_lost();
            shard.finish(st);
            if shard.done.get() {
                return;
            }
            metrics::counter!("tickcast_cluster_live_errors_total").increment(1);
            tracing::warn!(url = %target.shown, %server, error = %error,
                "cluster: live connection to NATS lost; reconnecting");
            // The next attempt starts with the next server.
            last = Some(server);
        } else {
            tracing::error!(url = %target.shown, errors = %failed.join("; "),
                "cluster: cannot open the live connection to NATS; retrying");
            metrics::counter!("tickcast_cluster_live_errors_total").increment(1);
        }
        monoio::time::sleep(crate::cluster::backoff(&cfg.cluster, failures)).await;
        failures += 1;
    }
}

/// What a handshake gives: the connection, what was read after the `PONG`, the server's
/// `max_payload` and the servers it announced.
type Handshake = (TcpStream, BytesMut, usize, Option<Vec<ServerAt>>);

/// Connects to `server` and says `CONNECT`; returns once the server answered its `PING`.
async fn handshake(target: &Target, server: &ServerAt) -> Result<Handshake, String> {
    // Every address of the name in turn, as async-nats does.
    let mut failed = Vec::new();
    let mut stream = None;
    for addr in server.addrs().await? {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => failed.push(format!("connect {addr}: {e}")),
        }
    }
    let Some(mut stream) = stream else {
        return Err(failed.join("; "));
    };
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // The server speaks first: INFO.
    let info = loop {
        match nats_wire::parse(&buf, 0) {
            nats_wire::Parsed::Op(nats_wire::Op::Info(r), used) => {
                let info = info_json(&buf[r])?;
                buf.advance(used);
                break info;
            }
            nats_wire::Parsed::Incomplete => buf = read_more(&mut stream, buf).await?,
            nats_wire::Parsed::Op(op, _) => return Err(format!("{op:?} before INFO")),
            nats_wire::Parsed::Invalid(e) => return Err(e),
        }
    };
    if info["tls_required"].as_bool() == Some(true) {
        return Err(
            "the server requires TLS, which the shard's live reader does not speak: \
                    set cluster.nats_live_reader = \"bridge\""
                .into(),
        );
    }
    if lame_duck(&info) {
        return Err("the server is in lame duck mode".into());
    }
    // The server's bound on a message's payload (its headers are bounded apart,
    // `nats_wire::HEADERS_MAX`); 1 MiB is NATS' default.
    let max_payload = info["max_payload"]
        .as_u64()
        .unwrap_or(1 << 20)
        .min(crate::limits::CLUSTER_LIVE_MESSAGE_MAX as u64) as usize;
    let (res, _) = stream.write_all(target.connect.clone()).await;
    res.map_err(|e| format!("write CONNECT: {e}"))?;
    let mut servers = announced(&info);
    loop {
        match nats_wire::parse(&buf, max_payload) {
            nats_wire::Parsed::Op(nats_wire::Op::Pong, used) => {
                buf.advance(used);
                return Ok((stream, buf, max_payload, servers));
            }
            nats_wire::Parsed::Op(nats_wire::Op::Err(e), _) => return Err(format!("-ERR {e}")),
            // An update meanwhile (the cluster's servers, lame duck mode).
            nats_wire::Parsed::Op(nats_wire::Op::Info(r), used) => {
                let info = info_json(&buf[r])?;
                buf.advance(used);
                if lame_duck(&info) {
                    return Err("the server is in lame duck mode".into());
                }
                servers = announced(&info).or(servers);
            }
            nats_wire::Parsed::Op(_, used) => buf.advance(used),
            nats_wire::Parsed::Incomplete => buf = read_more(&mut stream, buf).await?,
            nats_wire::Parsed::Invalid(e) => return Err(e),
        }
    }
}

async fn read_more<R: AsyncReadRent>(
    stream: &mut R,
    mut buf: BytesMut,
) -> Result<BytesMut, String> {
    buf.reserve(READ_CHUNK_BYTES);
    let (res, buf) = stream.read(buf).await;
    match res {
        Ok(0) => Err("the server closed the connection".into()),
        Ok(_) => Ok(buf),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// One connection's life: subscribe, then read and hand on messages until it ends. Returns
/// why it ended.
async fn session(shard: &Rc<Shard>, stream: TcpStream, mut buf: BytesMut, max: usize) -> String {
    let fd = match rustix::io::fcntl_dupfd_cloexec(crate::sys::fd_of(&stream), 0) {
        Ok(fd) => fd,
        Err(e) => return format!("duplicate the socket's descriptor: {e}"),
    };
    let (mut rd, wr) = stream.into_split();
    let generation = {
        let mut st = shard.st.borrow_mut();
        let g = st.live_connected(fd);
        shard.finish(st);
        g
    };
    monoio::spawn(writer(shard.clone(), wr, generation));
    loop {
        {
            let mut st = shard.st.borrow_mut();
            let now = st.clock();
            if let Some(live) = st.live.as_mut() {
                live.last_read_ms = now;
            }
            let handled = st.live_ops(&mut buf, max);
            shard.finish(st);
            if let Err(e) = handled {
                return e;
            }
        }
        buf = match read_more(&mut rd, buf).await {
            Ok(b) => b,
            Err(e) => return e,
        };
    }
}

/// Writes what the sections queued for the broker, until its connection is replaced.
async fn writer(shard: Rc<Shard>, mut wr: OwnedWriteHalf<TcpStream>, generation: u64) {
    let mut spare = Vec::new();
    loop {
        let data = std::future::poll_fn(|cx| {
            let mut st = shard.st.borrow_mut();
            let now = st.clock();
            let Some(live) = st.live.as_mut().filter(|l| l.generation == generation) else {
                return Poll::Ready(None);
            };
            live.ping_if_needed(now);
            if live.out.is_empty() {
                live.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(std::mem::replace(
                &mut live.out,
                std::mem::take(&mut spare),
            )))
        })
        .await;
        let Some(data) = data else { return };
        let (res, mut data) = wr.write_all(data).await;
        if let Err(e) = res {
            let mut st = shard.st.borrow_mut();
            if let Some(live) = st.live.as_mut().filter(|l| l.generation == generation) {
                tracing::warn!(error = %e, "cluster: write to NATS failed on the live connection");
                live.shut_down();
            }
            return;
        }
        data.clear();
        spare = data;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> ServerAt {
        ServerAt::parse(&format!("nats://{s}")).unwrap()
    }

    #[test]
    fn servers_are_tried_configured_first_and_the_last_one_used_last() {
        let mut cfg = Config::default();
        cfg.cluster.engine = crate::config::Engine::Nats;
        cfg.cluster.url = "nats://u:p@a:4222, nats://u:p@b".into();
        let target = Target::new(&cfg, "n").unwrap();
        assert_eq!(target.servers, [at("a:4222"), at("b:4222")]);
        let connect = String::from_utf8(target.connect.clone()).unwrap();
        assert!(connect.contains(r#""user":"u""#) && connect.contains(r#""pass":"p""#));
        let announced = [at("b:4222"), at("c:4223")];
        let order = |last: Option<&str>| target.order(&announced, last.map(at).as_ref());
        assert_eq!(order(None), [at("a"), at("b"), at("c:4223")]);
        assert_eq!(order(Some("a")), [at("b"), at("c:4223"), at("a")]);
        assert_eq!(order(Some("c:4223")), [at("a"), at("b"), at("c:4223")]);
        // A server no longer announced: the order is the configured one.
        assert_eq!(order(Some("d")), [at("a"), at("b"), at("c:4223")]);
    }

    #[test]
    fn announced_servers_are_read_from_info() {
        let info = serde_json::json!({
            "connect_urls": ["127.0.0.1:4223", "[::1]:4224", "no such host:1", 7, "h"],
        });
        let got = announced(&info).unwrap();
        assert_eq!(got, [at("127.0.0.1:4223"), at("[::1]:4224"), at("h:4222")]);
        assert_eq!(announced(&serde_json::json!({"max_payload": 1})), None);
        // Each once (host names in any case), and no more than the bound.
        let many: Vec<String> = (0..10_000)
            .map(|i| format!("N{}:{}", i % 2, 5000 + i))
            .collect();
        let info = serde_json::json!({"connect_urls": ["A:1", "a:1", "a:1"]});
        assert_eq!(announced(&info).unwrap(), [at("a:1")]);
        let got = announced(&serde_json::json!({ "connect_urls": many })).unwrap();
        assert_eq!(got.len(), CLUSTER_ANNOUNCED_SERVERS_MAX);
        assert_eq!(got[1], at("n1:5001"));
    }
}
