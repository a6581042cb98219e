//! One I/O thread: an epoll loop (mio, edge-triggered) over a set of client connections.
//!
//! A thread opens its connections (bounded in-flight handshakes, optional rate), subscribes,
//! then serves rounds sent by its group: it answers pings, reads data frames and, when it holds
//! publishers, publishes paced messages. Reads go into one per-thread scratch buffer; a connection
//! keeps only the bytes of a partial frame (`carry`), so nothing is allocated per message.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        mpsc::{Receiver, Sender},
    },
    time::Duration,
};

use mio::{Events, Interest, Poll, Token, Waker, event::Event, net::TcpStream};
use serde::{Deserialize, Serialize};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    stats::{ConnectStats, RoundStats, record},
    wire::{self, Opcode, Parse},
};

const WAKER: Token = Token(usize::MAX);
/// Bytes asked of one `read`; a shorter answer means the socket is drained (edge-triggered
/// epoll reports new data with a new edge).
const READ_CHUNK_BYTES: usize = 128 * 1024;
/// A publisher whose unsent bytes exceed this skips messages instead of queueing without bound.
const PUBLISH_BACKLOG_BYTES_MAX: usize = 4 << 20;
/// A handshake response head larger than this is refused.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// The longest an idle loop sleeps before looking at its commands and deadlines.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// `SO_RCVBUF` asked for a stalled subscriber (the kernel doubles it and applies its minimum).
const STALLED_RCVBUF_BYTES: usize = 4096;

/// CLOCK_MONOTONIC in ns: the clock the publish time `t` is taken from, shared by all processes.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host:` header value.
    pub host: String,
    pub path: String,
}

/// What each connection of a thread subscribes to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Topics {
    /// Publishers: no subscription.
    Publisher,
    /// Every connection subscribes to this one topic.
    Fixed(String),
    /// Connection `i` takes `per_sub` distinct topics of `bench.t0..bench.t{k-1}`: topic `i % k`
    /// when `per_sub` is 1, else a seeded random choice.
    Bench { k: u32, per_sub: u32, seed: u64 },
}

impl Topics {
    pub fn bench_indices(k: u32, per_sub: u32, seed: u64, i: u64) -> Vec<u32> {
        if per_sub <= 1 {
            return vec![(i % u64::from(k)) as u32];
        }
        let m = per_sub.min(k) as usize;
        let mut rng = fastrand::Rng::with_seed(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut v = Vec::with_capacity(m);
        while v.len() < m {
            let t = rng.u32(..k);
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThreadPlan {
    /// Servers to connect to: connection `i` goes to `targets[i % len]` (one server, or the
    /// nodes of a cluster, `--url A,B,…`).
    pub targets: Vec<Target>,
    /// Local addresses to bind before connecting, used round-robin by global connection index.
    pub source_ips: Vec<IpAddr>,
    /// Global indices `[first, first + count)` of this thread's connections.
    pub first: u64,
    pub count: u64,
    pub topics: Topics,
    /// Connection attempts per second for this thread; `None` = as fast as `concurrency` allows.
    pub connect_rate: Option<f64>,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub connect_timeout_ms: u64,
    /// Subscribers: sleep this long after each batch of events once connected, so each read
    /// carries more frames (cheaper for the bench; latency then includes up to this pause).
    pub recv_pause_us: u64,
    /// Global indices (sorted) of the connections that stall: a tiny receive buffer, and no
    /// read after the subscribe ack.
    #[serde(default)]
    pub stalled: Vec<u64>,
}

/// Publishing part of a round (publisher threads only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishPlan {
    pub start_ns: u64,
    /// Messages per second over all of this thread's publisher connections.
    pub rate: f64,
    pub topics_k: u32,
    pub payload_bytes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundPlan {
    /// Messages with send time in `[window_start_ns, window_end_ns)` are measured.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// After the window, the round ends once no window message arrived for this long...
    pub quiet_ns: u64,
    /// ...or at this time at the latest.
    pub finish_by_ns: u64,
    pub publish: Option<PublishPlan>,
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
    /// Last seq seen per topic index (u32::MAX for topics not of the bench.t<N> form).
    last_seq: Vec<(u32, u64)>,
    /// Stops reading once subscribed (`--stalled-pct`); counted apart from the healthy ones.
    stalled: bool,
}

/// What the frame handler needs from the thread, split from the connection table for borrowck.
struct Ctx<'a> {
    round: &'a mut RoundStats,
    connect: &'a mut ConnectStats,
    window: (u64, u64),
    last_window_rx_ns: &'a mut u64,
    rng: &'a mut fastrand::Rng,
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
    /// The `pad` string of this round's publish payloads.
    pad: Vec<u8>,
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
                pad: Vec::new(),
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
            self.maybe_report_connected(now);
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

    // ---- connect phase ------------------------------------------------------------------

    fn open_more(&mut self, now: u64) {
        while self.opened < self.plan.count && self.in_flight < self.plan.concurrency {
            if let Some(rate) = self.plan.connect_rate {
                let allowed = ((now - self.phase_start_ns) as f64 / 1e9 * rate) as u64 + 1;
                if self.opened >= allowed {
                    break;
                }
            }
            let index = self.plan.first + self.opened;
            self.opened += 1;
            self.connect.attempted += 1;
            self.connect.first_start_ns = self.connect.first_start_ns.min(now);
            match self.open(index, now) {
                Ok(()) => self.in_flight += 1,
                Err(e) => *self.connect.failures.entry(io_kind(&e)).or_insert(0) += 1,
            }
        }
    }

    fn open(&mut self, index: u64, now: u64) -> io::Result<()> {
        let target = (index % self.plan.targets.len() as u64) as usize;
        let addr = self.plan.targets[target].addr;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        let stalled = self.plan.stalled.binary_search(&index).is_ok();
        if stalled {
            // Before connect: the window scale is agreed in the SYN.
            socket.set_recv_buffer_size(STALLED_RCVBUF_BYTES)?;
        }
        if !self.plan.source_ips.is_empty() {
            let ip = self.plan.source_ips[(index % self.plan.source_ips.len() as u64) as usize];
            // Lets a port in TIME_WAIT from an earlier run be bound again.
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
            Err(e) => return Err(e),
        }
        let mut sock = TcpStream::from_std(socket.into());
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        self.poll
            .registry()
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
        entry.insert(Conn {
            sock,
            state: State::Connecting,
            index,
            target,
            started_ns: now,
            key: String::new(),
            welcomed: false,
            carry: Vec::new(),
            out: Vec::new(),
            last_seq: Vec::new(),
            stalled,
        });
        Ok(())
    }

    fn expire_handshakes(&mut self, now: u64) {
        let limit = self.plan.connect_timeout_ms * 1_000_000;
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state != State::Ready && now - c.started_ns > limit)
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            self.fail(k, "handshake_timeout".into());
        }
    }

    fn maybe_report_connected(&mut self, _now: u64) {
        if self.connect_reported || self.opened < self.plan.count || self.in_flight > 0 {
            return;
        }
        self.connect_reported = true;
        let mut stats = std::mem::take(&mut self.connect);
        stats.stalled = self.conns.iter().filter(|(_, c)| c.stalled).count() as u64;
        if let Topics::Bench { k, per_sub, seed } = self.plan.topics {
            stats.subs_per_topic = vec![0; k as usize];
            // Expected deliveries count the healthy subscribers only.
            for (_, c) in self.conns.iter().filter(|(_, c)| !c.stalled) {
                for t in Topics::bench_indices(k, per_sub, seed, c.index) {
                    stats.subs_per_topic[t as usize] += 1;
                }
            }
        }
        stats.welcome_missing = self.conns.iter().filter(|(_, c)| !c.welcomed).count() as u64;
        let _ = self.reports.send(Report::Connected(stats));
    }

    fn subscribe_frame(&mut self, index: u64) -> Option<Vec<u8>> {
        let topics: Vec<String> = match &self.plan.topics {
            Topics::Publisher => return None,
            Topics::Fixed(t) => vec![t.clone()],
            Topics::Bench { k, per_sub, seed } => Topics::bench_indices(*k, *per_sub, *seed, index)
                .into_iter()
                .map(|i| format!("bench.t{i}"))
                .collect(),
        };
        let json = serde_json::json!({"op": "subscribe", "id": 1, "topics": topics}).to_string();
        let mut out = Vec::with_capacity(json.len() + 14);
        wire::put_masked_frame(
            &mut out,
            Opcode::Text,
            self.rng.u32(..).to_ne_bytes(),
            |o| o.extend_from_slice(json.as_bytes()),
        );
        Some(out)
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
            let (req, ws_key) = wire::handshake_request(&t.host, &t.path, key_bytes);
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
        if ev.is_writable() && self.conns.get(key).is_some_and(|c| !c.out.is_empty()) {
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
            let n = match conn
                .sock
                .read(&mut self.scratch[carried..carried + READ_CHUNK_BYTES])
            {
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
                let index = conn.index;
                match self.subscribe_frame(index) {
                    Some(frame) => self.conns[key].out.extend_from_slice(&frame),
                    None => self.connected(key, now),
                }
            } else if before == State::AwaitAck && after == State::Ready {
                self.connected(key, now);
            }
            if self.conns.get(key).is_some_and(|c| !c.out.is_empty()) {
                self.flush(key);
            }
            if n < READ_CHUNK_BYTES || (self.conns[key].stalled && after == State::Ready) {
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

    // ---- rounds ---------------------------------------------------------------------------

    fn start_round(&mut self, r: RoundPlan) {
        self.stats = RoundStats::default();
        if let Some(p) = &r.publish {
            self.stats.published_window = vec![0; p.topics_k as usize];
            // The data is `{"t":<16 digits>,"pad":"…"}`: 31 bytes around the pad.
            self.pad = vec![b'x'; p.payload_bytes.saturating_sub(31)];
        }
        self.last_window_rx_ns = 0;
        self.published_in_round = 0;
        self.round = Some(r);
    }

    fn maybe_finish_round(&mut self, now: u64) {
        let Some(r) = &self.round else { return };
        if now < r.window_end_ns {
            return;
        }
        let quiet = now.saturating_sub(self.last_window_rx_ns.max(r.window_end_ns)) >= r.quiet_ns;
        let publishers_drained = r.publish.is_none()
            || self
                .dirty
                .iter()
                .all(|&k| self.conns.get(k).is_none_or(|c| c.out.is_empty()));
        if (quiet && publishers_drained) || now >= r.finish_by_ns {
            self.round = None;
            let mut stats = std::mem::take(&mut self.stats);
            let ready = |c: &&Conn| c.state == State::Ready;
            stats.open_conns = self.conns.iter().map(|(_, c)| c).filter(ready).count() as u64;
            stats.stalled_open = self
                .conns
                .iter()
                .map(|(_, c)| c)
                .filter(|c| c.stalled && ready(c))
                .count() as u64;
            stats.open_conns -= stats.stalled_open;
            for c in self.conns.iter().map(|(_, c)| c) {
                if !c.stalled && c.state == State::Ready {
                    let host = &self.plan.targets[c.target].host;
                    *stats.open_per_target.entry(host.clone()).or_insert(0) += 1;
                }
            }
            let _ = self.reports.send(Report::RoundDone(stats));
        }
    }

    fn next_due_ns(&self, p: &PublishPlan) -> u64 {
        p.start_ns + (self.published_in_round as f64 * 1e9 / p.rate) as u64
    }

    /// Publishes every message due by `now` (round-robin over publishers and topics), then
    /// writes each touched publisher once.
    fn publish_due(&mut self, now: u64) {
        let Some(r) = &self.round else { return };
        let Some(p) = r.publish.clone() else { return };
        let (ws, we) = (r.window_start_ns, r.window_end_ns);
        let ready: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == State::Ready)
            .map(|(k, _)| k)
            .collect();
        if now < p.start_ns {
            return;
        }
        self.dirty.clear();
        loop {
            let due = self.next_due_ns(&p);
            if due > now || due >= we {
                break;
            }
            self.published_in_round += 1;
            if ready.is_empty() {
                self.stats.publish_skipped += 1;
                continue;
            }
            let cursor = self.publisher_cursor;
            self.publisher_cursor += 1;
            let key = ready[(cursor % ready.len() as u64) as usize];
            let topic = (cursor % u64::from(p.topics_k)) as u32;
            let conn = &mut self.conns[key];
            if conn.out.len() > PUBLISH_BACKLOG_BYTES_MAX {
                self.stats.publish_skipped += 1;
                continue;
            }
            let t = mono_ns();
            let mask = self.rng.u32(..).to_ne_bytes();
            wire::put_masked_frame(&mut conn.out, Opcode::Text, mask, |o| {
                // {"op":"publish","topic":"bench.tN","data":{"t":<ns>,"pad":"xx…"}}
                o.extend_from_slice(b"{\"op\":\"publish\",\"topic\":\"bench.t");
                o.extend_from_slice(itoa::Buffer::new().format(topic).as_bytes());
                o.extend_from_slice(b"\",\"data\":{\"t\":");
                o.extend_from_slice(itoa::Buffer::new().format(t).as_bytes());
                o.extend_from_slice(b",\"pad\":\"");
                o.extend_from_slice(&self.pad);
                o.extend_from_slice(b"\"}}");
            });
            self.stats.published_total += 1;
            if (ws..we).contains(&t) {
                self.stats.published_window[topic as usize] += 1;
            }
            if !self.dirty.contains(&key) {
                self.dirty.push(key);
            }
        }
        for i in 0..self.dirty.len() {
            self.flush(self.dirty[i]);
        }
    }
}

/// Handles the bytes read for one connection; returns how many were consumed (the rest is a
/// partial frame), or the kind of failure that ends the connection.
fn process(conn: &mut Conn, buf: &[u8], now: u64, ctx: &mut Ctx) -> Result<usize, String> {
    let mut at = 0;
    if conn.state == State::AwaitResponse {
        let Some(head) = wire::response_head_len(buf) else {
            if buf.len() > RESPONSE_HEAD_BYTES_MAX {
                return Err("handshake_oversized".into());
            }
            return Ok(0);
        };
        match wire::check_response(&buf[..head], &conn.key) {
            Ok(()) => {}
            Err(wire::HandshakeError::Status(s)) => return Err(format!("handshake_status_{s}")),
            Err(wire::HandshakeError::Accept) => return Err("handshake_accept".into()),
        }
        // The caller queues the subscribe and moves on; frames may already follow the head.
        conn.state = State::AwaitAck;
        at = head;
    }
    loop {
        let frame = match wire::parse_frame(&buf[at..]) {
            Ok(Parse::Frame(f)) => f,
            Ok(Parse::Incomplete { .. }) => return Ok(at),
            Err(e) => return Err(format!("protocol: {e}")),
        };
        let payload = &buf[at + frame.payload_start..at + frame.payload_end];
        at += frame.len();
        match frame.opcode {
            Opcode::Text if frame.fin => on_text(conn, payload, now, ctx)?,
            Opcode::Ping => {
                ctx.round.pings_answered += 1;
                let mask = ctx.rng.u32(..).to_ne_bytes();
                wire::put_masked_frame(&mut conn.out, Opcode::Pong, mask, |o| {
                    o.extend_from_slice(payload)
                });
            }
            Opcode::Pong => {}
            Opcode::Close => return Err(format!("closed_{}", wire::close_code(payload))),
            _ => ctx.round.odd_frames += 1,
        }
    }
}

fn on_text(conn: &mut Conn, payload: &[u8], now: u64, ctx: &mut Ctx) -> Result<(), String> {
    if !wire::is_op(payload) {
        if conn.stalled {
            // Frames right behind the subscribe ack, in the last read a stalled one does.
            return Ok(());
        }
        let Some(d) = wire::parse_data(payload) else {
            ctx.round.odd_frames += 1;
            return Ok(());
        };
        let r = &mut *ctx.round;
        r.received_total += 1;
        match d.sent_ns {
            Some(t) if (ctx.window.0..ctx.window.1).contains(&t) => {
                r.received_window += 1;
                record(&mut r.latency, now.saturating_sub(t));
                *ctx.last_window_rx_ns = now;
            }
            Some(_) => r.received_outside += 1,
            None => r.received_untimed += 1,
        }
        let topic = d.topic_idx.unwrap_or(u32::MAX);
        match conn.last_seq.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, last)) => {
                if d.seq > *last + 1 {
                    r.gaps += d.seq - *last - 1;
                } else if d.seq <= *last {
                    r.dups += 1;
                }
                *last = d.seq;
            }
            None => conn.last_seq.push((topic, d.seq)),
        }
        return Ok(());
    }
    match wire::op_name(payload) {
        b"welcome" => {
            conn.welcomed = true;
            let shard = wire::number_after(payload, b"\"shard\":")
                .map_or_else(|| "?".to_owned(), |s| s.to_string());
            *ctx.connect.shards.entry(shard).or_insert(0) += 1;
        }
        b"ack"
            if conn.state == State::AwaitAck
                && wire::number_after(payload, b"\"id\":") == Some(1) =>
        {
            conn.state = State::Ready;
        }
        b"error" => {
            let code = wire::string_after(payload, b"\"code\":").map_or_else(
                || "?".to_owned(),
                |c| String::from_utf8_lossy(c).into_owned(),
            );
            if conn.state == State::AwaitAck {
                return Err(format!("server_error_{code}"));
            }
            *ctx.round.server_errors.entry(code).or_insert(0) += 1;
        }
        _ => {}
    }
    Ok(())
}
