//! A shard: one thread, one core, one monoio runtime. It owns its listener (SO_REUSEPORT),
//! its connections, its subscription index and the sequence counters of the topics it owns.
//!
//! All shard state lives in one [`State`] behind a `RefCell`, made of parts that own their
//! state (connections, subscriptions, interest, topics, recovery, pacing, admin, HTTP waiters,
//! the mesh endpoint, statistics; see [`State`]). Tasks (accept, the readiness task that reads
//! every connection its readiness set reports, the again task, the mesh dispatcher, the timer,
//! a reply task per HTTP request waiting for other shards) borrow it only in synchronous
//! sections, never across an `.await`; a connection has no task of its own (`conn/poll.rs`). Every section ends with
//! [`Shard::finish`], which wakes the peers it sent to and schedules the flusher: once per
//! scheduler round, after every task already ready has run, the flusher writes each dirtied
//! connection once (one vectored write for all its new frames).

mod accept;
pub mod admin;
pub mod auth;
mod binance;
mod centrifugo;
mod cluster_api;
pub mod conn;
mod fanout;
mod http;
mod idem;
mod inbox;
mod interest;
mod live;
pub mod msg;
pub mod out;
mod pacing;
mod proxy;
mod publish;
pub mod recovery;
pub mod reload;
mod remote;
mod subscribe;
mod timer;
mod tls;
mod topics;

use std::{
    cell::{Cell, RefCell, RefMut},
    future::Future,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize},
    },
    task::{Context, Poll, Waker},
    time::Instant,
};

use crate::{
    config::Config,
    frame::{Frame, OutFrame, monotonic_ns},
    limits::{MESH_ROUND_MAX, READ_CHUNK_BYTES},
    mesh::{Mesh, ShardMesh},
    pubsub::index::LocalIndex,
    shard::msg::MeshMsg,
    stats::{ShardStats, StatsHub},
};
pub use conn::Conn;

/// What every shard shares: configuration, the mesh, metrics, process-wide connection counts.
pub struct Shared {
    /// The configuration the process started with. Only keys a reload cannot change
    /// (`config::RESTART_ONLY`: listeners, shards, the cluster, the demo feed, …) may be read
    /// from it; everything else comes from the shard's own [`State::cfg`], which a reload
    /// (SIGHUP) replaces.
    pub boot: Arc<Config>,
    pub mesh: Arc<Mesh<MeshMsg>>,
    pub hub: StatsHub,
    /// Open TCP connections in the process (checked against `limits.connections_max`).
    pub connections: AtomicUsize,
    /// Shards whose listeners accept (`/ready`).
    pub listening: AtomicUsize,
    /// Bytes of partial messages and requests held by all connections
    /// (`limits.partial_bytes_max`).
    pub partial_bytes: AtomicUsize,
    /// TCP connections the process accepts at most: `RLIMIT_NOFILE` less the descriptors it
    /// needs for itself. Beyond it a new connection is answered 503 and closed at once, so the
    /// process never runs out of descriptors (`limits::reserved_descriptors`).
    pub accept_cap: usize,
    pub per_ip: Box<[AtomicU32]>,
    /// Open authenticated connections per user, hashed like `per_ip`.
    pub per_user: Box<[AtomicU32]>,
    /// Upgrade-attempt rate per client IP: GCRA arrival times (µs since `started`), hashed.
    pub connect_tat: Box<[AtomicU64]>,
    /// The verifier the process started with (each shard then holds its own, [`State::auth`]).
    pub boot_auth: Arc<crate::auth::Auth>,
    pub started: Instant,
    pub local_addr: SocketAddr,
    pub shards: usize,
    /// The TLS listener's certificate configuration (`None`: no TLS listener).
    pub tls: Option<Arc<crate::tls::TlsState>>,
    /// Cluster mode: the broker bridge (`None`: `cluster.engine = "memory"`).
    pub bridge: Option<Arc<crate::cluster::Bridge>>,
}

impl Shared {
    pub fn new(
        cfg: Config,
        auth: crate::auth::Auth,
        mesh: Arc<Mesh<MeshMsg>>,
        hub: StatsHub,
        local_addr: SocketAddr,
    ) -> Shared {
        let shards = mesh.shards();
        Shared {
            boot: Arc::new(cfg),
            mesh,
            hub,
            boot_auth: Arc::new(auth),
            connections: AtomicUsize::new(0),
            listening: AtomicUsize::new(0),
            partial_bytes: AtomicUsize::new(0),
            accept_cap: crate::sys::nofile_limit()
                .saturating_sub(crate::limits::reserved_descriptors(shards))
                .min(usize::MAX as u64) as usize,
            per_ip: (0..crate::limits::HASHED_COUNTER_BUCKETS)
                .map(|_| AtomicU32::new(0))
                .collect(),
            per_user: (0..crate::limits::HASHED_COUNTER_BUCKETS)
                .map(|_| AtomicU32::new(0))
                .collect(),
            connect_tat: (0..crate::limits::HASHED_COUNTER_BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            started: Instant::now(),
            local_addr,
            shards,
            tls: None,
            bridge: None,
        }
    }
}

/// The cluster bridge's view of this node: it hands messages to shards over the mesh's ring
/// for producers outside the shards, and knows nothing else of their state.
impl crate::cluster::ShardLink for Shared {
    fn shards(&self) -> usize {
        self.shards
    }

    fn deliver(
        &self,
        dst: usize,
        msg: crate::cluster::ToShard,
    ) -> Result<(), crate::cluster::ToShard> {
        // `ToShard` -> `MeshMsg` is a move of the same boxed payload; a full ring hands the
        // message back as it came.
        self.mesh
            .try_send_external(dst, MeshMsg::from(msg))
            .map_err(msg::to_bridge_msg)
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// A shard as its tasks see it.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub st: RefCell<State>,
    /// Resolves the shard's main future when shutdown is complete.
    done: Cell<bool>,
    done_waker: Cell<Option<Waker>>,
    /// The dispatcher's waker while it is parked on the mesh (see `finish`).
    dispatcher_parked: Cell<Option<Waker>>,
    /// A flush is scheduled (the flusher task has been woken).
    flush_pending: Cell<bool>,
    /// The flusher task's waker while it waits for work.
    flusher: Cell<Option<Waker>>,
    /// The pacer task's waker while nothing is paced (see `pacing`).
    pacer_waker: Cell<Option<Waker>>,
    /// The again task's waker while no connection is listed again (`conn::again_task`).
    again_waker: Cell<Option<Waker>>,
}

/// Everything a shard owns. Mutated only by the shard's own thread.
///
/// Most of it lives in parts that keep their fields private, each in its own file, with the
/// invariants it keeps inside it. A step that needs several parts is a `State` method, in the
/// file of the part it is mainly about, that borrows just those (`let State { index, conns,
/// .. } = self`). Each field below names its part; the rest are the shard's own settings,
/// clock and lifecycle.
pub struct State {
    /// Shard: its number.
    pub shard: usize,
    /// Shard: what every shard shares (the mesh, process-wide counts, the start
    /// configuration).
    pub shared: Arc<Shared>,
    /// Settings: the configuration in force on this shard; a reload (SIGHUP, `reload.rs`)
    /// replaces it between two sections.
    pub cfg: Arc<Config>,
    /// Settings: the token verifier built from [`State::cfg`], replaced with it.
    pub auth: Arc<crate::auth::Auth>,
    /// **Connections** (`conn/`, `conn/conns.rs`): every connection, with its numbering, the
    /// handshake slots, the fan-out round, the dirty list, the readiness set and the
    /// connections to look at again.
    pub conns: conn::Conns,
    /// **Subscriptions** (`crate::pubsub::index`; `subscribe.rs`, `fanout.rs`): which local
    /// connection subscribes to which pattern.
    pub index: LocalIndex,
    /// **Interest** (`interest.rs`): which shards subscribe to what, and the acknowledgements
    /// of this shard's own changes.
    interest: interest::Interest,
    /// **Live reader** (`live.rs`): shard 0's own connection to NATS for live messages
    /// (cluster mode, `cluster.nats_live_reader = "shard"`); `None` elsewhere.
    live: Option<live::Live>,
    /// **Topics** (`topics/`, `idem.rs`): the topics this shard owns, with their `seq`, epoch,
    /// history ring and `idem` keys.
    topics: topics::Topics,
    /// **Recovery** (`recovery.rs`): subscribes waiting for positions and acknowledgements.
    recovery: recovery::Recovery,
    /// **Pacing** (`pacing.rs`): batched and throttled deliveries waiting for their time.
    pacer: pacing::Pacer,
    /// **Admin** (`admin/`): per-user index of connections and presence settings.
    admin: admin::AdminState,
    /// **HTTP waiters** (`http/waiters.rs`): requests waiting for other shards.
    http_waiters: http::Waiters,
    /// **Mesh endpoint** (`crate::mesh`): this shard's rings to and from the other shards.
    pub mesh: ShardMesh<MeshMsg>,
    /// Mesh endpoint (`inbox.rs`): messages taken from the mesh in the current round (kept to
    /// reuse its allocation).
    inbox: Vec<MeshMsg>,
    /// **Statistics** (`crate::stats`): this shard's counters, flushed into the registry.
    pub stats: ShardStats,
    /// Reading (`conn/read.rs`): the socket read buffer shared by all connections.
    scratch: Vec<u8>,
    /// Inflates client messages compressed with permessage-deflate (`conn::read`), created
    /// with the first one.
    inflater: Option<Box<crate::ws::deflate::Inflater>>,
    /// TLS (`tls.rs`): the records of one TLS write (and the plaintext of a handshake read);
    /// allocated with the shard's first TLS connection.
    tls_buf: Vec<u8>,
    /// Reading (`conn/read.rs`, `http/endpoints.rs`): simd-json's reusable parse buffers.
    json: simd_json::Buffers,
    /// Settings (`conn/write.rs`, `timer.rs`): the server ping frame, built once and shared
    /// by every connection.
    ping_frame: OutFrame,
    /// Settings (`timer.rs`, `conn/write.rs`): Centrifugo's ping, the text message `{}`.
    centrifugo_ping: OutFrame,
    /// Settings (`auth.rs`): `limits.client_messages_per_s` / `_burst`, prepared once
    /// (`reload.rs`, `State::prepare_settings`, as the other prepared settings).
    msg_rate: crate::auth::Rate,
    /// Settings (`auth.rs`): `binance.messages_per_s` / `_burst`, prepared once.
    binance_rate: crate::auth::Rate,
    /// Settings (`proxy.rs`): `server.trusted_proxies`, parsed once.
    trusted: crate::ws::proxy::Trusted,
    /// Settings (`out::Bounds`; fan-out, pacing, recovery, `conn/write.rs`): per-lane queue
    /// bounds, prepared once.
    bounds: out::Bounds,
    /// Clock ([`State::clock`]): coarse, ms since shard start, advanced by the timer and at
    /// each read.
    pub now_ms: u64,
    /// Clock: when the shard started.
    started: Instant,
    /// Timer (`timer.rs`): last time it scanned connections and flushed statistics.
    last_scan_ms: u64,
    /// Lifecycle (`timer.rs`): shutdown began: no new connections, every connection is being
    /// closed with 1001.
    pub stopping: bool,
    /// Lifecycle (`timer.rs`): when the shutdown grace period ends.
    stop_deadline_ms: u64,
    /// Draining (SIGUSR2): `(start_ms, end_ms, WebSocket connections at the start)`.
    pub(crate) drain: Option<(u64, u64, usize)>,
    /// Lifecycle ([`Shard::run`], `State::stop_accepting`): this shard's listeners (plain,
    /// then TLS), shut down (not dropped) to stop the accept loops.
    listeners: Vec<Rc<monoio::net::TcpListener>>,
}

impl Shard {
    /// On the shard's own thread (topology.rs), which is where its frames get compressed.
    /// Fails only if the kernel refuses the connections' readiness set (an epoll instance).
    pub fn new(id: usize, shared: Arc<Shared>) -> Result<Rc<Shard>, String> {
        let mesh = ShardMesh::new(shared.mesh.clone(), id, shared.boot.mesh.spill_max);
        let mut ping = Vec::with_capacity(2);
        crate::ws::frame::encode_frame(&mut ping, crate::ws::frame::OP_PING, b"");
        let mut st = State {
            shard: id,
            shared: shared.clone(),
            cfg: shared.boot.clone(),
            auth: shared.boot_auth.clone(),
            // Reserved at the most this shard may hold.
            conns: conn::Conns::with_capacity(
                shared.boot.limits.connections_max / shared.shards + 1,
            )
            .map_err(|e| format!("shard {id}: epoll_create: {e}"))?,
            index: LocalIndex::default(),
            stats: ShardStats::new(id),
            mesh,
            now_ms: 0,
            started: Instant::now(),
            scratch: Vec::with_capacity(READ_CHUNK_BYTES),
            inflater: None,
            tls_buf: Vec::new(),
            json: simd_json::Buffers::default(),
            interest: interest::Interest::new(id, shared.shards, shared.bridge.is_some()),
            live: (id == 0 && shared.bridge.is_some() && live::in_shard(&shared.boot))
                .then(|| live::Live::new(&shared.boot)),
            recovery: recovery::Recovery::default(),
            topics: topics::Topics::new(&shared.boot),
            http_waiters: http::Waiters::default(),
            ping_frame: Rc::new(Arc::new(Frame::control(ping))),
            centrifugo_ping: Rc::new(Arc::new(crate::frame::text_frame(b"{}"))),
            last_scan_ms: 0,
            stopping: false,
            stop_deadline_ms: 0,
            drain: None,
            listeners: Vec::new(),
            inbox: Vec::new(),
            // Derived from `cfg` by `prepare_settings` below.
            bounds: out::Bounds::default(),
            trusted: crate::ws::proxy::Trusted::default(),
            pacer: pacing::Pacer::default(),
            msg_rate: crate::auth::Rate::new(0, 0),
            binance_rate: crate::auth::Rate::new(0, 0),
            admin: admin::AdminState::new(&shared.boot),
        };
        st.prepare_settings();
        Ok(Rc::new(Shard {
            id,
            shared,
            st: RefCell::new(st),
            done: Cell::new(false),
            done_waker: Cell::new(None),
            dispatcher_parked: Cell::new(None),
            flush_pending: Cell::new(false),
            flusher: Cell::new(None),
            pacer_waker: Cell::new(None),
            again_waker: Cell::new(None),
        }))
    }

    /// Ends a synchronous section: wakes the peers it sent to, schedules the flusher for the
    /// connections it dirtied, wakes a parked dispatcher whose rings filled, wakes the again
    /// task for connections listed again, and starts a reply task for each HTTP request that
    /// now waits for other shards. Wakes and spawns happen after the borrow is released.
    pub fn finish(self: &Rc<Self>, mut st: RefMut<'_, State>) {
        // monoio runs its timers only when the runtime parks, so a busy shard's pacer ticks
        // late: every section also releases the batched and throttled deliveries that are due
        // (a heap peek and a clock read, only while something is paced).
        if !st.pacer.is_idle() {
            st.run_pacer();
        }
        st.mesh.flush();
        let dirty = st.conns.has_dirty();
        let again = st.conns.has_again();
        let awaits = st.conns.take_awaits();
        let wake_pacer = std::mem::take(&mut st.pacer.wake);
        drop(st);
        if again {
            if let Some(waker) = self.again_waker.take() {
                waker.wake();
            }
        }
        if wake_pacer {
            if let Some(waker) = self.pacer_waker.take() {
                waker.wake();
            }
        }
        // Writes wait for the flusher, which runs behind every task already ready in this
        // scheduler round: four publishers' reads in one round cost one write per subscriber,
        // not four.
        if dirty && !self.flush_pending.replace(true) {
            if let Some(waker) = self.flusher.take() {
                waker.wake();
            }
        }
        // monoio handles wakes from other threads only when its task queue runs empty; a
        // shard kept busy by local work would leave its parked dispatcher asleep while peers
        // send to it. So every section checks the rings and wakes the dispatcher locally.
        if let Some(waker) = self.dispatcher_parked.take() {
            if self.shared.mesh.has_inbound(self.id) {
                waker.wake();
            } else {
                self.dispatcher_parked.set(Some(waker));
            }
        }
        for (key, epoch, answer) in awaits {
            monoio::spawn(conn::reply_task(self.clone(), key, epoch, answer));
        }
    }

    /// The shard's life: start its tasks, report ready, then wait for shutdown to complete.
    pub async fn run(
        self: Rc<Self>,
        (listener, tls_listener): (std::net::TcpListener, Option<std::net::TcpListener>),
        on_ready: impl FnOnce(),
    ) -> Result<(), String> {
        // Connections are read through the readiness set, not a task each.
        let readiness = conn::readiness_handle(&self.st.borrow())
            .map_err(|e| format!("shard {}: readiness set: {e}", self.id))?;
        monoio::spawn(conn::readiness_task(self.clone(), readiness));
        monoio::spawn(conn::again_task(self.clone()));
        // The accept loop takes connections with nonblocking `accept4` calls.
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| monoio::net::TcpListener::from_std(listener))
            .map_err(|e| format!("shard {}: listener: {e}", self.id))?;
        let listener = Rc::new(listener);
        self.st.borrow_mut().listeners.push(listener.clone());
        monoio::spawn(accept::accept_loop(self.clone(), listener, false));
        if let Some(tls_listener) = tls_listener {
            let tls_listener = tls_listener
                .set_nonblocking(true)
                .and_then(|()| monoio::net::TcpListener::from_std(tls_listener))
                .map_err(|e| format!("shard {}: TLS listener: {e}", self.id))?;
            let tls_listener = Rc::new(tls_listener);
            self.st.borrow_mut().listeners.push(tls_listener.clone());
            monoio::spawn(accept::accept_loop(self.clone(), tls_listener, true));
        }
        // Before the accept loops first run (they are only spawned).
        self.st.borrow().set_listener_options();
        monoio::spawn(dispatcher(self.clone()));
        monoio::spawn(flusher(self.clone()));
        monoio::spawn(pacing::pacer_task(self.clone()));
        monoio::spawn(timer::timer_task(self.clone()));
        if self.st.borrow().live.is_some() {
            monoio::spawn(live::live_task(self.clone()));
        }
        self.shared
            .listening
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        on_ready();
        Done(&self).await;
        Ok(())
    }

    fn set_done(&self) {
        self.done.set(true);
        if let Some(w) = self.done_waker.take() {
            w.wake();
        }
    }
}

struct Done<'a>(&'a Shard);

impl Future for Done<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.done.get() {
            return Poll::Ready(());
        }
        self.0.done_waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// Yields once to the other tasks of the runtime.
pub(crate) struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Writes every connection dirtied since its last run, once per scheduler round (woken by
/// `Shard::finish`, queued behind the tasks already ready).
async fn flusher(shard: Rc<Shard>) {
    loop {
        std::future::poll_fn(|cx| {
            if shard.flush_pending.get() {
                Poll::Ready(())
            } else {
                shard.flusher.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        let mut st = shard.st.borrow_mut();
        shard.flush_pending.set(false);
        st.flush_dirty();
        shard.finish(st);
    }
}

/// Takes what other shards sent, in rounds of at most `MESH_ROUND_MAX` messages, yielding after
/// each so the flusher writes what the round queued. Parks when there is nothing to do.
async fn dispatcher(shard: Rc<Shard>) {
    let mesh = shard.shared.mesh.clone();
    loop {
        let n = {
            let mut st = shard.st.borrow_mut();
            let n = st.drain_mesh(MESH_ROUND_MAX);
            shard.finish(st);
            n
        };
        if n > 0 {
            // Yield after every round, full or not: the flusher (and the readers) run between
            // rounds, so a steady trickle from peers cannot hold writes back.
            YieldNow(false).await;
        } else {
            let mut parked = mesh.parked(shard.id);
            std::future::poll_fn(|cx| {
                shard.dispatcher_parked.set(Some(cx.waker().clone()));
                Pin::new(&mut parked).poll(cx)
            })
            .await;
            shard.dispatcher_parked.set(None);
        }
    }
}

impl State {
    /// Stops accepting: the accept loop sees an error from its shut-down listener and ends.
    fn stop_accepting(&mut self) {
        if !self.listeners.is_empty() {
            self.shared
                .listening
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        for listener in self.listeners.drain(..) {
            let _ =
                rustix::net::shutdown(crate::sys::fd_of(&*listener), rustix::net::Shutdown::Read);
        }
    }

    pub fn clock(&mut self) -> u64 {
        self.now_ms = self.started.elapsed().as_millis() as u64;
        self.now_ms
    }

    /// Writes every connection dirtied since the last call once (called by the flusher).
    pub fn flush_dirty(&mut self) {
        if self.conns.has_dirty() {
            let now_ns = monotonic_ns();
            let mut dirty = self.conns.take_dirty();
            for key in dirty.drain(..) {
                self.flush_conn(key, now_ns);
            }
            self.conns.reuse_dirty(dirty);
        }
    }

    /// A JSON message for one connection answering what it sent (ack, error, pong, welcome):
    /// never refused, see `conn::write`.
    pub fn reply(&mut self, key: u32, json: &[u8]) {
        let frame: OutFrame = Rc::new(Arc::new(crate::frame::text_frame(json)));
        self.push_reply(key, frame);
    }

    /// Builds a JSON reply with `f` and queues it for `key`.
    pub fn reply_with(&mut self, key: u32, f: impl FnOnce(&mut Vec<u8>)) {
        let mut json = Vec::with_capacity(128);
        f(&mut json);
        self.reply(key, &json);
    }
}
