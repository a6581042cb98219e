//! One connection: its state in the shard's slab, its reader task, and how it closes.
//!
//! Memory: an idle subscribed connection holds its slab entry ([`Conn`], size pinned below),
//! a reader task parked on io_uring POLLIN (no buffer: bytes are read into the shard's one
//! scratch buffer only once the socket is readable), its socket, and its index entries. A read
//! buffer exists only while a partial frame or request is in flight; an out-queue allocation
//! only while frames wait.
//!
//! Lifecycle: `Http` (request/upgrade) -> `Ws` -> `Closing` (close frame sent, reading until
//! the peer's close or EOF or `timeouts.close_ms`) -> removed. Any part of the shard may decide
//! a connection ends ([`State::kill`]); only its reader task removes it, woken by
//! `shutdown(2)` on the socket.

use std::{mem, rc::Rc, sync::Arc};

use monoio::net::TcpStream;
use rustix::{
    io::Errno,
    net::{RecvFlags, Shutdown},
};

use super::{Shard, State, auth::AuthState, out::Flush, out::OutQueue};
use crate::{
    frame::{Frame, OutFrame},
    limits::READS_PER_WAKE_MAX,
    protocol::{self, ErrorCode, Op},
    stats::CloseReason,
    sys::fd_of,
    ws::{
        close as cc,
        frame::{
            Decoder, HEADER_BYTES_MAX, Message, OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT, Violation,
            encode_close, encode_frame,
        },
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading an HTTP request (before an upgrade, or between keep-alive requests).
    Http,
    /// Waiting for other shards to answer an HTTP request (`/metrics`, `/v1/publish`).
    HttpBusy,
    /// HTTP response sent with `Connection: close`; waiting for it to flush, then EOF.
    HttpClosing,
    Ws,
    /// Close frame queued or sent; frames other than the peer's close are ignored.
    Closing,
    /// Decided to end; the reader task removes it on its next wake.
    Dead,
}

/// A connection's state. Hot fields first.
#[derive(Debug)]
pub struct Conn {
    pub out: OutQueue,
    /// Fan-out round this connection last received a frame in (dedup of overlapping patterns).
    pub round: u64,
    pub stream: Rc<TcpStream>,
    pub phase: Phase,
    pub dirty: bool,
    /// The socket buffer is full; a drain task waits for POLLOUT.
    pub write_blocked: bool,
    pub drain_task: bool,
    /// After the out-queue empties, `shutdown(SHUT_WR)` (close frame or final HTTP response).
    pub shutdown_after_flush: bool,
    /// The `/echo` conformance route instead of the protocol.
    pub echo: bool,
    pub keep_alive: bool,
    /// Reset (SO_LINGER 0) instead of a graceful FIN when closing.
    pub reset_on_close: bool,
    /// Holds one of the shard's handshake slots (`limits.handshakes_per_shard_max`): from
    /// accept until the upgrade, or until the connection is removed, whatever ended it.
    pub handshake_slot: bool,
    /// Input is read and discarded (after a protocol violation).
    pub drop_input: bool,
    pub close_reason: Option<CloseReason>,
    pub epoch: u32,
    /// The peer's address as accepted, IPv6 form (IPv4 mapped): 16 bytes where `IpAddr` takes
    /// 17 and would not fit the size bound below. See [`Conn::ip`], [`Conn::ip_bucket`].
    pub peer_ip: [u8; 16],
    /// Shard clock (s) at accept (`GET /v1/connections` `age_s`).
    pub accepted_s: u32,
    /// Bytes of a partial frame or request, kept between reads.
    pub rbuf: Vec<u8>,
    pub decoder: Decoder,
    /// Subscribed patterns (at most `limits.subscriptions_per_conn_max`).
    pub subs: Vec<Box<str>>,
    pub last_rx_ms: u64,
    pub last_ping_ms: u64,
    /// Handshake / HTTP keep-alive / close deadline, by phase.
    pub deadline_ms: u64,
    /// Number of this connection on its shard (the `conn` id is `<shard>-<no>`).
    pub no: u64,
    /// Who this is; `None` = anonymous. Boxed: a market-data fan-out is mostly anonymous.
    pub ident: Option<Box<crate::auth::Identity>>,
    /// Inbound message rate: GCRA arrival time (µs of the shard clock).
    pub rate_tat_us: u64,
    /// Messages refused by the rate limit in a row.
    pub rate_strikes: u16,
    pub auth: AuthState,
    /// Some topic of this connection waits for its position (`State::recovering`).
    pub recovering: bool,
    /// A batched write is scheduled with the pacer.
    pub paced: bool,
    /// A ping is due: it goes out with the next write of data, or alone once it has waited
    /// `timer::ping_wait_ms` (see `State::scan`).
    pub ping_due: bool,
    /// Frames this connection did not get because of `conflate`, `drop_oldest` or
    /// `throttled` (the frames it got carry the true `seq`).
    pub skipped: u32,
    /// Accepted on the TLS listener: its rustls session (see `super::tls`).
    pub tls: Option<Box<super::tls::TlsConn>>,
}

// There is one per connection (19k per process in the benchmarks, 1 KiB budget each in all).
// 256 bytes until the admin API (peer address, accept time: 16 bytes) and the lanes (per-lane
// byte counts, skipped frames: 16 bytes) came; 272 keeps the slab entry at 4.25 cache lines.
const _: () = assert!(mem::size_of::<Conn>() <= 272);

impl Conn {
    pub fn new(
        stream: Rc<TcpStream>,
        epoch: u32,
        ip: std::net::IpAddr,
        no: u64,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Conn {
        Conn {
            out: OutQueue::default(),
            round: 0,
            stream,
            phase: Phase::Http,
            dirty: false,
            write_blocked: false,
            drain_task: false,
            shutdown_after_flush: false,
            echo: false,
            keep_alive: false,
            reset_on_close: false,
            handshake_slot: true,
            drop_input: false,
            close_reason: None,
            epoch,
            peer_ip: match ip {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            },
            accepted_s: (now_ms / 1000) as u32,
            rbuf: Vec::new(),
            decoder: Decoder::new(),
            subs: Vec::new(),
            last_rx_ms: now_ms,
            last_ping_ms: now_ms,
            deadline_ms,
            no,
            ident: None,
            rate_tat_us: 0,
            rate_strikes: 0,
            auth: AuthState::Ok,
            recovering: false,
            paced: false,
            ping_due: false,
            skipped: 0,
            tls: None,
        }
    }

    /// The peer's address (IPv4 as IPv4).
    pub fn ip(&self) -> std::net::IpAddr {
        std::net::Ipv6Addr::from(self.peer_ip).to_canonical()
    }

    /// The peer's bucket in the per-IP counters (`Shared::per_ip`, `connect_tat`).
    pub fn ip_bucket(&self) -> u32 {
        super::accept::ip_bucket(self.ip())
    }

    /// Marks the connection as having frames to write; true the first time since the last
    /// flush, when the caller adds it to the shard's dirty list.
    #[inline]
    pub fn mark_dirty(&mut self) -> bool {
        !mem::replace(&mut self.dirty, true)
    }

    fn in_http(&self) -> bool {
        matches!(
            self.phase,
            Phase::Http | Phase::HttpBusy | Phase::HttpClosing
        )
    }
}

/// What a reader task does next.
pub enum Step {
    /// Wait for the socket to become readable.
    Wait,
    /// The read budget is spent and the socket may hold more: let the shard's other tasks
    /// run first, then read again.
    Yield,
    /// Wait for other shards to answer an HTTP request, then call `on_http_reply`.
    Await(futures_channel::oneshot::Receiver<Vec<u8>>),
    /// Remove the connection.
    Exit,
}

/// The reader task of one connection: waits for readability (no buffer pinned while idle),
/// then lets the shard read and handle what arrived.
pub async fn conn_task(shard: Rc<Shard>, key: u32, stream: Rc<TcpStream>) {
    let mut step = Step::Wait;
    loop {
        step = match step {
            Step::Wait => {
                let ready = stream.readable(false).await;
                shard.on_readable(key, ready.is_err())
            }
            Step::Yield => {
                // Without this, a client that never stops sending would keep its shard: the
                // epoll driver reports a socket still readable without suspending the task.
                super::YieldNow(false).await;
                shard.on_readable(key, false)
            }
            Step::Await(rx) => {
                // Boxed: monoio's timer future is ~770 bytes and would otherwise be part of
                // every connection's task, idle WebSockets included.
                let wait = std::time::Duration::from_millis(shard.shared.cfg.timeouts.handshake_ms);
                let reply = Box::pin(monoio::time::timeout(wait, rx)).await;
                shard.on_http_reply(key, reply.ok().and_then(Result::ok))
            }
            Step::Exit => break,
        };
    }
    let mut st = shard.st.borrow_mut();
    st.remove_conn(key);
    shard.finish(st);
}

/// Writes a blocked connection's queue whenever its socket takes more; ends when the queue is
/// empty or the connection is gone. Exists only while a socket is full.
pub async fn drain_task(shard: Rc<Shard>, key: u32, epoch: u32, stream: Rc<TcpStream>) {
    loop {
        let ready = stream.writable(false).await;
        let mut st = shard.st.borrow_mut();
        let done = st.on_writable(key, epoch, ready.is_err());
        shard.finish(st);
        if done {
            return;
        }
    }
}

impl Shard {
    fn on_readable(self: &Rc<Self>, key: u32, poll_failed: bool) -> Step {
        let mut st = self.st.borrow_mut();
        let step = st.read_conn(key, poll_failed);
        self.finish(st);
        step
    }

    fn on_http_reply(self: &Rc<Self>, key: u32, reply: Option<Vec<u8>>) -> Step {
        let mut st = self.st.borrow_mut();
        let step = st.http_reply(key, reply);
        self.finish(st);
        step
    }
}

impl State {
    /// Reads what the socket has (up to `READS_PER_WAKE_MAX` reads) and handles it.
    fn read_conn(&mut self, key: u32, poll_failed: bool) -> Step {
        let Some(conn) = self.conns.get(key as usize) else {
            return Step::Exit;
        };
        if conn.phase == Phase::Dead {
            return Step::Exit;
        }
        if poll_failed {
            self.kill(key, CloseReason::IoError);
            return Step::Exit;
        }
        let now = self.clock();
        for _ in 0..READS_PER_WAKE_MAX {
            // Every read lands in the shard's one scratch buffer; a connection's own buffer
            // grows only by the bytes it actually received and must keep (a partial frame, an
            // HTTP request being assembled). A slow handshake costs its few bytes, not 64 KiB.
            self.scratch.clear();
            let State { conns, scratch, .. } = self;
            let res = rustix::net::recv(
                fd_of(&*conns[key as usize].stream),
                rustix::buffer::spare_capacity(scratch),
                RecvFlags::DONTWAIT,
            );
            match res {
                Ok((0, _)) => {
                    let conn = &mut self.conns[key as usize];
                    let reason = if conn.phase == Phase::Closing {
                        CloseReason::ClientClose
                    } else if conn.in_http() {
                        CloseReason::HttpDone
                    } else {
                        CloseReason::ClientGone
                    };
                    conn.close_reason.get_or_insert(reason);
                    return Step::Exit;
                }
                Ok(_) => {
                    let conn = &mut self.conns[key as usize];
                    conn.last_rx_ms = now;
                    if conn.drop_input {
                        // The connection was failed (RFC 6455 §7.1.7): its input is read and
                        // dropped until EOF or the close deadline.
                        continue;
                    }
                    // TLS: the scratch buffer's ciphertext is replaced by its plaintext.
                    if conn.tls.is_some() {
                        match self.tls_read(key) {
                            super::tls::TlsRead::Data => {}
                            super::tls::TlsRead::Nothing => continue,
                            super::tls::TlsRead::Failed => return Step::Exit,
                        }
                    }
                    let State { conns, scratch, .. } = self;
                    let conn = &mut conns[key as usize];
                    let step = if conn.in_http() {
                        conn.rbuf.extend_from_slice(scratch);
                        self.http_input(key)
                    } else if !conn.rbuf.is_empty() {
                        conn.rbuf.extend_from_slice(scratch);
                        self.ws_input(key, true)
                    } else {
                        self.ws_input(key, false)
                    };
                    match step {
                        Step::Wait => {}
                        other => return other,
                    }
                    if self
                        .conns
                        .get(key as usize)
                        .is_none_or(|c| c.phase == Phase::Dead)
                    {
                        return Step::Exit;
                    }
                }
                Err(Errno::AGAIN) => return Step::Wait,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.kill(key, CloseReason::IoError);
                    return Step::Exit;
                }
            }
        }
        Step::Yield
    }

    /// Decodes WebSocket frames from the bytes just read (`own`: in `conn.rbuf`, else in the
    /// scratch buffer) and handles each complete message. Keeps a partial frame in `rbuf`.
    pub(crate) fn ws_input(&mut self, key: u32, own: bool) -> Step {
        let conn = &mut self.conns[key as usize];
        let mut buf = if own {
            mem::take(&mut conn.rbuf)
        } else {
            mem::take(&mut self.scratch)
        };
        let mut decoder = mem::take(&mut conn.decoder);
        let limit = if conn.echo {
            self.shared.cfg.limits.echo_message_bytes_max
        } else {
            self.shared.cfg.limits.message_bytes_max
        };
        let mut pos = 0;
        let mut step = Step::Wait;
        while pos < buf.len() {
            let decoded = match decoder.decode(&mut buf[pos..], limit) {
                Ok(d) => d,
                Err(violation) => {
                    self.violation(key, violation);
                    // The stream cannot be parsed past this point: drop the rest.
                    self.conns[key as usize].drop_input = true;
                    decoder = Decoder::new();
                    pos = buf.len();
                    break;
                }
            };
            let consumed = decoded.consumed;
            if let Some(msg) = decoded.message {
                step = self.on_message(key, msg);
            }
            pos += consumed;
            if consumed == 0 || !matches!(step, Step::Wait) {
                break;
            }
            let phase = self.conns[key as usize].phase;
            if phase == Phase::Dead {
                break;
            }
        }
        // A fragmented message that completed at the very end of the input leaves the
        // decoder's reassembly buffer allocated until it is called once more.
        if decoder.buffered_bytes() > 0 && !decoder.in_fragmented_message() {
            let _ = decoder.decode(&mut [], limit);
        }
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return Step::Exit;
        };
        conn.decoder = decoder;
        if own {
            buf.drain(..pos);
            conn.rbuf = if buf.is_empty() { Vec::new() } else { buf };
        } else {
            if pos < buf.len() && conn.phase != Phase::Dead {
                conn.rbuf.extend_from_slice(&buf[pos..]);
            }
            self.scratch = buf;
        }
        step
    }

    fn on_message(&mut self, key: u32, msg: Message<'_>) -> Step {
        self.stats.c.messages_in += 1;
        let conn = &mut self.conns[key as usize];
        if conn.phase == Phase::Closing {
            // RFC 6455 §7.1.1: after both close frames, the server closes the TCP connection.
            return match msg {
                Message::Close(_) => Step::Exit,
                _ => Step::Wait,
            };
        }
        // Every message that costs work counts against the connection's rate (the `/echo`
        // conformance route excepted); pongs and closes do not.
        let counted = !conn.echo
            && matches!(
                msg,
                Message::Text(_) | Message::Binary(_) | Message::Ping(_)
            );
        if counted && !self.rate_ok(key, !matches!(msg, Message::Ping(_))) {
            return Step::Wait;
        }
        let conn = &self.conns[key as usize];
        match msg {
            Message::Text(text) if conn.echo => self.echo(key, OP_TEXT, text),
            Message::Binary(data) if conn.echo => self.echo(key, OP_BINARY, data),
            Message::Text(text) => self.on_op(key, text),
            Message::Binary(_) => self.reply_with(key, |out| {
                protocol::error(
                    out,
                    None,
                    ErrorCode::BadRequest,
                    "binary messages are not supported",
                    None,
                )
            }),
            // §5.5.2: a pong carries the ping's application data.
            Message::Ping(payload) => self.echo(key, OP_PONG, payload),
            Message::Pong(_) => {}
            Message::Close(close) => {
                // §5.5.1: echo the status code; an empty close gets an empty close.
                let mut frame = Vec::with_capacity(16);
                match close {
                    Some((code, _)) => encode_close(&mut frame, code, ""),
                    None => encode_frame(&mut frame, OP_CLOSE, b""),
                }
                self.close_with(key, frame, CloseReason::ClientClose);
                return Step::Wait;
            }
        }
        Step::Wait
    }

    fn echo(&mut self, key: u32, opcode: u8, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + HEADER_BYTES_MAX);
        encode_frame(&mut frame, opcode, payload);
        self.enqueue(key, Rc::new(Arc::new(Frame::control(frame))));
    }

    /// A client op (protocol v1).
    fn on_op(&mut self, key: u32, text: &mut [u8]) {
        let req = match protocol::parse(text, &mut self.json) {
            Ok(req) => req,
            Err(bad) => {
                let id = bad.id;
                return self.reply_with(key, |out| {
                    protocol::error(
                        out,
                        id.as_deref(),
                        ErrorCode::BadRequest,
                        &bad.message,
                        None,
                    )
                });
            }
        };
        let id = req.id;
        let gated = matches!(req.op, Op::Subscribe { .. } | Op::Publish { .. });
        if gated && !self.auth_gate(key, id.as_deref()) {
            return;
        }
        match req.op {
            Op::Auth { token } => self.auth_op(key, id, &token),
            Op::Subscribe { topics, since } => self.subscribe(key, id, &topics, &since),
            Op::Unsubscribe { topics } => self.unsubscribe(key, id, &topics),
            Op::Publish { topic, idem } => {
                let data = req.data.expect("parse checks data for publish");
                self.publish_op(key, id, &topic, data, idem.map(|k| k.as_ref().into()))
            }
            Op::Ping => {
                let ts = crate::frame::unix_us();
                self.reply_with(key, |out| protocol::pong(out, id.as_deref(), ts))
            }
        }
    }

    /// Queues `frame` for `key` (any phase that still writes). Over the queue bound the
    /// connection is a slow consumer.
    pub fn enqueue(&mut self, key: u32, frame: OutFrame) {
        let limits = &self.shared.cfg.limits;
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if matches!(conn.phase, Phase::Closing | Phase::Dead) {
            return;
        }
        if conn.echo || conn.in_http() {
            // HTTP responses and the echo route: one bound on the whole queue (the echo route
            // must hold one echoed message of its larger size).
            let max = if conn.echo {
                limits
                    .write_queue_bytes_max
                    .max(limits.echo_message_bytes_max + HEADER_BYTES_MAX)
            } else {
                limits.write_queue_bytes_max
            };
            if conn.out.bytes() + frame.len() > max {
                self.slow_consumer(key);
                return;
            }
            conn.out.push(frame);
            if conn.mark_dirty() {
                self.dirty.push(key);
            }
            return;
        }
        // Replies in the control lane, replayed and held frames in their topic's lane.
        self.offer_now(key, frame, true);
    }

    /// Writes what `key` has queued, as one vectored write per `IOVECS_PER_WRITE` frames.
    pub(crate) fn flush_conn(&mut self, key: u32, now_ns: u64) {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if !conn.dirty && !conn.shutdown_after_flush {
            return;
        }
        conn.dirty = false;
        if conn.ping_due && conn.phase == Phase::Ws {
            // The due ping rides in this write: no write (and no wake-up of the client's
            // stack) of its own.
            conn.ping_due = false;
            conn.last_ping_ms = self.now_ms;
            let _ = conn.out.offer(self.ping_frame.clone(), &self.bounds);
        }
        if conn.write_blocked || conn.phase == Phase::Dead {
            return;
        }
        match conn.flush_out(conn.shutdown_after_flush, now_ns, &mut self.stats) {
            Flush::Done => {
                if conn.shutdown_after_flush {
                    conn.shutdown_after_flush = false;
                    let _ = rustix::net::shutdown(fd_of(&*conn.stream), Shutdown::Write);
                }
            }
            Flush::Blocked => {
                conn.write_blocked = true;
                if !conn.drain_task {
                    conn.drain_task = true;
                    self.need_drain.push((key, conn.epoch, conn.stream.clone()));
                }
            }
            Flush::Failed(_) => self.kill(key, CloseReason::IoError),
        }
    }

    /// The drain task's socket is writable again. Returns whether the task is done.
    fn on_writable(&mut self, key: u32, epoch: u32, poll_failed: bool) -> bool {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return true;
        };
        if conn.epoch != epoch {
            return true;
        }
        if conn.phase == Phase::Dead {
            conn.drain_task = false;
            return true;
        }
        if poll_failed {
            conn.drain_task = false;
            self.kill(key, CloseReason::IoError);
            return true;
        }
        conn.write_blocked = false;
        conn.dirty = true;
        let now_ns = crate::frame::monotonic_ns();
        self.flush_conn(key, now_ns);
        let conn = &mut self.conns[key as usize];
        if conn.write_blocked && conn.phase != Phase::Dead {
            return false;
        }
        conn.drain_task = false;
        true
    }

    /// Queues `close_frame` (already encoded) and moves to `Closing`: after it is written the
    /// socket's write side is shut; reading continues until the peer's close, EOF or
    /// `timeouts.close_ms`.
    pub(crate) fn close_with(&mut self, key: u32, close_frame: Vec<u8>, reason: CloseReason) {
        let frame: OutFrame = Rc::new(Arc::new(Frame::control(close_frame)));
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if matches!(conn.phase, Phase::Closing | Phase::Dead) {
            return;
        }
        // The close frame is the last frame: it bypasses the queue bound (it is tiny) and the
        // lanes (what is queued before it still goes first).
        conn.out.push_last(frame);
        self.last_frame_queued(key, Phase::Closing, reason);
    }

    /// The connection's last frame (a close frame, a final HTTP response) is queued: once it
    /// is written the write side is shut; input is then read until EOF or `timeouts.close_ms`.
    pub(crate) fn last_frame_queued(&mut self, key: u32, phase: Phase, reason: CloseReason) {
        let deadline = self.now_ms + self.shared.cfg.timeouts.close_ms;
        let conn = &mut self.conns[key as usize];
        conn.close_reason.get_or_insert(reason);
        conn.phase = phase;
        conn.shutdown_after_flush = true;
        conn.deadline_ms = deadline;
        conn.rbuf = Vec::new();
        if conn.mark_dirty() {
            self.dirty.push(key);
        }
    }

    /// Closes with a WebSocket close frame `code` and a constant reason.
    pub(crate) fn close_code(&mut self, key: u32, code: u16, text: &str, reason: CloseReason) {
        let mut frame = Vec::with_capacity(4 + text.len());
        encode_close(&mut frame, code, text);
        self.close_with(key, frame, reason);
    }

    fn violation(&mut self, key: u32, v: Violation) {
        let reason = match v {
            Violation::Protocol(_) => CloseReason::ProtocolError,
            Violation::InvalidUtf8 => CloseReason::InvalidUtf8,
            Violation::TooLarge => CloseReason::TooLarge,
        };
        self.close_code(key, v.close_code(), v.reason(), reason);
    }

    /// The connection's queue passed `limits.write_queue_bytes_max`: drop what is queued, try
    /// the 4008 close frame once without waiting (only at a frame boundary, or it would corrupt
    /// the stream), and release the connection: gracefully if the close frame went out, with a
    /// reset otherwise so a stalled peer cannot pin kernel memory either.
    pub(crate) fn slow_consumer(&mut self, key: u32) {
        let conn = &mut self.conns[key as usize];
        conn.close_reason.get_or_insert(CloseReason::SlowConsumer);
        let mut sent = false;
        if conn.out.at_frame_boundary() {
            let mut frame = Vec::with_capacity(24);
            encode_close(&mut frame, cc::SLOW_CONSUMER, "slow consumer");
            sent = conn.send_final(&frame, &mut self.stats);
        }
        conn.reset_on_close = !sent;
        self.kill(key, CloseReason::SlowConsumer);
    }

    /// Ends a connection now: nothing more is written; its reader task is woken (by shutting
    /// the socket down) and removes it.
    pub(crate) fn kill(&mut self, key: u32, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key as usize) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        conn.close_reason.get_or_insert(reason);
        conn.phase = Phase::Dead;
        conn.out.clear();
        conn.rbuf = Vec::new();
        if conn.reset_on_close {
            let _ = rustix::net::sockopt::set_socket_linger(
                fd_of(&*conn.stream),
                Some(std::time::Duration::ZERO),
            );
        }
        let _ = rustix::net::shutdown(fd_of(&*conn.stream), Shutdown::Both);
    }

    /// Removes a connection (its reader task ended): unsubscribes it everywhere, counts it
    /// closed, releases its share of the connection limits. Dropping the last `Rc` of its
    /// stream closes the socket.
    pub(crate) fn remove_conn(&mut self, key: u32) {
        let Some(mut conn) = self.conns.try_remove(key as usize) else {
            return;
        };
        // Frames still queued (the close frame echoed just before the peer's final close, a
        // last HTTP response) get one nonblocking write before the socket closes: the flusher
        // would only run after this connection is gone.
        if !conn.out.is_empty() && !conn.write_blocked {
            let now_ns = crate::frame::monotonic_ns();
            let _ = conn.flush_out(true, now_ns, &mut self.stats);
        }
        if conn.tls.as_ref().is_some_and(|t| !t.established) {
            self.stats.c.tls_handshake_failures += 1;
        }
        // Admin: per-user index and presence `leave` events (`super::admin`).
        self.conn_gone(key, &conn);
        for pattern in &conn.subs {
            self.unsubscribe_pattern(pattern, key);
        }
        if let Some(ident) = &conn.ident {
            self.release_user(ident);
        }
        if conn.recovering {
            self.forget_recovering(key);
        }
        self.forget_paced(key);
        if conn.handshake_slot {
            self.handshakes -= 1;
        }
        self.stats
            .closed(conn.close_reason.unwrap_or(CloseReason::ClientGone));
        self.shared
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.shared.per_ip[conn.ip_bucket() as usize]
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if conn.reset_on_close {
            let _ = rustix::net::sockopt::set_socket_linger(
                fd_of(&*conn.stream),
                Some(std::time::Duration::ZERO),
            );
        }
    }
}
