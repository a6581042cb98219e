//! Builds the process: cores, listeners, the mesh, one pinned thread per shard, each running
//! its own monoio runtime; then waits for them and handles SIGTERM/SIGINT.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, mpsc},
    thread,
};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    config::{Config, DriverKind},
    mesh::Mesh,
    shard::{Shard, Shared, msg::MeshMsg},
    stats::StatsHub,
    tls::TlsState,
};

/// One shard's listeners: the plain one, and the TLS one when `tls.listen` is set.
type Listeners = (TcpListener, Option<TcpListener>);

/// Binds one SO_REUSEPORT listener per shard on `addr` (port 0: the first picks a free port,
/// the others join it). Binding up front makes a bad address fail before any thread starts.
fn bind_listeners(
    addr: SocketAddr,
    shards: usize,
    backlog: u32,
    takeover: bool,
) -> Result<Vec<TcpListener>, String> {
    if addr.port() != 0 && !takeover {
        refuse_if_in_use(addr)?;
    }
    let mut listeners = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .set_reuse_address(true)
            .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
        socket
            .set_reuse_port(true)
            .map_err(|e| format!("SO_REUSEPORT: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("O_NONBLOCK: {e}"))?;
        socket
            .bind(&addr.into())
            .map_err(|e| format!("bind {addr}: {e}"))?;
        socket
            .listen(backlog.min(i32::MAX as u32) as i32)
            .map_err(|e| format!("listen {addr}: {e}"))?;
        let listener: TcpListener = socket.into();
        addr = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// SO_REUSEPORT would let a second tickcast (or anything else of the same user with the option
/// set) share the port and silently take a share of new connections. A probe bind without
/// SO_REUSEPORT fails if any socket listens on the address, so starting twice is an error.
fn refuse_if_in_use(addr: SocketAddr) -> Result<(), String> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    // SO_REUSEADDR only lets the probe ignore connections in TIME_WAIT, never a live listener.
    probe
        .set_reuse_address(true)
        .map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "bind {addr}: address already in use (is another tickcast running on it?)"
        )),
        Err(e) => Err(format!("bind {addr}: {e}")),
    }
}

/// How many shards: configured, or one per core this process may run on.
pub fn shard_count(cfg: &Config) -> usize {
    if cfg.server.shards > 0 {
        return cfg.server.shards;
    }
    core_affinity::get_core_ids()
        .map(|c| c.len())
        .unwrap_or(1)
        .clamp(1, crate::limits::SHARDS_MAX)
}

/// A running server: its address and a handle to stop it.
pub struct Server {
    pub local_addr: SocketAddr,
    /// The TLS listener's address, when `tls.listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// The TLS configuration (reloaded on SIGHUP), when `tls.listen` is set.
    pub tls: Option<Arc<TlsState>>,
    pub drivers: Vec<&'static str>,
    mesh: Arc<Mesh<MeshMsg>>,
    threads: Vec<thread::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Server {
    /// Starts every shard; returns once all are listening (or the first failed).
    pub fn start(cfg: Config) -> Result<Server, String> {
        let shards = shard_count(&cfg);
        // Key files and permission patterns are checked before anything binds, and so are
        // the certificate and key.
        let auth = crate::auth::Auth::from_config(&cfg)?;
        let tls = match cfg.tls_listen_addr() {
            Some(_) => Some(Arc::new(TlsState::load(&cfg.tls)?)),
            None => None,
        };
        let takeover = cfg.server.takeover;
        let listeners = bind_listeners(
            cfg.listen_addr(),
            shards,
            cfg.server.listen_backlog,
            takeover,
        )?;
        let local_addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let tls_listeners: Vec<Option<TcpListener>> = match cfg.tls_listen_addr() {
            Some(addr) => bind_listeners(addr, shards, cfg.server.listen_backlog, takeover)?
                .into_iter()
                .map(Some)
                .collect(),
            None => (0..shards).map(|_| None).collect(),
        };
        let tls_addr = match &tls_listeners[0] {
            Some(l) => Some(l.local_addr().map_err(|e| e.to_string())?),
            None => None,
        };
        let hub = StatsHub::install(shards)?;
        if tls.is_some() {
            crate::tls::describe_metrics();
        }
        describe_reload_metrics();
        let mesh = Mesh::new(shards, cfg.mesh.queue_len);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pin = cfg.server.pin_cores && !cores.is_empty();
        let driver = resolve_driver(cfg.server.driver)?;
        let entries = cfg.server.uring_entries;
        let bridge = (cfg.cluster.engine != crate::config::Engine::Memory)
            .then(|| crate::cluster::Bridge::new(&cfg));
        let mut shared = Shared::new(cfg, auth, mesh.clone(), hub, local_addr);
        shared.tls = tls.clone();
        shared.bridge = bridge.clone();
        let shared = Arc::new(shared);
        if let Some(bridge) = &bridge {
            bridge.spawn((*shared.boot).clone(), shared.clone())?;
        }
        let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, String>>();
        let mut threads = Vec::with_capacity(shards);
        for (id, listener) in listeners.into_iter().zip(tls_listeners).enumerate() {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let core = pin.then(|| cores[id % cores.len()]);
            let handle = thread::Builder::new()
                .name(format!("tc-shard-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(
                                shard = id,
                                core = core.id,
                                "could not pin shard to core"
                            );
                        }
                    }
                    run_shard(id, shared, listener, driver, entries, ready);
                })
                .map_err(|e| format!("spawn shard {id}: {e}"))?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut server = Server {
            local_addr,
            tls_addr,
            tls,
            drivers: Vec::with_capacity(shards),
            mesh,
            threads,
            shared: shared.clone(),
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(name)) => server.drivers.push(name),
                Ok(Err(e)) => {
                    server.stop();
                    server.join();
                    return Err(e);
                }
                Err(_) => return Err("a shard thread died while starting".into()),
            }
        }
        Ok(server)
    }

    /// Asks every shard to shut down (close 1001 to every client, then exit).
    pub fn stop(&self) {
        self.stopper().stop();
    }

    /// A read-only view of the running server for the service manager: connections,
    /// deliveries, whether every shard's loop is moving.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: self.shared.clone(),
        }
    }

    /// A handle that reloads the configuration from another thread (signal handler).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: self.shared.clone(),
            running: self.shared.boot.clone(),
        }
    }

    /// A handle that can stop the server from another thread (signal handler).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            mesh: self.mesh.clone(),
        }
    }

    /// Waits for every shard to finish; false if one ended by panicking.
    pub fn join(self) -> bool {
        let mut clean = true;
        for t in self.threads {
            clean &= t.join().is_ok();
        }
        clean
    }
}

/// What the service manager (systemd notify, watchdog) reads of a running [`Server`], from
/// any thread: counters the shards publish anyway, nothing on the hot path.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl Monitor {
    /// Open TCP connections (WebSocket and HTTP).
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deliveries so far, as of each shard's last statistics flush (about once a second).
    pub fn deliveries(&self) -> u64 {
        self.shared.hub.deliveries()
    }

    /// Each shard's timer ticks so far: one that stops moving is stuck.
    pub fn ticks(&self) -> Vec<u64> {
        self.shared.hub.ticks()
    }
}

/// Stops a running [`Server`] from any thread.
#[derive(Clone)]
pub struct Stopper {
    mesh: Arc<Mesh<MeshMsg>>,
}

impl Stopper {
    pub fn stop(&self) {
        for dst in 0..self.mesh.shards() {
            self.mesh.send_external(dst, MeshMsg::Shutdown);
        }
    }

    /// Stop accepting and close the clients with 1012 over `timeouts.drain_s`, then stop.
    pub fn drain(&self) {
        for dst in 0..self.mesh.shards() {
            self.mesh.send_external(dst, MeshMsg::Drain);
        }
    }
}

/// Reloads a running [`Server`]'s configuration (SIGHUP) from one other thread.
pub struct Reloader {
    shared: Arc<Shared>,
    /// The configuration in force (what the shards last got).
    running: Arc<Config>,
}

/// What a successful reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Keys now in force with new values (`section.key`; arrays of tables whole).
    pub applied: Vec<String>,
    /// Keys changed in the file that keep their running value until a restart.
    pub restart_needed: Vec<String>,
    /// Summed over the shards: connections closed, subscriptions withdrawn, API-key
    /// connections whose rights changed.
    pub closed: usize,
    pub withdrawn: usize,
    pub rights_changed: usize,
    /// Shards that did not report within the wait (busy; they apply it when they get to it).
    pub late_shards: usize,
    /// The TLS certificate and key were read again (there is a TLS listener).
    pub tls_reloaded: bool,
}

impl Reloader {
    /// How long [`Reloader::reload`] waits for the shards to report.
    const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    /// The configuration in force.
    pub fn running(&self) -> &Config {
        &self.running
    }

    /// Checks `loaded` (the configuration as loaded again, or why it could not be) completely,
    /// the key and certificate files it names included, and, only if all of it is good, puts
    /// it in force: the TLS certificate for new connections, then every
    /// shard (`shard::reload`). Restart-only keys keep their running values
    /// (`config::RESTART_ONLY`). On error nothing changed. Counted in
    /// `tickcast_config_reloads_total{result}`.
    pub fn reload(&mut self, loaded: Result<Config, String>) -> Result<Reloaded, String> {
        let result = loaded.and_then(|mut new| self.apply(&mut new));
        let ok = result.is_ok();
        metrics::counter!("tickcast_config_reloads_total", "result" => if ok { "ok" } else { "error" })
            .increment(1);
        metrics::gauge!("tickcast_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
        result
    }

    fn apply(&mut self, new: &mut Config) -> Result<Reloaded, String> {
        let auth = crate::auth::Auth::from_config(new)?;
        let changed = crate::config::changed_keys(&self.running, new);
        let (restart_needed, applied): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| crate::config::is_restart_only(k));
        crate::config::keep_restart_only(new, &self.running);
        // With the running values put back, the whole must still hold together (e.g. a new
        // `timeouts.idle_s` against the running `timeouts.ping_interval_s`).
        new.validate().map_err(|e| {
            format!("{e} (with the running values of the keys that need a restart)")
        })?;
        let tls = match &self.shared.tls {
            Some(tls) => Some((tls, tls.prepare(&new.tls)?)),
            None => None,
        };
        // Everything checked: from here on it takes effect.
        let tls_reloaded = tls.is_some();
        if let Some((tls, config)) = tls {
            tls.install(config);
        }
        let cfg = Arc::new(std::mem::take(new));
        let auth = Arc::new(auth);
        let (done, reports) = mpsc::channel();
        for dst in 0..self.shared.shards {
            let msg = crate::shard::reload::Reload {
                cfg: cfg.clone(),
                auth: auth.clone(),
                done: done.clone(),
            };
            self.shared
                .mesh
                .send_external(dst, MeshMsg::Reload(Box::new(msg)));
        }
        drop(done);
        self.running = cfg;
        let mut out = Reloaded {
            applied,
            restart_needed,
            late_shards: self.shared.shards,
            tls_reloaded,
            ..Reloaded::default()
        };
        let deadline = std::time::Instant::now() + Self::WAIT;
        while out.late_shards > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(a) = reports.recv_timeout(left) else {
                break;
            };
            out.late_shards -= 1;
            out.closed += a.closed;
            out.withdrawn += a.withdrawn;
            out.rights_changed += a.rights_changed;
        }
        Ok(out)
    }
}

/// Registers the reload metrics so they show before the first reload.
pub fn describe_reload_metrics() {
    metrics::describe_counter!(
        "tickcast_config_reloads_total",
        "Configuration reloads (SIGHUP), by result (ok, error)."
    );
    for label in ["ok", "error"] {
        metrics::counter!("tickcast_config_reloads_total", "result" => label).absolute(0);
    }
    metrics::describe_gauge!(
        "tickcast_config_last_reload_successful",
        "1 if the last configuration reload succeeded (or none was tried), 0 if it failed."
    );
    metrics::gauge!("tickcast_config_last_reload_successful").set(1.0);
}

/// The driver every shard will run; `auto` probes io_uring once.
fn resolve_driver(kind: DriverKind) -> Result<DriverKind, String> {
    match kind {
        DriverKind::Auto if !monoio::utils::detect_uring() => {
            tracing::warn!(
                "io_uring is not available here (kernel, seccomp or memlock): using epoll"
            );
            Ok(DriverKind::Epoll)
        }
        DriverKind::IoUring if !monoio::utils::detect_uring() => {
            Err("server.driver = \"io_uring\" but io_uring cannot be set up on this system".into())
        }
        other => Ok(other),
    }
}

fn run_shard(
    id: usize,
    shared: Arc<Shared>,
    listener: Listeners,
    driver: DriverKind,
    entries: u32,
    ready: mpsc::Sender<Result<&'static str, String>>,
) {
    let epoll =
        |shared, listener| match RuntimeBuilder::<LegacyDriver>::new().enable_timer().build() {
            Ok(mut rt) => rt.block_on(shard_main(id, shared, listener, "epoll", ready.clone())),
            Err(e) => Err(format!("shard {id}: epoll runtime: {e}")),
        };
    let result = match driver {
        DriverKind::IoUring | DriverKind::Auto => {
            // The probe can pass while the full-size ring still fails (RLIMIT_MEMLOCK on
            // kernels before 5.12): `auto` then falls back to epoll on this shard.
            match RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    rt.block_on(shard_main(id, shared, listener, "io_uring", ready.clone()))
                }
                Err(e) if driver == DriverKind::Auto => {
                    tracing::warn!(shard = id, error = %e, "io_uring ring setup failed: using epoll");
                    epoll(shared, listener)
                }
                Err(e) => Err(format!("shard {id}: io_uring runtime: {e}")),
            }
        }
        DriverKind::Epoll => epoll(shared, listener),
    };
    if let Err(e) = result {
        let _ = ready.send(Err(e));
    }
}

async fn shard_main(
    id: usize,
    shared: Arc<Shared>,
    listener: Listeners,
    driver: &'static str,
    ready: mpsc::Sender<Result<&'static str, String>>,
) -> Result<(), String> {
    let demo_feed = shared.boot.server.demo_feed;
    let shard = Shard::new(id, shared)?;
    if demo_feed {
        // A publisher like any other, on the shard's runtime (`crate::ingest::demo`).
        monoio::spawn(crate::ingest::demo::demo_task(shard.clone()));
    }
    let run = shard.run(listener, move || {
        let _ = ready.send(Ok(driver));
    });
    let result = run.await;
    tracing::debug!(shard = id, "shard stopped");
    result
}
