//! The connect phase of an I/O thread: opening connections (bounded in-flight handshakes,
//! optional rate, source addresses, a tiny receive buffer for stalled subscribers), expiring
//! handshakes, the subscribe frame, and the connect stats, reported once every connection
//! has settled.

use std::{io, net::SocketAddr};

use mio::{Interest, Token, net::TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use super::{Conn, IoThread, Report, State, io_kind};
use crate::{
    plan::{Dialect, Topics},
    wire::{self, Opcode},
};

/// `SO_RCVBUF` asked for a stalled subscriber (the kernel doubles it and applies its minimum).
const STALLED_RCVBUF_BYTES: usize = 4096;

impl IoThread {
    pub(super) fn open_more(&mut self, now: u64) {
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
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let dialect = match self.plan.topics {
            Topics::Publisher => Dialect::V1,
            _ => self.plan.dialects.of(index),
        };
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
            // Binance sends no welcome; Centrifugo's connect reply counts as one.
            welcomed: dialect == Dialect::Binance,
            carry: Vec::new(),
            out: Vec::new(),
            last_seq: Vec::new(),
            stalled,
            inflate: None,
            dialect,
            pending: 0,
            tls: None,
        });
        Ok(())
    }

    pub(super) fn expire_handshakes(&mut self, now: u64) {
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

    pub(super) fn maybe_report_connected(&mut self) {
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

    /// The subscribe request of connection `index` (slab `key`), in its dialect; `None` for
    /// publishers.
    pub(super) fn subscribe_frame(
        &mut self,
        index: u64,
        dialect: Dialect,
        key: usize,
    ) -> Option<Vec<u8>> {
        let topics: Vec<String> = match &self.plan.topics {
            Topics::Publisher => return None,
            Topics::Fixed(t) => vec![t.clone()],
            Topics::Bench { k, per_sub, seed } => Topics::bench_indices(*k, *per_sub, *seed, index)
                .into_iter()
                .map(|i| format!("bench.t{i}"))
                .collect(),
        };
        let json = match dialect {
            Dialect::V1 => {
                let mut op = serde_json::json!({"op": "subscribe", "id": 1, "topics": topics});
                if self.plan.filters > 0 {
                    op["filter"] =
                        crate::plan::bench_filter(index, self.plan.filters, self.plan.filter_block);
                }
                op.to_string().into_bytes()
            }
            Dialect::Centrifugo => {
                // The connect reply and one reply per subscribe.
                self.conns[key].pending = topics.len() as u32 + 1;
                wire::centrifugo_subscribe(&topics)
            }
            Dialect::Binance => {
                let streams: Vec<String> = topics
                    .iter()
                    .map(|t| wire::binance_stream(t).unwrap_or_else(|| t.clone()))
                    .collect();
                wire::binance_subscribe(&streams)
            }
        };
        let mut out = Vec::with_capacity(json.len() + 14);
        wire::put_masked_frame(
            &mut out,
            Opcode::Text,
            self.rng.u32(..).to_ne_bytes(),
            |o| o.extend_from_slice(&json),
        );
        Some(out)
    }
}
