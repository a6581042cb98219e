//! Cluster mode (docs/CLUSTER.md): many tickcast nodes, one topic space, over a broker.
//!
//! The **bridge** is one thread per node running a single-threaded tokio runtime (the broker
//! clients, async-nats and redis, are tokio libraries). Shards never wait on it:
//!
//! - shard → bridge: [`Cmd`]s on a bounded flume channel (publish, interest, history fetch,
//!   cluster query). A full channel refuses the command at once.
//! - bridge → shard: [`ToShard`] messages on the mesh's ring for producers outside the shards, the
//!   same path a peer shard's frames take. A full ring spills into a bounded per-shard queue
//!   the bridge retries every millisecond; past `cluster.inbound_queue_max` broker messages
//!   are dropped and counted (the topic's owner sees the hole and repairs it from history).
//!
//! - NATS, `cluster.nats_live_reader = "shard"` (the default): live messages skip the bridge;
//!   shard 0 reads them on a connection of its own (`shard::live`, parser in `nats_wire`).
//!
//! **Sequencing.** The broker decides each message's `seq` and `epoch` (JetStream's
//! per-subject compare-and-set, or a Redis script), so they are the same on every node. A
//! node's shards only order and de-duplicate: a topic's owner shard delivers `seq` N+1 after
//! N, drops what it has seen, and repairs holes from the broker's history (`shard::remote`).
//!
//! **Interest.** A node subscribes at the broker to a pattern only while one of its shards
//! has a local subscriber for it; a `subscribe` is acknowledged only after the broker has the
//! subscription.

mod bridge;
pub mod envelope;
mod membership;
mod nats;
pub(crate) mod nats_wire;
mod queries;
mod redis;

use bridge::run;
pub use membership::INGEST;
use membership::{
    HEARTBEATS, QUERIES, answers_for, expire_nodes, heartbeat, ingest_external, publish_nodes,
    sync_leadership,
};
use queries::{on_answer, on_query, start_query};

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    config::{Config, Engine},
    protocol::{ErrorCode, Published},
    publish::{PublishOutcome, ReplyTo},
};
pub use envelope::{Envelope, Received};

/// Why the broker did not do what this node asked. Errors have three origins in tickcast: a
/// client's request (`protocol::ErrorCode`, `protocol::BadRequest`), the broker (this), and
/// the node itself (a full queue, a shard that did not answer: `ErrorCode::Capacity`,
/// `ErrorCode::Internal`). A broker error never reaches a client as such: a publish it fails
/// is answered `unavailable`, a fetch it fails becomes a `lost` gap or a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    pub kind: BrokerErrorKind,
    /// What was asked, and what the broker or its client library said.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerErrorKind {
    /// No answer within the node's deadline.
    Timeout,
    /// The broker, or its client library, reported a failure (refused, disconnected).
    Failed,
    /// The broker's answer is not what a tickcast node writes there.
    Invalid,
}

impl BrokerError {
    pub fn failed(detail: impl Into<String>) -> BrokerError {
        BrokerError {
            kind: BrokerErrorKind::Failed,
            detail: detail.into(),
        }
    }

    pub fn timeout(detail: impl Into<String>) -> BrokerError {
        BrokerError {
            kind: BrokerErrorKind::Timeout,
            detail: detail.into(),
        }
    }

    pub fn invalid(detail: impl Into<String>) -> BrokerError {
        BrokerError {
            kind: BrokerErrorKind::Invalid,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            BrokerErrorKind::Timeout => "broker timeout",
            BrokerErrorKind::Failed => "broker error",
            BrokerErrorKind::Invalid => "invalid broker data",
        };
        write!(f, "{kind}: {}", self.detail)
    }
}

impl std::error::Error for BrokerError {}

/// What the bridge hands a shard (over the mesh's ring for producers outside the shards).
#[derive(Debug)]
pub enum ToShard {
    /// To a topic's owner: a message the broker sequenced.
    Remote(Box<Received>),
    /// To a topic's owner: the broker's history of a topic ([`Cmd::Fetch`]).
    Fetched(Box<Fetched>),
    /// The broker has this shard's interest up to `seq` ([`Cmd::Interest`]).
    InterestAck { seq: u64 },
    /// The broker connection is back: owners repair their topics.
    Up,
    /// To shard 0: this node's part of another node's admin query.
    QueryLocal(Box<QueryLocal>),
    /// The other nodes' parts of this shard's admin query ([`Cmd::Query`]).
    QueryReply(Box<QueryReply>),
    /// The outcome of a [`Cmd::Publish`].
    Published(Box<PublishOutcome>),
}

/// An admin query from another node, answered with this node's part as JSON.
#[derive(Debug)]
pub struct QueryLocal {
    pub path: Box<str>,
    pub reply: Option<tokio::sync::oneshot::Sender<Vec<u8>>>,
}

/// The bridge's view of the node it serves: where to hand messages, and what its
/// heartbeats announce. Implemented by the shards' side, so the bridge
/// needs nothing of their state.
pub trait ShardLink: Send + Sync + 'static {
    /// Shards of this node.
    fn shards(&self) -> usize;
    /// Hands `msg` to shard `dst` without waiting; gives it back when its queue is full.
    fn deliver(&self, dst: usize, msg: ToShard) -> Result<(), ToShard>;
    /// Open connections of this node.
    fn connections(&self) -> usize;
    /// This node's WebSocket listen address.
    fn local_addr(&self) -> std::net::SocketAddr;
}

/// A request from a shard to the bridge.
#[derive(Debug)]
pub enum Cmd {
    /// Publish through the broker; the outcome goes back to `shard` as `ToShard::Published`.
    Publish(Box<PublishCmd>),
    /// Shard `shard`'s local interest in `pattern` appeared (`add`) or vanished; acknowledged
    /// with `ToShard::InterestAck { seq }` once the broker has it.
    Interest {
        shard: u8,
        pattern: Box<str>,
        add: bool,
        seq: u64,
    },
    /// The broker's position and last `max` messages of `topic`, for its owner `shard`
    /// (answered with `ToShard::Fetched`, also on failure).
    Fetch {
        shard: u8,
        topic: Box<str>,
        max: usize,
    },
    /// A cluster-wide admin query: every other live node's answer, back to `shard`.
    Query {
        shard: u8,
        token: u32,
        path: Box<str>,
    },
}

#[derive(Debug)]
pub struct PublishCmd {
    pub topic: Box<str>,
    pub data: Vec<u8>,
    pub idem: Option<Box<str>>,
    pub to_user: bool,
    pub shard: u8,
    pub reply: ReplyTo,
}

/// The broker's answer to a [`Cmd::Fetch`].
#[derive(Debug)]
pub struct Fetched {
    pub topic: Box<str>,
    /// False: the broker could not be asked (down, timeout); the other fields are empty.
    pub ok: bool,
    /// The topic's last `seq` and its `epoch` at the broker (0, 0: never published).
    pub last: u64,
    pub epoch: u64,
    /// The retained messages, oldest first, at most the `max` asked for.
    pub msgs: Vec<Received>,
}

/// Other nodes' answers to a [`Cmd::Query`]: (node, JSON body) each, plus the nodes that did
/// not answer in time.
#[derive(Debug)]
pub struct QueryReply {
    pub token: u32,
    pub parts: Vec<(String, Bytes)>,
    pub missing: Vec<String>,
}

/// A live node as heartbeats describe it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub connections: u64,
    pub shards: u64,
    /// The node's WebSocket listen address.
    pub addr: String,
    pub started_unix_s: u64,
    /// When this node last heard from it.
    seen: Instant,
}

impl NodeInfo {
    pub fn age_ms(&self) -> u64 {
        self.seen.elapsed().as_millis() as u64
    }
}

/// The shards' handle on the bridge (in `Shared`).
pub struct Bridge {
    tx: flume::Sender<Cmd>,
    /// Publishes handed to the bridge and not yet answered (bounded by
    /// `cluster.publish_queue_max`).
    publishes: std::sync::atomic::AtomicUsize,
    publish_max: usize,
    pub node_id: String,
    pub engine: Engine,
    /// Other live nodes (heartbeats within `cluster.node_ttl_ms`); read by `/v1/cluster`.
    nodes: Mutex<Vec<NodeInfo>>,
    /// The broker connection is up.
    up: AtomicBool,
    /// NATS with `cluster.nats_live_reader = "shard"`: live messages come over shard 0's own
    /// connection (`shard::live`), and `live_up` says whether it is up.
    pub live_in_shard: bool,
    live_up: AtomicBool,
    /// This node sequences external publishes (`<prefix>.in.>`).
    leader: AtomicBool,
    rx: Mutex<Option<flume::Receiver<Cmd>>>,
}

impl Bridge {
    /// The handle; the thread starts with [`Bridge::spawn`] once `Shared` exists.
    pub fn new(cfg: &Config) -> Arc<Bridge> {
        // Unbounded for control commands (interest, fetches: few, never to be lost);
        // publishes are bounded by their own count.
        let (tx, rx) = flume::unbounded();
        let node_id = if cfg.cluster.node_id.is_empty() {
            format!("n-{:08x}", fastrand::u32(..))
        } else {
            cfg.cluster.node_id.clone()
        };
        Arc::new(Bridge {
            tx,
            publishes: std::sync::atomic::AtomicUsize::new(0),
            publish_max: cfg.cluster.publish_queue_max,
            node_id,
            engine: cfg.cluster.engine,
            nodes: Mutex::new(Vec::new()),
            up: AtomicBool::new(false),
            live_in_shard: live_in_shard(cfg),
            live_up: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            rx: Mutex::new(Some(rx)),
        })
    }

    /// Starts the bridge thread.
    pub fn spawn(self: &Arc<Self>, cfg: Config, link: Arc<dyn ShardLink>) -> Result<(), String> {
        let rx = self
            .rx
            .lock()
            .map_err(|_| "bridge: poisoned")?
            .take()
            .ok_or("bridge: started twice")?;
        let bridge = self.clone();
        std::thread::Builder::new()
            .name("tc-bridge".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread tokio runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let ctx = Rc::new(Ctx::new(bridge, cfg, link));
                    match ctx.bridge.engine {
                        Engine::Nats => run::<nats::Nats>(ctx, rx).await,
                        Engine::Redis => run::<redis::Redis>(ctx, rx).await,
                        Engine::Memory => {}
                    }
                });
            })
            .map_err(|e| format!("spawn bridge thread: {e}"))?;
        Ok(())
    }

    /// Hands a control command to the bridge.
    pub fn send(&self, cmd: Cmd) {
        let _ = self.tx.send(cmd);
    }

    /// Hands a publish to the bridge; gives it back when `cluster.publish_queue_max`
    /// publishes already wait for the broker.
    pub fn send_publish(&self, p: PublishCmd) -> Result<(), PublishCmd> {
        if self.publishes.fetch_add(1, Ordering::Relaxed) >= self.publish_max {
            self.publishes.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("tickcast_cluster_publish_rejects_total").increment(1);
            return Err(p);
        }
        if let Err(e) = self.tx.send(Cmd::Publish(Box::new(p))) {
            self.publishes.fetch_sub(1, Ordering::Relaxed);
            let Cmd::Publish(p) = e.into_inner() else {
                unreachable!("sent a publish")
            };
            return Err(*p);
        }
        Ok(())
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether live messages reach this node: shard 0's live connection is up, or the bridge
    /// reads them (then [`Bridge::is_up`] says it).
    pub fn is_live_up(&self) -> bool {
        !self.live_in_shard || self.live_up.load(Ordering::Relaxed)
    }

    /// Shard 0's live reader reports its connection.
    pub fn set_live_up(&self, up: bool) {
        self.live_up.store(up, Ordering::Relaxed);
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Live nodes other than this one.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

/// What an engine tells the bridge.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A sequenced message (the envelope's wire form).
    Live(Bytes),
    /// A message on one of the bridge's own channels (heartbeats, queries, external ingest):
    /// the channel name below the prefix, and the payload.
    Raw(String, Bytes),
    /// The broker connection came back after a loss.
    Up,
    Down,
}

pub(crate) type InboundTx = mpsc::UnboundedSender<Inbound>;

/// What a broker must do for tickcast. Subjects/channels are named below `cluster.prefix`;
/// patterns use tickcast's topic syntax (`*` one segment, `>` the rest).
pub(crate) trait Broker: Sized + 'static {
    /// Connects, retrying with backoff (and logging why) until it succeeds. After that the
    /// engine reconnects by itself and reports `Inbound::Down`/`Up`.
    async fn connect(ctx: &Ctx, inbound: InboundTx) -> Self;
    /// Publishes `env` with the next `seq` of its topic (and the topic's epoch), which the
    /// broker assigns atomically with the append to history. `idem` de-duplicates retries.
    /// Called in the order publishes were handed to the bridge: whatever fixes a publish's
    /// place in its topic's order must happen in this call, before the future is returned
    /// (the futures themselves run concurrently).
    fn publish(
        self: &Rc<Self>,
        env: Envelope,
        idem: Option<Box<str>>,
    ) -> impl std::future::Future<Output = Result<Published, BrokerError>> + 'static;
    /// Whether publishes to one topic must wait for the previous one's confirmation (a
    /// compare-and-set sequence) or may be pipelined (the broker orders them itself).
    const SERIAL_PER_TOPIC: bool;
    /// The topic's position and last `max` retained messages.
    async fn fetch(&self, topic: &str, max: usize) -> Result<Fetched, BrokerError>;
    /// Live messages of topics matching `pattern` start arriving as `Inbound::Live`.
    async fn live_subscribe(&self, pattern: &str) -> Result<(), BrokerError>;
    async fn live_unsubscribe(&self, pattern: &str) -> Result<(), BrokerError>;
    /// Messages on channel `name` (a pattern) arrive as `Inbound::Raw`.
    async fn raw_subscribe(&self, name: &str) -> Result<(), BrokerError>;
    async fn raw_unsubscribe(&self, name: &str) -> Result<(), BrokerError>;
    async fn raw_publish(&self, name: &str, payload: Bytes) -> Result<(), BrokerError>;
    /// Returns once the broker has applied every subscription change made before.
    async fn flush(&self) -> Result<(), BrokerError>;
}

/// Whether live messages are read by shard 0 (`shard::live`) rather than by the bridge thread:
/// NATS with `cluster.nats_live_reader = "shard"`.
pub fn live_in_shard(cfg: &Config) -> bool {
    cfg.cluster.engine == Engine::Nats && cfg.cluster.nats_live_reader == "shard"
}

/// The reconnect delay before attempt `n` (0-based): doubling from `reconnect_min_ms` to
/// `reconnect_max_ms`, with up to 25 % jitter so restarted nodes do not retry in step.
pub fn backoff(c: &crate::config::Cluster, n: usize) -> Duration {
    let base = c
        .reconnect_min_ms
        .saturating_mul(1u64 << n.min(20))
        .min(c.reconnect_max_ms);
    Duration::from_millis(base + fastrand::u64(0..=base / 4))
}

/// Shared state of the bridge's tasks (one thread: `Rc`/`RefCell`).
pub(crate) struct Ctx {
    pub bridge: Arc<Bridge>,
    pub cfg: Config,
    /// The shards of this node.
    pub link: Arc<dyn ShardLink>,
    pub url: String,
    /// `url` with its password or token replaced by `***`: what logs show.
    pub url_shown: String,
    /// Per shard: messages the shard's ring had no room for.
    outlet: RefCell<Vec<VecDeque<ToShard>>>,
    /// Known nodes by id (this one excluded).
    nodes: RefCell<HashMap<String, NodeInfo>>,
    /// Cluster queries this node asked, by query id.
    queries: RefCell<HashMap<u64, PendingQuery>>,
    /// The outlet has messages waiting (wakes its retry task).
    outlet_waiting: tokio::sync::Notify,
    /// History fetches under way at once: after a reconnect every topic with subscribers is
    /// checked, and thousands of simultaneous reads would only queue at the broker.
    fetches: tokio::sync::Semaphore,
    /// No leadership is claimed before this: `cluster.node_ttl_ms` after the first connection
    /// to the broker and after every reconnect, the time to hear every live node's heartbeat.
    settle_until: std::cell::Cell<Instant>,
    /// `tickcast_cluster_received_total`, looked up once: `metrics::counter!` hashes the
    /// name and locks the registry on every call, and this one counts every broker message.
    received: metrics::Counter,
}

struct PendingQuery {
    shard: u8,
    token: u32,
    want: Vec<String>,
    parts: Vec<(String, Bytes)>,
}

impl Ctx {
    fn new(bridge: Arc<Bridge>, cfg: Config, link: Arc<dyn ShardLink>) -> Ctx {
        let shards = link.shards();
        let settle = Duration::from_millis(cfg.cluster.node_ttl_ms);
        Ctx {
            url: cfg.cluster_url(),
            url_shown: crate::config::redact_url(&cfg.cluster_url()),
            bridge,
            cfg,
            link,
            outlet: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            nodes: RefCell::new(HashMap::new()),
            queries: RefCell::new(HashMap::new()),
            settle_until: std::cell::Cell::new(Instant::now() + settle),
            fetches: tokio::sync::Semaphore::new(crate::limits::CLUSTER_FETCHES_MAX),
            outlet_waiting: tokio::sync::Notify::new(),
            received: metrics::counter!("tickcast_cluster_received_total"),
        }
    }

    pub fn cluster(&self) -> &crate::config::Cluster {
        &self.cfg.cluster
    }

    /// The reconnect delay before attempt `n` ([`backoff`]).
    pub fn backoff(&self, n: usize) -> Duration {
        backoff(self.cluster(), n)
    }

    /// Largest history any topic class keeps (the broker keeps this many per topic, and at
    /// least the last message).
    pub fn history_max(&self) -> usize {
        self.cfg
            .topics
            .iter()
            .map(|c| c.history_size)
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// Sends `msg` to shard `dst` through the mesh. `droppable` messages (broker traffic) are
    /// dropped past `cluster.inbound_queue_max` queued; control messages never are.
    fn deliver(&self, dst: usize, msg: ToShard, droppable: bool) {
        let mut outlet = self.outlet.borrow_mut();
        let q = &mut outlet[dst];
        if q.is_empty() {
            match self.link.deliver(dst, msg) {
                Ok(()) => return,
                Err(back) => {
                    q.push_back(back);
                    return self.outlet_waiting.notify_one();
                }
            }
        }
        if droppable && q.len() >= self.cluster().inbound_queue_max {
            metrics::counter!("tickcast_cluster_inbound_drops_total").increment(1);
            return;
        }
        q.push_back(msg);
    }

    /// Moves queued messages into rings that have room; true if some are still waiting.
    fn retry_outlet(&self) -> bool {
        let mut outlet = self.outlet.borrow_mut();
        let mut waiting = false;
        for (dst, q) in outlet.iter_mut().enumerate() {
            while let Some(msg) = q.pop_front() {
                if let Err(back) = self.link.deliver(dst, msg) {
                    q.push_front(back);
                    waiting = true;
                    break;
                }
            }
        }
        waiting
    }

    fn reply(&self, shard: u8, reply: ReplyTo, result: Result<Published, ErrorCode>) {
        if matches!(reply, ReplyTo::None) {
            return;
        }
        let msg = ToShard::Published(Box::new(PublishOutcome { reply, result }));
        self.deliver(shard as usize, msg, false);
    }

    fn to_every_shard(&self, msg: impl Fn() -> ToShard) {
        for dst in 0..self.link.shards() {
            self.deliver(dst, msg(), false);
        }
    }

    /// A sequenced message from the broker goes to its topic's owner shard.
    fn on_live(&self, wire: Bytes) {
        match envelope::decode(&wire) {
            Ok(m) => {
                self.received.increment(1);
                let owner = crate::pubsub::topic::owner_shard(&m.topic, self.link.shards());
                self.deliver(owner, ToShard::Remote(Box::new(m)), true);
            }
            Err(e) => {
                metrics::counter!("tickcast_cluster_invalid_total").increment(1);
                crate::warn_sampled!(error = %e, "cluster: dropped an invalid message from the broker");
            }
        }
    }
}
