//! The shard's one coarse timer (`timeouts.tick_ms`), instead of a timer per socket: it
//! advances the shard clock, retries spilled mesh messages, and once a second walks the
//! connections for deadlines (handshake, idle, close) and pings, and flushes statistics.
//! Walking 20k connections costs well under a millisecond a second.

use std::{rc::Rc, time::Duration};

use super::{Shard, State, conn::Phase};
use crate::{dialect::Dialect, limits::CONN_SCAN_EVERY_MS, stats::CloseReason, ws::close as cc};

pub async fn timer_task(shard: Rc<Shard>) {
    let tick = Duration::from_millis(shard.shared.boot.timeouts.tick_ms);
    loop {
        monoio::time::sleep(tick).await;
        let mut st = shard.st.borrow_mut();
        let finished = st.on_tick();
        shard.finish(st);
        if finished {
            shard.set_done();
            return;
        }
    }
}

impl State {
    /// Returns true once shutdown is complete.
    fn on_tick(&mut self) -> bool {
        self.shared.hub.tick(self.shard);
        let now = self.clock();
        if self.mesh.has_spill() {
            self.mesh.flush();
        }
        if self.stopping {
            // Closing connections hand in their close frames; stop when all are gone or the
            // grace period ends.
            self.scan(now);
            return self.conns.is_empty() || now >= self.stop_deadline_ms;
        }
        self.drain_step(now);
        self.sweep_topics();
        self.live_tick(now);
        if now >= self.last_scan_ms + CONN_SCAN_EVERY_MS {
            self.last_scan_ms = now;
            self.scan(now);
            self.scan_auth(now);
            self.flush_stats();
        }
        false
    }

    fn scan(&mut self, now: u64) {
        let cfg = &self.cfg;
        let t = &cfg.timeouts;
        // (ping interval, idle bound) in ms, by dialect: each protocol's keep-alive.
        let (b, c) = (&cfg.binance, &cfg.centrifugo);
        let keepalive = |d: Dialect| match d {
            Dialect::V1 => (t.ping_interval_s * 1000, t.idle_s * 1000),
            Dialect::Binance => (b.ping_interval_s * 1000, b.pong_timeout_s * 1000),
            // Centrifugo: the client answers every ping; see `pong_missed` below.
            Dialect::CentrifugoNew | Dialect::Centrifugo => {
                (c.ping_interval_s * 1000, c.ping_interval_s * 1000)
            }
        };
        let pong_ms = c.pong_timeout_s * 1000;
        let age_max_s = b.connection_age_max_s;
        let now_s = now / 1000;
        let mut expired: Vec<(u32, CloseReason)> = Vec::new();
        let mut idle: Vec<u32> = Vec::new();
        let mut aged: Vec<u32> = Vec::new();
        let mut ping: Vec<u32> = Vec::new();
        let mut due: Vec<u32> = Vec::new();
        let mut stalled: Vec<u32> = Vec::new();
        let message_ms = t.message_ms;
        for (key, conn) in self.conns.iter() {
            match conn.phase {
                // A request waiting for other shards (HttpBusy) is bounded by its reply task's
                // own timeout, which answers 503 instead of dropping the connection.
                Phase::Http if now >= conn.deadline_ms => {
                    expired.push((key, CloseReason::HandshakeTimeout))
                }
                Phase::HttpClosing | Phase::Closing if now >= conn.deadline_ms => {
                    expired.push((key, conn.close_reason.unwrap_or(CloseReason::ClientGone)))
                }
                Phase::Ws
                    if !conn.echo
                        && !conn.paused
                        && conn
                            .partial
                            .as_ref()
                            .is_some_and(|p| now >= p.since_ms.saturating_add(message_ms)) =>
                {
                    stalled.push(key)
                }
                Phase::Ws
                    if conn.dialect == Dialect::Binance
                        && age_max_s > 0
                        && now_s >= conn.accepted_s as u64 + age_max_s =>
                {
                    aged.push(key)
                }
                Phase::Ws => {
                    let (ping_ms, idle_ms) = keepalive(conn.dialect);
                    let wait_ms = ping_wait_ms(ping_ms);
                    // A connection is closed for idleness only after it was pinged at least
                    // once since it last sent anything: a client that answers pings is never
                    // dropped, even when a late scan lands past the idle deadline first.
                    let silent = now >= conn.last_rx_ms + idle_ms;
                    let pinged_since_rx = conn.last_ping_ms > conn.last_rx_ms;
                    // A Centrifugo client has `pong_timeout_s` from the ping itself, however
                    // late the ping went out (it may wait for a data write to ride with).
                    let pong_missed = conn.dialect.is_centrifugo()
                        && pinged_since_rx
                        && now >= conn.last_ping_ms + pong_ms;
                    if pong_missed || (silent && pinged_since_rx && !conn.dialect.is_centrifugo()) {
                        idle.push(key);
                    } else if silent || now >= conn.last_ping_ms + ping_ms + wait_ms {
                        ping.push(key);
                    } else if now >= conn.last_ping_ms + ping_ms && !conn.ping_due {
                        due.push(key);
                    }
                }
                _ => {}
            }
        }
        for key in aged {
            let text = "connection age limit reached";
            self.close_code(key, cc::NORMAL, text, CloseReason::MaxAge);
        }
        for (key, reason) in expired {
            self.handshake_expired(key);
            self.kill(key, reason);
        }
        for key in stalled {
            // A message started and never finished: its bytes are not kept any longer.
            self.close_code(
                key,
                cc::POLICY,
                "message not completed in time",
                CloseReason::MessageTimeout,
            );
        }
        for key in idle {
            let (code, text) = if self.conns[key].dialect.is_centrifugo() {
                (crate::dialect::centrifugo::DISCONNECT_NO_PONG, "no pong")
            } else {
                (cc::GOING_AWAY, "idle timeout")
            };
            self.close_code(key, code, text, CloseReason::IdleTimeout);
        }
        // A due ping waits up to `wait_ms` for a data write to ride with (`flush_conn`);
        // connections that get none are pinged on their own.
        for key in due {
            self.conns[key].ping_due = true;
        }
        for key in ping {
            let conn = &mut self.conns[key];
            conn.last_ping_ms = now;
            conn.ping_due = false;
            let frame = if conn.dialect.is_centrifugo() {
                self.centrifugo_ping.clone()
            } else {
                self.ping_frame.clone()
            };
            self.enqueue(key, frame);
        }
    }

    /// SIGTERM/SIGINT: stop accepting, send 1001 to every WebSocket, end HTTP exchanges.
    /// SIGUSR2: stop accepting now; `on_tick` closes the WebSocket clients with 1012 a share at
    /// a time over `timeouts.drain_s`, then shuts down.
    pub(crate) fn begin_drain(&mut self) {
        if self.stopping || self.drain.is_some() {
            return;
        }
        let now = self.clock();
        self.stop_accepting();
        let keys: Vec<(u32, Phase)> = self.conns.iter().map(|(k, c)| (k, c.phase)).collect();
        let mut ws = 0;
        for (key, phase) in keys {
            match phase {
                Phase::Ws => ws += 1,
                // Plain HTTP clients retry on a new connection (to the new process).
                Phase::Http | Phase::HttpBusy => self.kill(key, CloseReason::Shutdown),
                Phase::Closing | Phase::HttpClosing | Phase::Dead => {}
            }
        }
        let end = now + self.cfg.timeouts.drain_s * 1000;
        self.drain = Some((now, end, ws));
    }

    /// Draining: closes WebSocket clients so that at most the share the drain's remaining time
    /// allows stays open; at its end, shuts down (1012 for whoever is left).
    fn drain_step(&mut self, now: u64) {
        let Some((start, end, total)) = self.drain else {
            return;
        };
        if now >= end {
            self.begin_shutdown(cc::SERVICE_RESTART, "service restart");
            return;
        }
        let left = (end - now) as u128 * total as u128 / (end - start).max(1) as u128;
        let open: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Ws)
            .map(|(k, _)| k)
            .collect();
        let excess = open.len().saturating_sub(left as usize);
        for key in open.into_iter().take(excess) {
            self.close_code(
                key,
                cc::SERVICE_RESTART,
                "service restart",
                CloseReason::Shutdown,
            );
        }
    }

    pub(crate) fn begin_shutdown(&mut self, code: u16, reason: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let now = self.clock();
        self.stop_deadline_ms = now + self.cfg.timeouts.shutdown_grace_s * 1000;
        self.stop_accepting();
        let keys: Vec<(u32, Phase)> = self.conns.iter().map(|(k, c)| (k, c.phase)).collect();
        for (key, phase) in keys {
            match phase {
                Phase::Ws => {
                    self.close_code(key, code, reason, CloseReason::Shutdown);
                    // Wait for the client's close no longer than the grace period.
                    let conn = &mut self.conns[key];
                    conn.deadline_ms = conn.deadline_ms.min(self.stop_deadline_ms);
                }
                Phase::Closing | Phase::HttpClosing | Phase::Dead => {}
                Phase::Http | Phase::HttpBusy => self.kill(key, CloseReason::Shutdown),
            }
        }
    }
}

/// How long a due ping waits for a data write to ride with: a quarter of the ping interval,
/// at most 5 s. Measured with 100k subscribers on 6 nodes (perf/README.md), pings each in a
/// write of their own were about one write in ten and raised p99 from ~0.3 s (no pings) to
/// 1.1-1.7 s on a saturated machine; a subscriber that gets data at all gets its ping for free.
pub(crate) fn ping_wait_ms(ping_ms: u64) -> u64 {
    (ping_ms / 4).min(5000)
}
