//! What a connection is sent: frames queued (replies, server-initiated frames, data), written
//! once per scheduler round by the flusher, or, once its socket was found full, when the
//! readiness set reports it writable (`poll.rs`).
//!
//! **Replies apply backpressure, never a close.** A reply to the client's own message (ack,
//! error, pong, echo) is queued whatever the control lane holds, and while the lane holds
//! `limits.control_queue_bytes_max` or more the connection is not read: readiness is ignored
//! until half of it is written (`should_pause`, `maybe_resume`). A client that sends faster
//! than it reads its answers is slowed down by TCP flow control, not disconnected, and what
//! one message can add to the lane is bounded by the message size limits. Server-initiated
//! control frames (pings, broadcasts) close a connection as a slow consumer only at four times
//! the bound; data frames follow their lane's bound and policy.

use rustix::net::Shutdown;

use super::{super::State, super::out::Flush, Phase};
use crate::{
    frame::{LANE_CONTROL, OutFrame},
    stats::CloseReason,
    ws::frame::HEADER_BYTES_MAX,
};

impl State {
    /// Queues a server-initiated frame (ping, broadcast, replayed or held data) or an HTTP
    /// response for `key`, in any phase that still writes. Over its bound the connection is a
    /// slow consumer.
    pub fn enqueue(&mut self, key: u32, frame: OutFrame) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.phase, Phase::Closing | Phase::Dead) {
            return;
        }
        if conn.echo || conn.in_http() {
            return self.push_whole_queue(key, frame);
        }
        // Control frames in the control lane, replayed and held frames in their topic's lane.
        self.offer_now(key, frame, true);
    }

    /// Queues a reply to the client's own message. A WebSocket's replies are never refused:
    /// the connection's reading pauses instead (see the module doc).
    pub(crate) fn push_reply(&mut self, key: u32, frame: OutFrame) {
        let Some((conn, writes)) = self.conns.get_mut_and_writes(key) else {
            return;
        };
        if matches!(conn.phase, Phase::Closing | Phase::Dead) {
            return;
        }
        if conn.echo || conn.in_http() {
            return self.push_whole_queue(key, frame);
        }
        conn.out.push(frame);
        writes.mark_dirty(key, conn);
    }

    /// HTTP responses and the echo route: one bound on the whole queue (the echo route must
    /// hold one echoed message of its larger size); reading pauses well before it.
    fn push_whole_queue(&mut self, key: u32, frame: OutFrame) {
        let limits = &self.cfg.limits;
        let (conn, writes) = self
            .conns
            .get_mut_and_writes(key)
            .expect("a live connection");
        let max = if conn.echo {
            limits
                .write_queue_bytes_max
                .max(limits.echo_message_bytes_max + HEADER_BYTES_MAX)
        } else {
            limits.write_queue_bytes_max
        };
        if conn.out.bytes() + conn.out.len_of(&frame) as usize > max {
            self.slow_consumer(key);
            return;
        }
        conn.out.push(frame);
        writes.mark_dirty(key, conn);
    }

    /// Bytes of replies (control lane; for HTTP and the echo route, the whole queue) waiting
    /// to be written to `key`.
    fn reply_backlog(&self, key: u32) -> usize {
        let conn = &self.conns[key];
        if conn.echo || conn.in_http() {
            conn.out.bytes()
        } else {
            conn.out.lane_bytes(LANE_CONTROL)
        }
    }

    /// Whether reading `key` must pause for its replies to drain; if so, it is now paused
    /// (counted in `tickcast_reply_pauses_total`).
    pub(crate) fn should_pause(&mut self, key: u32) -> bool {
        if self.reply_backlog(key) < self.cfg.limits.control_queue_bytes_max {
            return false;
        }
        let conn = &mut self.conns[key];
        if !conn.paused {
            conn.paused = true;
            self.stats.c.reply_pauses += 1;
        }
        true
    }

    /// After a write: a paused connection whose replies are down to half the bound reads
    /// again.
    fn maybe_resume(&mut self, key: u32) {
        let half = self.cfg.limits.control_queue_bytes_max / 2;
        if self.conns[key].paused && self.reply_backlog(key) <= half {
            self.conns.unpause(key);
        }
    }

    /// Writes what `key` has queued, as one vectored write per `IOVECS_PER_WRITE` frames.
    pub(crate) fn flush_conn(&mut self, key: u32, now_ns: u64) {
        let Some((conn, writes)) = self.conns.get_mut_and_writes(key) else {
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
            let ping = if conn.dialect.is_centrifugo() {
                &self.centrifugo_ping
            } else {
                &self.ping_frame
            };
            let _ = conn.out.offer(ping.clone(), &self.bounds);
        }
        if conn.write_blocked || conn.phase == Phase::Dead {
            return;
        }
        let closing = conn.shutdown_after_flush;
        match conn.flush_out(closing, now_ns, &mut self.stats, &mut self.tls_buf) {
            Flush::Done => {
                if conn.shutdown_after_flush {
                    conn.shutdown_after_flush = false;
                    let _ = rustix::net::shutdown(&conn.fd, Shutdown::Write);
                }
            }
            Flush::Blocked => writes.blocked(conn),
            Flush::Failed(_) => return self.kill(key, CloseReason::IoError),
        }
        self.maybe_resume(key);
    }

    /// `key`'s socket, found full by an earlier write, reports room (or an error, which the
    /// write finds): its queue is written again.
    pub(super) fn on_writable(&mut self, key: u32) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.phase == Phase::Dead {
            return;
        }
        conn.write_blocked = false;
        conn.dirty = true;
        let now_ns = crate::frame::monotonic_ns();
        self.flush_conn(key, now_ns);
    }
}
