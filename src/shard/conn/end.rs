//! How a connection ends, and the one exit that releases what it holds (see the lifecycle in
//! `mod.rs`). Also the partial-message bookkeeping: the process-wide budget and the per-message
//! deadline, because a connection's kept bytes are part of what it holds.

use std::{
    rc::Rc,
    sync::{Arc, atomic::Ordering},
};

use rustix::net::Shutdown;

use super::{super::State, Phase};
use crate::{
    frame::{Frame, OutFrame},
    stats::CloseReason,
    ws::{
        close as cc,
        frame::{Violation, encode_close},
    },
};

impl State {
    /// Queues `close_frame` (already encoded) and moves to `Closing`: after it is written the
    /// socket's write side is shut; reading continues until the peer's close, EOF or
    /// `timeouts.close_ms`.
    pub(crate) fn close_with(&mut self, key: u32, close_frame: Vec<u8>, reason: CloseReason) {
        let frame: OutFrame = Rc::new(Arc::new(Frame::control(close_frame)));
        let Some(conn) = self.conns.get_mut(key) else {
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
        let deadline = self.now_ms + self.cfg.timeouts.close_ms;
        self.release_partial(key);
        let conn = &mut self.conns[key];
        conn.close_reason.get_or_insert(reason);
        conn.phase = phase;
        conn.shutdown_after_flush = true;
        conn.deadline_ms = deadline;
        self.conns.mark_dirty(key);
        // Its replies no longer matter: the reader goes on to read until EOF.
        self.conns.unpause(key);
    }

    /// Closes with a WebSocket close frame `code` and a constant reason.
    /// On a Centrifugo connection the code is Centrifugo's for the same condition
    /// (`crate::dialect::centrifugo::close_for`), always with a reason (the SDKs decide to
    /// reconnect by both).
    pub(crate) fn close_code(&mut self, key: u32, code: u16, text: &str, reason: CloseReason) {
        let (code, text) = match self.conns.get(key) {
            Some(c) if c.dialect.is_centrifugo() => {
                crate::dialect::centrifugo::close_for(code, text)
            }
            _ => (code, text),
        };
        let mut frame = Vec::with_capacity(4 + text.len());
        encode_close(&mut frame, code, text);
        self.close_with(key, frame, reason);
    }

    pub(crate) fn violation(&mut self, key: u32, v: Violation) {
        let reason = match v {
            Violation::Protocol(_) => CloseReason::ProtocolError,
            Violation::InvalidUtf8 => CloseReason::InvalidUtf8,
            Violation::TooLarge => CloseReason::TooLarge,
        };
        self.close_code(key, v.close_code(), v.reason(), reason);
    }

    /// The connection's queue passed its bound: drop what is queued, try the 4008 close frame
    /// once without waiting (only at a frame boundary, or it would corrupt the stream), and
    /// release the connection: gracefully if the close frame went out, with a reset otherwise
    /// so a stalled peer cannot pin kernel memory either.
    pub(crate) fn slow_consumer(&mut self, key: u32) {
        let conn = &mut self.conns[key];
        conn.close_reason.get_or_insert(CloseReason::SlowConsumer);
        let mut sent = false;
        if conn.out.at_frame_boundary() {
            let (code, text) = if conn.dialect.is_centrifugo() {
                crate::dialect::centrifugo::close_for(cc::SLOW_CONSUMER, "slow consumer")
            } else {
                (cc::SLOW_CONSUMER, "slow consumer")
            };
            let mut frame = Vec::with_capacity(24);
            encode_close(&mut frame, code, text);
            sent = conn.send_final(&frame, &mut self.stats, &mut self.tls_buf);
        }
        conn.reset_on_close = !sent;
        self.kill(key, CloseReason::SlowConsumer);
    }

    /// Ends a connection now: nothing more is written; it is listed to be looked at again,
    /// which removes it (`poll.rs`), and its socket is shut down (the peer learns at once).
    pub(crate) fn kill(&mut self, key: u32, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        conn.close_reason.get_or_insert(reason);
        conn.phase = Phase::Dead;
        conn.out.clear();
        if conn.reset_on_close {
            let _ =
                rustix::net::sockopt::set_socket_linger(&conn.fd, Some(std::time::Duration::ZERO));
        }
        let _ = rustix::net::shutdown(&conn.fd, Shutdown::Both);
        self.release_partial(key);
        self.conns.again(key);
    }

    /// The one exit: a read step of `key` said `Exit` (`poll.rs`). Releases everything the
    /// connection holds, whatever phase it ended in, counts it closed, and drops it (which
    /// closes the socket and so takes it out of the readiness set).
    pub(crate) fn remove_conn(&mut self, key: u32) {
        self.release_partial(key);
        // Its handshake slot goes with it (`Conns::remove`).
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        // Frames still queued (the close frame echoed just before the peer's final close, a
        // last HTTP response) get one nonblocking write before the socket closes: the flusher
        // would only run after this connection is gone.
        if !conn.out.is_empty() && !conn.write_blocked {
            let now_ns = crate::frame::monotonic_ns();
            let _ = conn.flush_out(true, now_ns, &mut self.stats, &mut self.tls_buf);
        }
        if conn.tls.as_ref().is_some_and(|t| !t.established) {
            self.stats.c.tls_handshake_failures += 1;
        }
        // Out of the index first: its presence `leave` events (`conn_gone`) are published, and
        // may be delivered at once on this shard, to the subscribers of `presence.<topic>`,
        // which may include this very connection (gone from the slab already).
        for pattern in &conn.subs {
            self.unsubscribe_pattern(pattern, key);
        }
        // Admin: per-user index and presence `leave` events (`super::admin`).
        self.conn_gone(key, &conn);
        if let Some(ident) = &conn.ident {
            self.release_user(ident);
        }
        if conn.recovering {
            self.forget_recovering(key);
        }
        self.forget_paced(key);
        self.stats
            .closed(conn.close_reason.unwrap_or(CloseReason::ClientGone));
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        self.shared.per_ip[conn.ip_bucket() as usize].fetch_sub(1, Ordering::Relaxed);
        if conn.reset_on_close {
            let _ =
                rustix::net::sockopt::set_socket_linger(&conn.fd, Some(std::time::Duration::ZERO));
        }
    }

    /// After input was handled: the bytes `key` keeps (and the decoder's reassembly buffer)
    /// are charged to the process budget (`limits.partial_bytes_max`), and timed from when
    /// their message started (`restarted`: a message completed and what is kept began in
    /// this read). Over the budget the connection is closed (1013; HTTP: 503) and its bytes
    /// dropped: returns false. The `/echo` conformance route is exempt.
    pub(crate) fn settle_partial(&mut self, key: u32, restarted: bool) -> bool {
        let now = self.now_ms;
        let budget = self.cfg.limits.partial_bytes_max;
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        let held =
            conn.partial.as_ref().map_or(0, |p| p.bytes.capacity()) + conn.decoder.buffered_bytes();
        if held == 0 && !conn.decoder.in_fragmented_message() {
            self.release_partial(key);
            return true;
        }
        if conn.phase == Phase::Dead {
            return true;
        }
        let echo = conn.echo;
        let p = conn.partial.get_or_insert_with(|| {
            Box::new(super::Partial {
                bytes: Vec::new(),
                since_ms: now,
                charged: 0,
            })
        });
        if restarted || p.since_ms == u64::MAX {
            p.since_ms = now;
        }
        if echo {
            return true;
        }
        let total = &self.shared.partial_bytes;
        if held < p.charged {
            total.fetch_sub(p.charged - held, Ordering::Relaxed);
            p.charged = held;
        } else if held > p.charged {
            let more = held - p.charged;
            if total.fetch_add(more, Ordering::Relaxed) + more > budget {
                total.fetch_sub(more, Ordering::Relaxed);
                self.stats.c.partial_budget_closes += 1;
                self.over_partial_budget(key);
                return false;
            }
            p.charged = held;
        }
        true
    }

    /// `limits.partial_bytes_max` would be passed by `key`: it is closed, its bytes dropped.
    fn over_partial_budget(&mut self, key: u32) {
        if self.conns[key].in_http() {
            let msg = "server busy: request buffers full, retry later";
            self.respond_error(key, 503, "overloaded", msg, false);
        } else {
            self.close_code(
                key,
                cc::OVERLOADED,
                "server busy: message buffers full",
                CloseReason::Overloaded,
            );
        }
        self.release_partial(key);
        let conn = &mut self.conns[key];
        conn.drop_input = true;
        conn.decoder = crate::ws::frame::Decoder::new();
    }

    /// Drops the bytes `key` keeps and gives their charge back.
    fn release_partial(&mut self, key: u32) {
        let Some(p) = self.conns.get_mut(key).and_then(|c| c.partial.take()) else {
            return;
        };
        if p.charged > 0 {
            self.shared
                .partial_bytes
                .fetch_sub(p.charged, Ordering::Relaxed);
        }
    }
}
