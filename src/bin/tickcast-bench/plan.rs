//! The plans the coordinator hands down to I/O threads: which servers and topics a thread's
//! connections use ([`ThreadPlan`], [`Topics`], [`Target`]), and what a round measures and
//! publishes ([`RoundPlan`], [`PublishPlan`]). They cross into worker processes as JSON lines
//! (group.rs), hence serde.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host:` header value.
    pub host: String,
    pub path: String,
    /// `wss://`: the connection speaks TLS (trusting `--tls-ca`).
    #[serde(default)]
    pub tls: bool,
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

/// The wire protocol of a subscriber (`--dialect`; publishers always speak protocol v1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    /// Protocol v1 on the URL's path.
    #[default]
    V1,
    /// Centrifugo's client protocol on `/connection/websocket`.
    Centrifugo,
    /// Binance combined market streams on `/binance/stream`.
    Binance,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::V1, Dialect::Centrifugo, Dialect::Binance];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            Dialect::Centrifugo => "centrifugo",
            Dialect::Binance => "binance",
        }
    }
}

/// What the subscribers of a run speak: all one dialect, or `Mixed` (subscriber `i` speaks
/// `Dialect::ALL[i % 3]`: a third each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialects {
    #[default]
    V1,
    Centrifugo,
    Binance,
    Mixed,
}

impl Dialects {
    pub fn parse(s: &str) -> Option<Dialects> {
        Some(match s {
            "v1" => Dialects::V1,
            "centrifugo" => Dialects::Centrifugo,
            "binance" => Dialects::Binance,
            "mixed" => Dialects::Mixed,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialects::V1 => "v1",
            Dialects::Centrifugo => "centrifugo",
            Dialects::Binance => "binance",
            Dialects::Mixed => "mixed",
        }
    }

    /// The dialect of connection `i`.
    pub fn of(self, i: u64) -> Dialect {
        match self {
            Dialects::V1 => Dialect::V1,
            Dialects::Centrifugo => Dialect::Centrifugo,
            Dialects::Binance => Dialect::Binance,
            Dialects::Mixed => Dialect::ALL[(i % 3) as usize],
        }
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
    /// Offer permessage-deflate in every handshake, require it agreed, inflate RSV1 frames.
    #[serde(default)]
    pub deflate: bool,
    /// What the subscribers speak (publishers: protocol v1 whatever this says).
    #[serde(default)]
    pub dialects: Dialects,
    /// Distinct subscription filters over the v1 subscribers (`--filters`; 0: none).
    #[serde(default)]
    pub filters: u32,
    /// Consecutive subscribers per filter (`--filters-in-blocks`); 0: subscriber i takes
    /// filter i mod `filters`.
    #[serde(default)]
    pub filter_block: u64,
    /// `--tls-ca`: PEM file of the certificates `wss://` targets are checked against.
    #[serde(default)]
    pub tls_ca: Option<String>,
}

/// The filter of subscriber `index` of `n` distinct ones (`--filters`), in blocks of `block`
/// consecutive subscribers (0: interleaved, i mod n): two tests that every bench message
/// passes (`t`, the send time, is positive), distinct by the bound.
pub fn bench_filter(index: u64, n: u32, block: u64) -> serde_json::Value {
    let n = u64::from(n.max(1));
    let k = index.checked_div(block).unwrap_or(index) % n;
    serde_json::json!({"t": {"exists": true, "gt": -(k as i64) - 1}})
}

/// Publishing part of a round (publisher threads only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishPlan {
    pub start_ns: u64,
    /// Messages per second over all of this thread's publisher connections.
    pub rate: f64,
    pub topics_k: u32,
    pub payload_bytes: usize,
    /// `--data market`: demo-feed-like trading JSON instead of `"pad":"xxx…"`.
    #[serde(default)]
    pub market: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_topics_are_distinct_and_deterministic() {
        let a = Topics::bench_indices(200, 5, 7, 42);
        assert_eq!(a.len(), 5);
        assert_eq!(a, Topics::bench_indices(200, 5, 7, 42));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 5);
        assert_eq!(Topics::bench_indices(10, 1, 0, 13), vec![3]);
        assert_eq!(Topics::bench_indices(3, 9, 0, 1).len(), 3);
    }

    #[test]
    fn bench_filters_interleave_or_come_in_blocks() {
        let k = |i, block| bench_filter(i, 10, block)["t"]["gt"].as_i64().unwrap();
        assert_eq!((k(0, 0), k(1, 0), k(10, 0)), (-1, -2, -1));
        assert_eq!((k(0, 1000), k(999, 1000), k(1000, 1000)), (-1, -1, -2));
        assert_eq!(bench_filter(3, 10, 0)["t"]["exists"], true);
    }

    #[test]
    fn mixed_dialects_take_a_third_each() {
        let d = Dialects::parse("mixed").unwrap();
        let n = |x: Dialect| (0..999).filter(|&i| d.of(i) == x).count();
        assert_eq!(
            (n(Dialect::V1), n(Dialect::Centrifugo), n(Dialect::Binance)),
            (333, 333, 333)
        );
        assert_eq!(Dialects::parse("binance").unwrap().of(5), Dialect::Binance);
        assert!(Dialects::parse("v2").is_none());
    }
}
