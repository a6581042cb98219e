//! Rounds of an I/O thread: starting one, publishing paced messages (publisher threads,
//! round-robin over connections and topics), and ending it (quiet after the window, or its
//! deadline) with a report of the round's stats.

use super::{Conn, IoThread, Report, State, mono_ns};
use crate::{
    plan::{PublishPlan, RoundPlan},
    stats::RoundStats,
    wire::{self, Opcode},
};

/// A publisher whose unsent bytes exceed this skips messages instead of queueing without bound.
const PUBLISH_BACKLOG_BYTES_MAX: usize = 4 << 20;

impl IoThread {
    pub(super) fn start_round(&mut self, r: RoundPlan) {
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

    pub(super) fn maybe_finish_round(&mut self, now: u64) {
        let Some(r) = &self.round else { return };
        if now < r.window_end_ns {
            return;
        }
        let quiet = now.saturating_sub(self.last_window_rx_ns.max(r.window_end_ns)) >= r.quiet_ns;
        let publishers_drained = r.publish.is_none()
            || self
                .dirty
                .iter()
                .all(|&k| self.conns.get(k).is_none_or(|c| !c.has_output()));
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

    pub(super) fn next_due_ns(&self, p: &PublishPlan) -> u64 {
        p.start_ns + (self.published_in_round as f64 * 1e9 / p.rate) as u64
    }

    /// Publishes every message due by `now` (round-robin over publishers and topics), then
    /// writes each touched publisher once.
    pub(super) fn publish_due(&mut self, now: u64) {
        let Some(r) = &self.round else { return };
        let Some(p) = r.publish.clone() else { return };
        let (ws, we) = (r.window_start_ns, r.window_end_ns);
        if now < p.start_ns {
            return;
        }
        // Reused between calls: this runs on every loop turn of a publishing thread.
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.state == State::Ready)
                .map(|(k, _)| k),
        );
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
            let market = &mut self.market;
            let pad = &self.pad;
            wire::put_masked_frame(&mut conn.out, Opcode::Text, mask, |o| {
                // {"op":"publish","topic":"bench.tN","data":{"t":<ns>,"pad":"xx…"}}, or with
                // --data market {…,"data":{"t":<ns>,"s":"BTCUSDT","p":…}} (market.rs).
                o.extend_from_slice(b"{\"op\":\"publish\",\"topic\":\"bench.t");
                o.extend_from_slice(itoa::Buffer::new().format(topic).as_bytes());
                o.extend_from_slice(b"\",\"data\":");
                if p.market {
                    market.write(o, topic, t, p.payload_bytes);
                } else {
                    o.extend_from_slice(b"{\"t\":");
                    o.extend_from_slice(itoa::Buffer::new().format(t).as_bytes());
                    o.extend_from_slice(b",\"pad\":\"");
                    o.extend_from_slice(pad);
                    o.extend_from_slice(b"\"}");
                }
                o.push(b'}');
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
        self.ready = ready;
    }
}
