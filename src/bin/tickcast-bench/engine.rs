//! One I/O thread: an epoll loop (mio, edge-triggered) over a set of client connections.
//!
//! A thread opens its connections (bounded in-flight handshakes, optional rate), subscribes,
//! then serves rounds sent by its group: it answers pings, reads data frames and, when it holds
//! publishers, publishes paced messages. Reads go into one per-thread scratch buffer; a connection
//! keeps only the bytes of a partial frame (`carry`), so nothing is allocated per message.
//!
//! Layout: this file holds the thread's state, its event loop and each connection's reads,
//! writes and failures; `connect.rs` opens and subscribes the connections, `protocol.rs`
//! handles the bytes a connection reads (handshake response, frames, protocol replies, data),
//! `round.rs` publishes and reports rounds.

mod connect;
mod protocol;
mod round;
mod tls;

use std::{
    io::{self, Read, Write},
    sync::{
        Arc,
        mpsc::{Receiver, Sender},
    },
    time::Duration,
};

use mio::{Events, Poll, Token, Waker, event::Event, net::TcpStream};
use slab::Slab;

use crate::{
    plan::{Dialect, RoundPlan, ThreadPlan},
    stats::{ConnectStats, RoundStats, record},
    wire,
};
use protocol::{Ctx, process};

const WAKER: Token = Token(usize::MAX);
/// Bytes asked of one `read`; a shorter answer means the socket is drained (edge-triggered
/// epoll reports new data with a new edge).
const READ_CHUNK_BYTES: usize = 128 * 1024;
/// The longest an idle loop sleeps before looking at its commands and deadlines.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// CLOCK_MONOTONIC in ns: the clock the publish time `t` is taken from, shared by all processes.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub enum Cmd {
    Round(RoundPlan),
    Quit,
}

pub enum Report {
    Connected(ConnectStats),
    RoundDone(RoundStats),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    AwaitResponse,
    AwaitAck,
    Ready,
}

struct Conn {
    sock: TcpStream,
    state: State,
    index: u64,
    /// Index in `ThreadPlan::targets` of the server this connection went to.
    target: usize,
    started_ns: u64,
    key: String,
    welcomed: bool,
    /// Bytes of a partial frame (or handshake response) kept between reads.
    carry: Vec<u8>,
    /// Unsent client frames (subscribe, pongs, publishes).
    out: Vec<u8>,
    /// Last seq seen per topic index (u32::MAX for topics not of the `bench.t<N>` form).
    last_seq: Vec<(u32, u64)>,
    /// Stops reading once subscribed (`--stalled-pct`); counted apart from the healthy ones.
    stalled: bool,
    /// permessage-deflate, once agreed in the handshake (`--deflate`).
    inflate: Option<Inflate>,
    /// What this connection speaks (publishers: protocol v1).
    dialect: Dialect,
    /// Centrifugo: replies still awaited (connect and subscribes) before it is Ready.
    pending: u32,
    /// `wss://`: its TLS client (`tls.rs`); `out` is plaintext until it is encrypted there.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Conn {
    /// Bytes wait to be written (frames in `out`, or records rustls holds).
    fn has_output(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// How a connection that agreed permessage-deflate inflates its compressed messages.
enum Inflate {
    /// The server agreed `server_no_context_takeover`: every message stands alone, and the
    /// thread's one inflater (reset after each message) serves every such connection.
    Shared,
    /// The server keeps its compression context: this connection's own inflater, whose
    /// 32 KiB window carries over from message to message (RFC 7692 §7.2.2).
    Own(Box<flate2::Decompress>),
}

pub fn io_kind(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(111) => "refused".into(),
        Some(104) => "reset".into(),
        Some(110) => "timeout".into(),
        Some(99) => "addr_unavailable".into(),
        Some(98) => "addr_in_use".into(),
        Some(24) => "too_many_files".into(),
        Some(32) => "broken_pipe".into(),
        Some(n) => format!("errno_{n}"),
        None => format!("{:?}", e.kind()),
    }
}

pub struct IoThread {
    plan: ThreadPlan,
    poll: Poll,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    cmds: Receiver<Cmd>,
    reports: Sender<Report>,
    rng: fastrand::Rng,
    // Connect phase.
    opened: u64,
    in_flight: usize,
    phase_start_ns: u64,
    connect: ConnectStats,
    connect_reported: bool,
    // Rounds.
    round: Option<RoundPlan>,
    stats: RoundStats,
    last_window_rx_ns: u64,
    published_in_round: u64,
    publisher_cursor: u64,
    dirty: Vec<usize>,
    /// Publisher connections ready to send (scratch of `publish_due`).
    ready: Vec<usize>,
    /// The `pad` string of this round's publish payloads.
    pad: Vec<u8>,
    /// `--data market`: this publisher thread's symbols and their random walks.
    market: crate::market::Market,
    /// The inflater shared by this thread's `server_no_context_takeover` connections.
    inflater: flate2::Decompress,
    /// The inflated payload of the message being read (reused).
    inflated: Vec<u8>,
    /// Recent standalone compressed messages, inflated (compress once: many copies).
    inflate_cache: wire::InflateCache,
    /// The TLS client configuration, if a target is `wss://`.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl IoThread {
    pub fn new(
        plan: ThreadPlan,
        cmds: Receiver<Cmd>,
        reports: Sender<Report>,
    ) -> io::Result<(IoThread, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let seed = plan.first ^ u64::from(std::process::id()) << 32;
        let tls = match plan.targets.iter().any(|t| t.tls) {
            true => Some(tls::client_config(plan.tls_ca.as_deref())?),
            false => None,
        };
        Ok((
            IoThread {
                conns: Slab::with_capacity(plan.count as usize),
                plan,
                poll,
                scratch: vec![0; READ_CHUNK_BYTES * 2],
                cmds,
                reports,
                rng: fastrand::Rng::with_seed(seed),
                opened: 0,
                in_flight: 0,
                phase_start_ns: mono_ns(),
                connect: ConnectStats::default(),
                connect_reported: false,
                round: None,
                stats: RoundStats::default(),
                last_window_rx_ns: 0,
                published_in_round: 0,
                publisher_cursor: 0,
                dirty: Vec::new(),
                ready: Vec::new(),
                pad: Vec::new(),
                market: crate::market::Market::new(seed),
                inflater: wire::new_inflater(),
                inflated: Vec::new(),
                inflate_cache: wire::InflateCache::new(),
                tls,
            },
            waker,
        ))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        self.phase_start_ns = mono_ns();
        let mut last_timeout_scan = 0u64;
        loop {
            let now = mono_ns();
            let timeout = self.poll_timeout(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("tickcast-bench: poll failed: {e}");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.on_event(ev.token().0, ev);
                }
            }
            if self.plan.recv_pause_us > 0 && self.connect_reported && !events.is_empty() {
                std::thread::sleep(Duration::from_micros(self.plan.recv_pause_us));
            }
            loop {
                match self.cmds.try_recv() {
                    Ok(Cmd::Round(r)) => self.start_round(r),
                    Ok(Cmd::Quit) | Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                }
            }
            let now = mono_ns();
            self.open_more(now);
            if self.round.as_ref().is_some_and(|r| r.publish.is_some()) {
                self.publish_due(now);
            }
            if !self.connect_reported && now - last_timeout_scan > 50_000_000 {
                last_timeout_scan = now;
                self.expire_handshakes(now);
            }
            self.maybe_report_connected();
            self.maybe_finish_round(mono_ns());
        }
    }

    fn poll_timeout(&self, now: u64) -> Duration {
        let mut t = IDLE_POLL;
        if !self.connect_reported && self.opened < self.plan.count {
            t = Duration::from_millis(1);
        }
        if let Some(r) = &self.round {
            if let Some(p) = &r.publish {
                let next = self.next_due_ns(p);
                if next < r.window_end_ns {
                    t = t.min(Duration::from_nanos(next.saturating_sub(now)));
                }
            }
            if now < r.window_end_ns {
                t = t.min(Duration::from_nanos(r.window_end_ns - now));
            }
        }
        t
    }

    // ---- events ---------------------------------------------------------------------------

    fn on_event(&mut self, key: usize, ev: &Event) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state == State::Connecting {
            match conn.sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(key, io_kind(&e)),
                Ok(None) => {}
            }
            match conn.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if ev.is_error() || ev.is_write_closed() {
                        self.fail(key, "connect_error".into());
                    }
                    return;
                }
                Err(e) => return self.fail(key, io_kind(&e)),
            }
            let key_bytes: [u8; 16] = std::array::from_fn(|_| self.rng.u8(..));
            let t = &self.plan.targets[conn.target];
            if let (true, Some(config)) = (t.tls, &self.tls) {
                match tls::connect(config, &t.host) {
                    Ok(client) => conn.tls = Some(client),
                    Err(e) => return self.fail(key, io_kind(&e)),
                }
            }
            let path = match conn.dialect {
                Dialect::V1 => &t.path,
                Dialect::Centrifugo => wire::CENTRIFUGO_PATH,
                Dialect::Binance => wire::BINANCE_PATH,
            };
            let (req, ws_key) =
                wire::handshake_request(&t.host, path, key_bytes, self.plan.deflate);
            conn.key = ws_key;
            conn.out.extend_from_slice(&req);
            conn.state = State::AwaitResponse;
            self.flush(key);
            return;
        }
        if conn.stalled && conn.state == State::Ready {
            // Never read again; only notice the server ending the connection (a reset, or a
            // FIN if it got through the zero window).
            if ev.is_error() || ev.is_read_closed() {
                let kind = match conn.sock.take_error() {
                    Ok(Some(e)) | Err(e) => io_kind(&e),
                    Ok(None) if ev.is_read_closed() => "eof".into(),
                    Ok(None) => "error".into(),
                };
                self.conns.remove(key);
                *self.stats.stalled_closed.entry(kind).or_insert(0) += 1;
            }
            return;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read(key);
        }
        if ev.is_writable() && self.conns.get(key).is_some_and(|c| c.has_output()) {
            self.flush(key);
        }
    }

    fn read(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let carried = conn.carry.len();
            if self.scratch.len() < carried + READ_CHUNK_BYTES {
                self.scratch.resize(carried + READ_CHUNK_BYTES, 0);
            }
            self.scratch[..carried].copy_from_slice(&conn.carry);
            let into = &mut self.scratch[carried..carried + READ_CHUNK_BYTES];
            let got = match conn.tls.as_mut() {
                Some(client) => tls::read(client, &mut conn.sock, into),
                None => conn.sock.read(into),
            };
            let n = match got {
                Ok(0) => {
                    let kind = if conn.state == State::Ready {
                        "eof"
                    } else {
                        "eof_in_handshake"
                    };
                    return self.fail(key, kind.into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(key, io_kind(&e)),
            };
            conn.carry.clear();
            if self.round.is_some() {
                self.stats.wire_bytes += n as u64;
            }
            let now = mono_ns();
            let before = conn.state;
            let window = self.round.as_ref().map_or((u64::MAX, u64::MAX), |r| {
                (r.window_start_ns, r.window_end_ns)
            });
            let mut ctx = Ctx {
                round: &mut self.stats,
                connect: &mut self.connect,
                window,
                last_window_rx_ns: &mut self.last_window_rx_ns,
                rng: &mut self.rng,
                deflate_offered: self.plan.deflate,
                inflater: &mut self.inflater,
                inflated: &mut self.inflated,
                inflate_cache: &mut self.inflate_cache,
            };
            let filled = &self.scratch[..carried + n];
            let result = process(conn, filled, now, &mut ctx);
            match result {
                Ok(consumed) => conn.carry.extend_from_slice(&filled[consumed..]),
                Err(kind) => return self.fail(key, kind),
            }
            let after = conn.state;
            if before == State::AwaitResponse && after != State::AwaitResponse {
                // Handshake done: subscribe (subscribers) or count as connected (publishers).
                let (index, dialect) = (conn.index, conn.dialect);
                match self.subscribe_frame(index, dialect, key) {
                    Some(frame) => self.conns[key].out.extend_from_slice(&frame),
                    None => self.connected(key, now),
                }
            } else if before == State::AwaitAck && after == State::Ready {
                self.connected(key, now);
            }
            if self.conns.get(key).is_some_and(|c| c.has_output()) {
                self.flush(key);
            }
            let Some(conn) = self.conns.get(key) else {
                return;
            };
            // A short plain read drained the socket; TLS reads on until it says so.
            if (n < READ_CHUNK_BYTES && conn.tls.is_none())
                || (conn.stalled && after == State::Ready)
            {
                return;
            }
        }
    }

    fn connected(&mut self, key: usize, now: u64) {
        let c = &mut self.conns[key];
        c.state = State::Ready;
        record(&mut self.connect.latency, now - c.started_ns);
        self.connect.ok += 1;
        *self
            .connect
            .per_target
            .entry(self.plan.targets[c.target].host.clone())
            .or_insert(0) += 1;
        self.connect.last_done_ns = self.connect.last_done_ns.max(now);
        self.in_flight -= 1;
        c.key = String::new();
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(client) = conn.tls.as_mut() {
            if let Err(e) = tls::flush(client, &mut conn.sock, &mut conn.out) {
                self.fail(key, io_kind(&e));
            }
            return;
        }
        let mut written = 0;
        while written < conn.out.len() {
            match conn.sock.write(&conn.out[written..]) {
                Ok(0) => return self.fail(key, "write_zero".into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(key, io_kind(&e)),
            }
        }
        conn.out.drain(..written);
    }

    fn fail(&mut self, key: usize, kind: String) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        if conn.state == State::Ready {
            *self.stats.closed.entry(kind).or_insert(0) += 1;
        } else {
            self.in_flight -= 1;
            *self.connect.failures.entry(kind).or_insert(0) += 1;
        }
    }
}
