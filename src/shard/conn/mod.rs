//! The connections part of a shard: one connection's state ([`Conn`]), the slab that holds
//! them all with its bookkeeping ([`Conns`]: numbering, handshake slots, the dirty list, drain
//! tasks to start, paused readers), and a connection's life.
//!
//! **Memory.** An idle subscribed connection holds its slab entry ([`Conn`], size pinned
//! below, with its socket's descriptor), its index entries, and nothing else in user space: no
//! task, no pending operation, no buffer. Its socket sits in the shard's readiness set (an
//! epoll instance, edge-triggered; `poll.rs`), which the shard waits on as one descriptor
//! through its runtime. Bytes are read into the shard's one scratch buffer only once the set
//! reports the socket readable. A read buffer ([`Partial`]) exists only while a message or
//! request is in flight; an out-queue allocation only while frames wait; a small task only
//! while an HTTP request waits for other shards.
//!
//! **Lifecycle.** One state machine, one exit:
//!
//! ```text
//!  accept ─► Http ─upgrade─► Ws ─close frame queued─► Closing ──┐
//!             │ ▲                                                │ peer's close / EOF /
//!             ▼ │ answer from peers                              │ timeouts.close_ms
//!          HttpBusy                                              │
//!             │                                                  │
//!             └─final response queued─► HttpClosing ─────────────┤
//!  any phase ─kill: socket error, deadline, slow consumer, shutdown, violation─► Dead
//!                                                                 ▼
//!                             a read step says Exit ─► `remove_conn` (the only exit)
//! ```
//!
//! Any part of the shard may decide that a connection ends, either gracefully
//! (`State::close_with`, `State::last_frame_queued`: the last frame is written, then the
//! write side is shut and input is read until the peer's EOF or `timeouts.close_ms`) or at once
//! (`State::kill`). Only a read step removes it (`State::run_step` on `Step::Exit`, after EOF,
//! an error, or finding it dead), in `remove_conn`, which
//! releases everything the connection holds whatever phase it died in: its handshake slot
//! ([`Conns::remove`]), its share of the process, per-IP and per-user connection counts, its
//! subscriptions and their interest, its presence and user-index entries, its recovering
//! subscribes and paced frames, its partial-message bytes, its pause waker, its queued frames
//! and its TLS state (`end.rs`).
//!
//! **Who touches what.** [`Conns`] keeps its fields private, and so does [`Conn`] for the ones
//! the part keeps consistent (`dirty`, `round`, the handshake slot, the drain flags): outside
//! this module a connection enters by [`Conns::insert`], leaves by [`Conns::remove`], gives up
//! its handshake slot by [`Conns::end_handshake`], and is written by marking it dirty
//! ([`Writes::mark_dirty`]). A step that needs other parts too (the index, recovery, pacing,
//! statistics) is a `State` method in the file of the part it is about.
//!
//! Files: `conns.rs` (the part: slab and bookkeeping), `poll.rs` (readiness: what wakes a
//! connection, and what its read step leads to), `read.rs` (everything that arrives),
//! `write.rs` (queues, writes, backpressure on a client's own replies), `end.rs` (closing and
//! the exit).

mod conns;
mod end;
mod poll;
mod read;
mod write;

use std::{mem, os::fd::OwnedFd};

pub use conns::{Conns, Slots, Writes};
pub use poll::{again_task, readiness_handle, readiness_task, reply_task};
pub use read::Step;

use super::{auth::AuthState, out::OutQueue};
use crate::{stats::CloseReason, ws::frame::Decoder};

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
    /// Decided to end; removed by the next read step (`State::kill` lists it to be looked at
    /// again).
    Dead,
}

/// Bytes of a message or HTTP request that arrived in part (or, while reading is paused,
/// complete messages not yet handled), kept between reads. Exists only while there are some,
/// or while a fragmented message is being reassembled by the decoder.
#[derive(Debug)]
pub struct Partial {
    pub bytes: Vec<u8>,
    /// Shard clock (ms) when the message started arriving (`timeouts.message_ms`).
    pub since_ms: u64,
    /// Bytes charged to the process-wide budget (`limits.partial_bytes_max`).
    pub charged: usize,
}

/// A connection's state. Hot fields first.
#[derive(Debug)]
pub struct Conn {
    pub out: OutQueue,
    /// Fan-out round this connection last received a frame in (dedup of overlapping patterns;
    /// see [`Conn::takes_round`]).
    round: u64,
    /// The socket (nonblocking; in the shard's readiness set while open).
    pub fd: OwnedFd,
    pub phase: Phase,
    /// Frames wait for the flusher: set by [`Writes::mark_dirty`] (which lists the connection)
    /// or when its full socket takes more, cleared when it is written (`write.rs`).
    dirty: bool,
    /// The socket buffer is full; written again when the readiness set reports it writable
    /// ([`Writes::blocked`]).
    write_blocked: bool,
    /// Unpaused: handle what was read and kept before reading on ([`Conns::unpause`]).
    resume: bool,
    /// After the out-queue empties, `shutdown(SHUT_WR)` (close frame or final HTTP response).
    pub shutdown_after_flush: bool,
    /// The `/echo` conformance route instead of the protocol.
    pub echo: bool,
    /// The protocol it speaks (v1 unless upgraded on a dialect's path).
    pub dialect: crate::dialect::Dialect,
    pub keep_alive: bool,
    /// Reset (SO_LINGER 0) instead of a graceful FIN when closing.
    pub reset_on_close: bool,
    /// Holds one of the shard's handshake slots (`limits.handshakes_per_shard_max`): from
    /// accept until the upgrade, or until the connection is removed, whatever ended it
    /// (counted by [`Conns`]).
    handshake_slot: bool,
    /// Reading is paused: replies to the client's own requests wait to be read
    /// (`limits.control_queue_bytes_max`); readiness is ignored until they drain.
    pub paused: bool,
    /// Input is read and discarded (after a protocol violation).
    pub drop_input: bool,
    pub close_reason: Option<CloseReason>,
    /// The client's address, IPv6 form (IPv4 mapped): 16 bytes where `IpAddr` takes 17 and
    /// would not fit the size bound below. See [`Conn::ip`], [`Conn::ip_bucket`].
    peer_ip: [u8; 16],
    /// What its first bytes may hold (a PROXY header to read or to refuse), until they are
    /// looked at (`super::proxy`).
    pub prelude: super::proxy::Prelude,
    /// Shard clock (s) at accept (`GET /v1/connections` `age_s`).
    pub accepted_s: u32,
    /// A message or request in flight (see [`Partial`]); `None` for an idle connection.
    pub partial: Option<Box<Partial>>,
    pub decoder: Decoder,
    /// Subscribed patterns (at most `limits.subscriptions_per_conn_max`).
    pub subs: Vec<Box<str>>,
    pub last_rx_ms: u64,
    pub last_ping_ms: u64,
    /// Handshake / HTTP keep-alive / close deadline, by phase.
    pub deadline_ms: u64,
    /// Number of this connection on its shard (the `conn` id is `<shard>-<no>`), given by
    /// [`Conns::insert`].
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

// There is one per connection (19k per process in the benchmarks), and it is most of what an
// idle connection costs: perf/README.md itemises the ~430 bytes of RSS per idle subscribed
// connection, and `tests::the_memory_table_states_the_real_sizes` keeps that table true. 264
// bytes until the socket became a bare descriptor (4 bytes, not an `Rc`), the epoch the low
// half of `no` and the decoder's reassembly buffer a box (2026-12-06).
const _: () = assert!(mem::size_of::<Conn>() <= 240);

impl Conn {
    /// A connection just accepted, in its HTTP phase; [`Conns::insert`] numbers it.
    pub fn new(fd: OwnedFd, ip: std::net::IpAddr, now_ms: u64, deadline_ms: u64) -> Conn {
        let mut conn = Conn {
            out: OutQueue::default(),
            round: 0,
            fd,
            phase: Phase::Http,
            dirty: false,
            write_blocked: false,
            resume: false,
            shutdown_after_flush: false,
            echo: false,
            dialect: crate::dialect::Dialect::V1,
            keep_alive: false,
            reset_on_close: false,
            handshake_slot: false,
            paused: false,
            drop_input: false,
            close_reason: None,
            peer_ip: [0; 16],
            prelude: super::proxy::Prelude::Done,
            accepted_s: (now_ms / 1000) as u32,
            partial: None,
            decoder: Decoder::new(),
            subs: Vec::new(),
            last_rx_ms: now_ms,
            last_ping_ms: now_ms,
            deadline_ms,
            no: 0,
            ident: None,
            rate_tat_us: 0,
            rate_strikes: 0,
            auth: AuthState::Ok,
            recovering: false,
            paced: false,
            ping_due: false,
            skipped: 0,
            tls: None,
        };
        conn.set_ip(ip);
        conn
    }

    /// Tells this connection from an earlier one with its slab key: the low half of its
    /// number ([`Conns::insert`]), unless 2^32 connections came and went in between while a
    /// reference to the first was kept.
    #[inline]
    pub fn epoch(&self) -> u32 {
        self.no as u32
    }

    /// The client's address (IPv4 as IPv4): the TCP peer's as accepted, or what a trusted
    /// proxy said (`super::proxy`).
    pub fn ip(&self) -> std::net::IpAddr {
        std::net::Ipv6Addr::from(self.peer_ip).to_canonical()
    }

    /// Sets [`Conn::ip`]. Only `State::set_client_ip` changes it after accept, moving the
    /// connection's per-IP count with it.
    pub(in crate::shard) fn set_ip(&mut self, ip: std::net::IpAddr) {
        self.peer_ip = match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
    }

    /// The peer's bucket in the per-IP counters (`Shared::per_ip`, `connect_tat`).
    pub fn ip_bucket(&self) -> u32 {
        super::accept::ip_bucket(self.ip())
    }

    /// Whether the connection takes a frame of fan-out round `round`: a WebSocket not yet
    /// given one in this round (it is now stamped with it). See [`Conns::new_round`].
    #[inline]
    pub fn takes_round(&mut self, round: u64) -> bool {
        if self.round == round || self.phase != Phase::Ws {
            return false;
        }
        self.round = round;
        true
    }

    /// Marked dirty: the flusher writes it this round.
    #[inline]
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn in_http(&self) -> bool {
        matches!(
            self.phase,
            Phase::Http | Phase::HttpBusy | Phase::HttpClosing
        )
    }

    /// The bytes kept from earlier reads (empty if none), taken out to be extended or parsed;
    /// give the rest back with [`Conn::keep_bytes`].
    pub(crate) fn take_bytes(&mut self) -> Vec<u8> {
        self.partial
            .as_mut()
            .map(|p| mem::take(&mut p.bytes))
            .unwrap_or_default()
    }

    /// Keeps `bytes` for the next read (the budget and deadline are settled by
    /// `State::settle_partial`).
    pub(crate) fn keep_bytes(&mut self, bytes: Vec<u8>) {
        match self.partial.as_mut() {
            Some(p) => p.bytes = bytes,
            None if bytes.is_empty() => {}
            None => {
                self.partial = Some(Box::new(Partial {
                    bytes,
                    since_ms: u64::MAX,
                    charged: 0,
                }))
            }
        }
    }

    /// Whether bytes from earlier reads are waiting.
    pub(crate) fn has_bytes(&self) -> bool {
        self.partial.as_ref().is_some_and(|p| !p.bytes.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// perf/README.md itemises where an idle connection's bytes go; the sizes it gives for
    /// this program's own structures are the real ones.
    #[test]
    fn the_memory_table_states_the_real_sizes() {
        let doc = include_str!("../../../perf/README.md");
        let begin = doc
            .find("<!-- memory table: begin -->")
            .expect("table begin marker");
        let end = doc
            .find("<!-- memory table: end -->")
            .expect("table end marker");
        let rows: Vec<(&str, &str)> = doc[begin..end]
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 3).then(|| (cells[1], cells[2]))
            })
            .collect();
        let bytes = |part: &str| -> usize {
            let (_, n) = rows
                .iter()
                .find(|(p, _)| p.starts_with(part))
                .unwrap_or_else(|| panic!("no row for {part} in {rows:?}"));
            n.parse()
                .unwrap_or_else(|_| panic!("{part}: {n:?} is not a number"))
        };
        assert_eq!(bytes("`Conn`"), size_of::<super::Conn>());
        assert_eq!(bytes("its subscription list"), size_of::<Box<str>>());
        assert_eq!(bytes("its decoder"), size_of::<super::Decoder>());
        assert_eq!(bytes("its out-queue"), size_of::<super::OutQueue>());
    }
}
