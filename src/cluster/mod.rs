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
//! **Sequencing.** The broker decides each message's `seq` and `epoch` (JetStream's
//! per-subject compare-and-set, or a Redis script), so they are the same on every node. A
//! node's shards only order and de-duplicate: a topic's owner shard delivers `seq` N+1 after
//! N, drops what it has seen, and repairs holes from the broker's history (`shard::remote`).
//!
//! **Interest.** A node subscribes at the broker to a pattern only while one of its shards
//! has a local subscriber for it; a `subscribe` is acknowledged only after the broker has the
//! subscription.

pub mod envelope;
mod nats;
mod redis;

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
    ) -> impl std::future::Future<Output = Result<Published, String>> + 'static;
    /// Whether publishes to one topic must wait for the previous one's confirmation (a
    /// compare-and-set sequence) or may be pipelined (the broker orders them itself).
    const SERIAL_PER_TOPIC: bool;
    /// The topic's position and last `max` retained messages.
    async fn fetch(&self, topic: &str, max: usize) -> Result<Fetched, String>;
    /// Live messages of topics matching `pattern` start arriving as `Inbound::Live`.
    async fn live_subscribe(&self, pattern: &str) -> Result<(), String>;
    async fn live_unsubscribe(&self, pattern: &str) -> Result<(), String>;
    /// Messages on channel `name` (a pattern) arrive as `Inbound::Raw`.
    async fn raw_subscribe(&self, name: &str) -> Result<(), String>;
    async fn raw_unsubscribe(&self, name: &str) -> Result<(), String>;
    async fn raw_publish(&self, name: &str, payload: Bytes) -> Result<(), String>;
    /// Returns once the broker has applied every subscription change made before.
    async fn flush(&self) -> Result<(), String>;
}

/// Shared state of the bridge's tasks (one thread: `Rc`/`RefCell`).
pub(crate) struct Ctx {
    pub bridge: Arc<Bridge>,
    pub cfg: Config,
    /// The shards of this node.
    pub link: Arc<dyn ShardLink>,
    pub url: String,
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
            bridge,
            cfg,
            link,
            outlet: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            nodes: RefCell::new(HashMap::new()),
            queries: RefCell::new(HashMap::new()),
            settle_until: std::cell::Cell::new(Instant::now() + settle),
            fetches: tokio::sync::Semaphore::new(FETCHES_MAX),
            outlet_waiting: tokio::sync::Notify::new(),
        }
    }

    pub fn cluster(&self) -> &crate::config::Cluster {
        &self.cfg.cluster
    }

    /// The reconnect delay before attempt `n` (0-based): doubling from `reconnect_min_ms` to
    /// `reconnect_max_ms`, with up to 25 % jitter so restarted nodes do not retry in step.
    pub fn backoff(&self, n: usize) -> Duration {
        let c = self.cluster();
        let base = c
            .reconnect_min_ms
            .saturating_mul(1u64 << n.min(20))
            .min(c.reconnect_max_ms);
        Duration::from_millis(base + fastrand::u64(0..=base / 4))
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
                metrics::counter!("tickcast_cluster_received_total").increment(1);
                let owner = crate::pubsub::topic::owner_shard(&m.topic, self.link.shards());
                self.deliver(owner, ToShard::Remote(Box::new(m)), true);
            }
            Err(e) => {
                metrics::counter!("tickcast_cluster_invalid_total").increment(1);
                tracing::warn!(error = %e, "cluster: dropped an invalid message from the broker");
            }
        }
    }
}

/// Heartbeat body: this node's id, its connection count, shards, address and start time.
fn heartbeat(ctx: &Ctx, started_unix_s: u64) -> Bytes {
    let body = serde_json::json!({
        "node": ctx.bridge.node_id,
        "connections": ctx.link.connections(),
        "shards": ctx.link.shards(),
        "addr": ctx.link.local_addr().to_string(),
        "started": started_unix_s,
    });
    Bytes::from(body.to_string())
}

/// Channels below the prefix: heartbeats, queries to every node, answers to one node, and
/// the external publishers' ingest subjects.
const HEARTBEATS: &str = "node.hb";
const QUERIES: &str = "node.q";
fn answers_for(node: &str) -> String {
    format!("node.r.{node}")
}
pub const INGEST: &str = "in";

/// The bridge: connect, subscribe to the node channels, then serve commands and broker
/// messages until the process exits.
async fn run<B: Broker>(ctx: Rc<Ctx>, cmds: flume::Receiver<Cmd>) {
    describe_metrics();
    let (inbound_tx, mut inbound) = mpsc::unbounded_channel();
    // Until the first connection the node serves without the broker: publishes fail at
    // once (`unavailable`), fetches report failure, interest is acknowledged and kept for
    // when the broker is there.
    let mut early_interest = Vec::new();
    let connecting = B::connect(&ctx, inbound_tx);
    tokio::pin!(connecting);
    let broker = loop {
        tokio::select! {
            broker = &mut connecting => break Rc::new(broker),
            cmd = cmds.recv_async() => {
                let Ok(cmd) = cmd else { return };
                match cmd {
                    Cmd::Publish(p) => {
                        crate::fault::check(crate::fault::Site::Bridge, &p.topic);
                        ctx.bridge.publishes.fetch_sub(1, Ordering::Relaxed);
                        ctx.reply(p.shard, p.reply, Err(ErrorCode::Unavailable));
                    }
                    Cmd::Interest { shard, pattern, add, seq } => {
                        early_interest.push((shard, pattern, add, seq));
                        ctx.deliver(shard as usize, ToShard::InterestAck { seq }, false);
                    }
                    Cmd::Fetch { shard, topic, .. } => {
                        let failed = Fetched { topic, ok: false, last: 0, epoch: 0, msgs: Vec::new() };
                        ctx.deliver(shard as usize, ToShard::Fetched(Box::new(failed)), false);
                    }
                    Cmd::Query { shard, token, .. } => {
                        let rep = QueryReply { token, parts: Vec::new(), missing: Vec::new() };
                        ctx.deliver(shard as usize, ToShard::QueryReply(Box::new(rep)), false);
                    }
                }
            }
        }
    };
    ctx.bridge.up.store(true, Ordering::Relaxed);
    // Heartbeats are heard from now on: no lead before they have had a TTL to come, however
    // long the first connection took (before, a node connecting later than that after its
    // start took the lead at once, next to the node holding it).
    let settle = Duration::from_millis(ctx.cluster().node_ttl_ms);
    ctx.settle_until.set(Instant::now() + settle);
    tracing::info!(node = %ctx.bridge.node_id, url = %ctx.url, "cluster: connected to the broker");
    for name in [HEARTBEATS, QUERIES, &answers_for(&ctx.bridge.node_id)] {
        if let Err(e) = broker.raw_subscribe(name).await {
            tracing::error!(error = %e, channel = name, "cluster: subscribe failed");
        }
    }
    // User messages may be for a connection on any node: every node takes them all.
    if let Err(e) = broker.live_subscribe("user.>").await {
        tracing::error!(error = %e, "cluster: subscribe to user messages failed");
    }
    let _ = broker.flush().await;
    let started = crate::frame::unix_us() / 1_000_000;

    // Messages a full shard ring did not take: retried every millisecond while any wait
    // (no timer at all otherwise). Nothing else runs in this task, so a slow broker call can
    // never hold deliveries back.
    {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            loop {
                ctx.outlet_waiting.notified().await;
                while ctx.retry_outlet() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
    }
    // Heartbeats, node expiry, ingest leadership.
    {
        let ctx = ctx.clone();
        let broker = broker.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ctx.cluster().heartbeat_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = broker
                    .raw_publish(HEARTBEATS, heartbeat(&ctx, started))
                    .await;
                expire_nodes(&ctx);
                sync_leadership(&ctx, &*broker).await;
            }
        });
    }
    // Interest changes, in order, each acknowledged once the broker has it.
    let (interest_tx, interest_rx) = mpsc::unbounded_channel();
    for early in early_interest {
        let _ = interest_tx.send(early);
    }
    tokio::task::spawn_local(interest_task(ctx.clone(), broker.clone(), interest_rx));
    // Broker messages.
    {
        let ctx = ctx.clone();
        let broker = broker.clone();
        tokio::task::spawn_local(async move {
            while let Some(msg) = inbound.recv().await {
                match msg {
                    Inbound::Live(wire) => ctx.on_live(wire),
                    Inbound::Raw(name, body) => on_raw(&ctx, &broker, &name, body),
                    Inbound::Up => {
                        ctx.bridge.up.store(true, Ordering::Relaxed);
                        let settle = Duration::from_millis(ctx.cluster().node_ttl_ms);
                        ctx.settle_until.set(Instant::now() + settle);
                        tracing::warn!("cluster: broker connection restored; repairing topics");
                        metrics::counter!("tickcast_cluster_reconnects_total").increment(1);
                        ctx.to_every_shard(|| ToShard::Up);
                    }
                    Inbound::Down => {
                        ctx.bridge.up.store(false, Ordering::Relaxed);
                        tracing::warn!("cluster: broker connection lost; reconnecting");
                    }
                }
            }
        });
    }
    // Publishes: per topic one at a time when the broker sequences by compare-and-set. An
    // entry in `in_flight` means one publish of the topic is out; it holds the ones waiting.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Box<str>>();
    let mut in_flight: HashMap<Box<str>, VecDeque<Box<PublishCmd>>> = HashMap::new();
    let start = |p: Box<PublishCmd>| {
        let topic = p.topic.clone();
        // Called here, in command order; only the wait for the broker runs in a task.
        let publishing = publish_one(ctx.clone(), &broker, *p);
        let done = done_tx.clone();
        tokio::task::spawn_local(async move {
            publishing.await;
            let _ = done.send(topic);
        });
    };
    loop {
        tokio::select! {
            cmd = cmds.recv_async() => {
                let Ok(cmd) = cmd else { return };
                match cmd {
                    Cmd::Publish(p) => {
                        crate::fault::check(crate::fault::Site::Bridge, &p.topic);
                        if !B::SERIAL_PER_TOPIC {
                            start(p);
                        } else if let Some(waiting) = in_flight.get_mut(&p.topic) {
                            waiting.push_back(p);
                        } else {
                            in_flight.insert(p.topic.clone(), VecDeque::new());
                            start(p);
                        }
                    }
                    Cmd::Interest { shard, pattern, add, seq } => {
                        let _ = interest_tx.send((shard, pattern, add, seq));
                    }
                    Cmd::Fetch { shard, topic, max } => {
                        tokio::task::spawn_local(fetch_one(ctx.clone(), broker.clone(), shard, topic, max));
                    }
                    Cmd::Query { shard, token, path } => {
                        tokio::task::spawn_local(start_query(ctx.clone(), broker.clone(), shard, token, path));
                    }
                }
            }
            Some(topic) = done_rx.recv() => {
                ctx.bridge.publishes.fetch_sub(1, Ordering::Relaxed);
                if !B::SERIAL_PER_TOPIC {
                    continue;
                }
                if let Some(waiting) = in_flight.get_mut(&topic) {
                    match waiting.pop_front() {
                        Some(next) => start(next),
                        None => {
                            in_flight.remove(&topic);
                        }
                    }
                }
            }
        }
    }
}

/// History fetches in flight per node (see `Ctx::fetches`).
const FETCHES_MAX: usize = 32;

/// A history fetch for the topic's owner shard; always answered (`ok: false` on failure).
async fn fetch_one<B: Broker>(ctx: Rc<Ctx>, broker: Rc<B>, shard: u8, topic: Box<str>, max: usize) {
    let _permit = ctx.fetches.acquire().await;
    let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
    // A failed fetch turns a hole into a reported loss: a transient error gets two more
    // attempts, with the reconnect backoff between them.
    let mut attempt = 0;
    let fetched = loop {
        let error = match tokio::time::timeout(limit, broker.fetch(&topic, max)).await {
            Ok(Ok(f)) => break f,
            Ok(Err(e)) => e,
            Err(_) => "timed out".to_string(),
        };
        if attempt == 2 {
            tracing::warn!(topic = %topic, error = %error, "cluster: history fetch failed");
            break Fetched {
                topic,
                ok: false,
                last: 0,
                epoch: 0,
                msgs: Vec::new(),
            };
        }
        tokio::time::sleep(ctx.backoff(attempt)).await;
        attempt += 1;
    };
    metrics::counter!("tickcast_cluster_fetches_total").increment(1);
    ctx.deliver(shard as usize, ToShard::Fetched(Box::new(fetched)), false);
}

/// One publish through the broker, its outcome back to the shard that asked.
fn publish_one<B: Broker>(
    ctx: Rc<Ctx>,
    broker: &Rc<B>,
    p: PublishCmd,
) -> impl std::future::Future<Output = ()> + 'static {
    let env = Envelope {
        seq: 0,
        epoch: 0,
        ts_us: crate::frame::unix_us(),
        flags: if p.to_user { envelope::FLAG_TO_USER } else { 0 },
        origin: ctx.bridge.node_id.clone(),
        topic: p.topic.to_string(),
        data: p.data,
    };
    let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
    let publishing = broker.publish(env, p.idem);
    async move {
        let result = match tokio::time::timeout(limit, publishing).await {
            Ok(Ok(done)) => {
                metrics::counter!("tickcast_cluster_published_total").increment(1);
                Ok(done)
            }
            Ok(Err(e)) => {
                metrics::counter!("tickcast_cluster_publish_errors_total").increment(1);
                tracing::warn!(topic = %p.topic, error = %e, "cluster: publish failed");
                Err(ErrorCode::Unavailable)
            }
            Err(_) => {
                metrics::counter!("tickcast_cluster_publish_errors_total").increment(1);
                tracing::warn!(topic = %p.topic, "cluster: publish not confirmed in time");
                Err(ErrorCode::Unavailable)
            }
        };
        ctx.reply(p.shard, p.reply, result);
    }
}

/// Applies interest changes in order; per batch one flush, then the acknowledgements.
async fn interest_task<B: Broker>(
    ctx: Rc<Ctx>,
    broker: Rc<B>,
    mut rx: mpsc::UnboundedReceiver<(u8, Box<str>, bool, u64)>,
) {
    let mut counts: HashMap<Box<str>, u32> = HashMap::new();
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let mut added = false;
        for (_, pattern, add, _) in &batch {
            if *add {
                let n = counts.entry(pattern.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    added = true;
                    if let Err(e) = broker.live_subscribe(pattern).await {
                        // Not counted: the next local subscriber of the pattern tries again.
                        // (The engine re-makes wanted subscriptions on a reconnect.)
                        tracing::error!(pattern = %pattern, error = %e, "cluster: subscribe failed");
                        counts.remove(pattern);
                        continue;
                    }
                    metrics::gauge!("tickcast_cluster_subscriptions").increment(1.0);
                }
            } else if let Some(n) = counts.get_mut(pattern) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(pattern);
                    if let Err(e) = broker.live_unsubscribe(pattern).await {
                        tracing::warn!(pattern = %pattern, error = %e, "cluster: unsubscribe failed");
                    }
                    metrics::gauge!("tickcast_cluster_subscriptions").decrement(1.0);
                }
            }
        }
        // While the broker is down a flush would wait for the reconnect: the engine
        // re-subscribes on reconnect and the owners repair what was missed, so subscribers are
        // not held back.
        if added && ctx.bridge.is_up() {
            let limit = Duration::from_millis(ctx.cluster().publish_timeout_ms);
            let _ = tokio::time::timeout(limit, broker.flush()).await;
        }
        for (shard, _, _, seq) in batch.drain(..) {
            ctx.deliver(shard as usize, ToShard::InterestAck { seq }, false);
        }
    }
}

/// Heartbeats, queries and answers from other nodes, and external publishes (leader only).
/// Never waits: whatever needs the broker or the shards runs in its own task, so the task
/// feeding live messages to the shards is never held up.
fn on_raw<B: Broker>(ctx: &Rc<Ctx>, broker: &Rc<B>, name: &str, body: Bytes) {
    if name == HEARTBEATS {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        let Some(id) = v["node"].as_str() else { return };
        if id == ctx.bridge.node_id {
            return;
        }
        let info = NodeInfo {
            id: id.to_string(),
            connections: v["connections"].as_u64().unwrap_or(0),
            shards: v["shards"].as_u64().unwrap_or(0),
            addr: v["addr"].as_str().unwrap_or("").to_string(),
            started_unix_s: v["started"].as_u64().unwrap_or(0),
            seen: Instant::now(),
        };
        let new = ctx
            .nodes
            .borrow_mut()
            .insert(id.to_string(), info)
            .is_none();
        publish_nodes(ctx);
        if new {
            tracing::info!(node = id, "cluster: node joined");
            let (ctx, broker) = (ctx.clone(), broker.clone());
            tokio::task::spawn_local(async move { sync_leadership(&ctx, &*broker).await });
        }
    } else if name == QUERIES {
        tokio::task::spawn_local(on_query(ctx.clone(), broker.clone(), body));
    } else if name == answers_for(&ctx.bridge.node_id) {
        on_answer(ctx, body);
    } else if let Some(topic) = name.strip_prefix(INGEST).and_then(|t| t.strip_prefix('.')) {
        ingest_external(ctx, topic, body);
    }
}

/// An external system's publish (`<prefix>.in.<topic>`, plain JSON): validated like any
/// publish, then sequenced through the broker by this node (the leader).
fn ingest_external(ctx: &Rc<Ctx>, topic: &str, body: Bytes) {
    let cfg = &ctx.cfg;
    let fail = |why: &str| {
        metrics::counter!("tickcast_cluster_ingest_rejects_total").increment(1);
        tracing::warn!(topic, why, "cluster: external publish refused");
    };
    if crate::pubsub::topic::validate_topic(topic).is_err() {
        return fail("invalid topic");
    }
    if body.len() > cfg.limits.publish_data_bytes_max {
        return fail("data over limits.publish_data_bytes_max");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return fail("data is not one JSON value");
    }
    metrics::counter!("tickcast_cluster_ingested_total").increment(1);
    let cmd = PublishCmd {
        topic: topic.into(),
        data: body.to_vec(),
        idem: None,
        to_user: false,
        shard: 0,
        reply: ReplyTo::None,
    };
    // Through the same queue as local publishes (per-topic order, bounds).
    if ctx.bridge.send_publish(cmd).is_err() {
        fail("publish queue full");
    }
}

/// Drops nodes not heard from within `cluster.node_ttl_ms` (not while this node cannot
/// hear anyone: its broker connection is down).
fn expire_nodes(ctx: &Ctx) {
    if !ctx.bridge.is_up() {
        return;
    }
    let ttl = Duration::from_millis(ctx.cluster().node_ttl_ms);
    let mut gone = Vec::new();
    ctx.nodes.borrow_mut().retain(|id, n| {
        let live = n.seen.elapsed() < ttl;
        if !live {
            gone.push(id.clone());
        }
        live
    });
    for id in gone {
        tracing::warn!(node = %id, "cluster: node expired (no heartbeat)");
        metrics::counter!("tickcast_cluster_node_expiries_total").increment(1);
    }
    publish_nodes(ctx);
}

fn publish_nodes(ctx: &Ctx) {
    let mut list: Vec<NodeInfo> = ctx.nodes.borrow().values().cloned().collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    metrics::gauge!("tickcast_cluster_nodes").set((list.len() + 1) as f64);
    if let Ok(mut nodes) = ctx.bridge.nodes.lock() {
        *nodes = list;
    }
}

/// The live node with the smallest id sequences external publishes (`<prefix>.in.>`): one
/// node, so one external publisher's messages to a topic keep their order.
async fn sync_leadership<B: Broker>(ctx: &Ctx, broker: &B) {
    let me = &ctx.bridge.node_id;
    if !ctx.bridge.is_up() || Instant::now() < ctx.settle_until.get() {
        return;
    }
    let leader = ctx.nodes.borrow().keys().all(|id| id > me);
    if leader == ctx.bridge.is_leader() {
        return;
    }
    let name = format!("{INGEST}.>");
    let result = if leader {
        broker.raw_subscribe(&name).await
    } else {
        broker.raw_unsubscribe(&name).await
    };
    match result {
        Ok(()) => {
            ctx.bridge.leader.store(leader, Ordering::Relaxed);
            tracing::info!(node = %me, leader, "cluster: external ingest leadership changed");
            metrics::gauge!("tickcast_cluster_leader").set(if leader { 1.0 } else { 0.0 });
        }
        Err(e) => tracing::warn!(error = %e, "cluster: ingest subscription change failed"),
    }
}

/// Asks every live node for its part of `path`'s answer; the parts go back to `shard`.
async fn start_query<B: Broker>(
    ctx: Rc<Ctx>,
    broker: Rc<B>,
    shard: u8,
    token: u32,
    path: Box<str>,
) {
    let want: Vec<String> = ctx.nodes.borrow().keys().cloned().collect();
    if want.is_empty() {
        let rep = QueryReply {
            token,
            parts: Vec::new(),
            missing: Vec::new(),
        };
        ctx.deliver(shard as usize, ToShard::QueryReply(Box::new(rep)), false);
        return;
    }
    let id = fastrand::u64(..);
    ctx.queries.borrow_mut().insert(
        id,
        PendingQuery {
            shard,
            token,
            want,
            parts: Vec::new(),
        },
    );
    let body = serde_json::json!({ "id": id, "from": ctx.bridge.node_id, "path": &*path });
    let _ = broker
        .raw_publish(QUERIES, Bytes::from(body.to_string()))
        .await;
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        tokio::time::sleep(Duration::from_millis(ctx.cluster().query_timeout_ms)).await;
        finish_query(&ctx, id);
    });
}

/// Another node's query: this node's part is computed by its shards (`QueryLocal`), and the
/// answer published to the asking node's channel.
async fn on_query<B: Broker>(ctx: Rc<Ctx>, broker: Rc<B>, body: Bytes) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return;
    };
    let (Some(id), Some(from), Some(path)) =
        (v["id"].as_u64(), v["from"].as_str(), v["path"].as_str())
    else {
        return;
    };
    if from == ctx.bridge.node_id {
        return;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    ctx.deliver(
        0,
        ToShard::QueryLocal(Box::new(QueryLocal {
            path: path.into(),
            reply: Some(tx),
        })),
        false,
    );
    let limit = Duration::from_millis(ctx.cluster().query_timeout_ms);
    let Ok(Ok(part)) = tokio::time::timeout(limit, rx).await else {
        return;
    };
    let mut out = format!(
        "{{\"id\":{id},\"node\":{},\"part\":",
        serde_json::Value::from(ctx.bridge.node_id.as_str())
    )
    .into_bytes();
    out.extend_from_slice(&part);
    out.push(b'}');
    let _ = broker
        .raw_publish(&answers_for(from), Bytes::from(out))
        .await;
}

fn on_answer(ctx: &Ctx, body: Bytes) {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: u64,
        node: String,
        part: serde_json::Value,
    }
    let Ok(a) = serde_json::from_slice::<Answer>(&body) else {
        return;
    };
    let done = {
        let mut queries = ctx.queries.borrow_mut();
        let Some(q) = queries.get_mut(&a.id) else {
            return;
        };
        if !q.want.contains(&a.node) || q.parts.iter().any(|(n, _)| *n == a.node) {
            return;
        }
        q.parts.push((a.node, Bytes::from(a.part.to_string())));
        q.parts.len() == q.want.len()
    };
    if done {
        finish_query(ctx, a.id);
    }
}

fn finish_query(ctx: &Ctx, id: u64) {
    let Some(q) = ctx.queries.borrow_mut().remove(&id) else {
        return;
    };
    let missing = q
        .want
        .iter()
        .filter(|n| !q.parts.iter().any(|(p, _)| p == *n))
        .cloned()
        .collect();
    let rep = QueryReply {
        token: q.token,
        parts: q.parts,
        missing,
    };
    ctx.deliver(q.shard as usize, ToShard::QueryReply(Box::new(rep)), false);
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "tickcast_cluster_published_total",
        "Publishes the broker confirmed (sequenced and stored)."
    );
    describe_counter!(
        "tickcast_cluster_publish_errors_total",
        "Publishes the broker refused or did not confirm within cluster.publish_timeout_ms."
    );
    describe_counter!(
        "tickcast_cluster_publish_rejects_total",
        "Publishes refused at once: cluster.publish_queue_max publishes already waiting."
    );
    describe_counter!(
        "tickcast_cluster_received_total",
        "Sequenced messages received from the broker."
    );
    describe_counter!(
        "tickcast_cluster_invalid_total",
        "Broker messages that were not valid tickcast envelopes (dropped)."
    );
    describe_counter!(
        "tickcast_cluster_inbound_drops_total",
        "Broker messages dropped because a shard was cluster.inbound_queue_max behind."
    );
    describe_counter!(
        "tickcast_cluster_fetches_total",
        "History fetches from the broker (recovery, hole repair)."
    );
    describe_counter!(
        "tickcast_cluster_reconnects_total",
        "Broker connections restored after a loss."
    );
    describe_counter!(
        "tickcast_cluster_node_expiries_total",
        "Nodes dropped for missing heartbeats (cluster.node_ttl_ms)."
    );
    describe_counter!(
        "tickcast_cluster_ingested_total",
        "External publishes (<prefix>.in.<topic>) taken by this node as leader."
    );
    describe_counter!(
        "tickcast_cluster_ingest_rejects_total",
        "External publishes refused (invalid topic or JSON, too large, queue full)."
    );
    describe_counter!(
        "tickcast_cluster_cas_retries_total",
        "NATS: publishes that lost the per-topic compare-and-set to another node and were retried."
    );
    describe_counter!(
        "tickcast_cluster_slow_consumer_total",
        "NATS: the client's subscription buffer overflowed and dropped messages (repaired)."
    );
    describe_gauge!("tickcast_cluster_nodes", "Live nodes, this one included.");
    describe_gauge!(
        "tickcast_cluster_subscriptions",
        "Patterns this node is subscribed to at the broker (interest)."
    );
    describe_gauge!(
        "tickcast_cluster_leader",
        "1 while this node sequences external publishes."
    );
}
