//! Counters and histograms an I/O thread reports, mergeable across threads and worker processes.
//!
//! Histograms travel between processes as hdrhistogram's V2 serialization, hex-encoded inside the
//! JSON line a worker prints on its stdout.

use std::collections::BTreeMap;

use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer, V2Serializer},
};
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records (ns); larger values are clamped to it.
pub const LATENCY_NS_MAX: u64 = 120_000_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// `#[serde(with = "hist_hex")]`: a histogram as hex of its V2 serialization.
pub mod hist_hex {
    use super::*;
    use serde::{de::Error as _, ser::Error as _};

    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| S::Error::custom(format!("{e:?}")))?;
        s.serialize_str(&to_hex(&buf))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = <String as Deserialize>::deserialize(d)?;
        let bytes = from_hex(&text).ok_or_else(|| D::Error::custom("bad hex"))?;
        Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| D::Error::custom(format!("{e:?}")))
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(D[usize::from(b >> 4)] as char);
        s.push(D[usize::from(b & 15)] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

fn add_vec(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// The outcome of opening a set of connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectStats {
    pub attempted: u64,
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
    /// connect + handshake + subscribe ack (publishers: + handshake), ns.
    #[serde(with = "hist_hex")]
    pub latency: Histogram<u64>,
    /// CLOCK_MONOTONIC ns of the first connect attempt (u64::MAX if none).
    pub first_start_ns: u64,
    /// CLOCK_MONOTONIC ns of the last successful ack.
    pub last_done_ns: u64,
    /// Connections per `"shard"` of the welcome frame.
    pub shards: BTreeMap<String, u64>,
    pub welcome_missing: u64,
    /// Subscribed healthy connections per bench topic index (`bench.t<i>`).
    pub subs_per_topic: Vec<u64>,
    /// Subscribed connections that stall (`--stalled-pct`), not in `subs_per_topic`.
    #[serde(default)]
    pub stalled: u64,
    /// Subscribed connections per server (`host:port` of its URL), for `--url A,B,…`.
    #[serde(default)]
    pub per_target: BTreeMap<String, u64>,
    /// Connections whose handshake agreed permessage-deflate (`--deflate`)...
    #[serde(default)]
    pub deflate_agreed: u64,
    /// ...of which the server keeps its compression context (no `server_no_context_takeover`).
    #[serde(default)]
    pub deflate_context_takeover: u64,
}

impl Default for ConnectStats {
    fn default() -> Self {
        ConnectStats {
            attempted: 0,
            ok: 0,
            failures: BTreeMap::new(),
            latency: new_hist(),
            first_start_ns: u64::MAX,
            last_done_ns: 0,
            shards: BTreeMap::new(),
            welcome_missing: 0,
            subs_per_topic: Vec::new(),
            stalled: 0,
            per_target: BTreeMap::new(),
            deflate_agreed: 0,
            deflate_context_takeover: 0,
        }
    }
}

impl ConnectStats {
    pub fn merge(&mut self, o: &ConnectStats) {
        self.attempted += o.attempted;
        self.ok += o.ok;
        add_map(&mut self.failures, &o.failures);
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.first_start_ns = self.first_start_ns.min(o.first_start_ns);
        self.last_done_ns = self.last_done_ns.max(o.last_done_ns);
        add_map(&mut self.shards, &o.shards);
        self.welcome_missing += o.welcome_missing;
        add_vec(&mut self.subs_per_topic, &o.subs_per_topic);
        self.stalled += o.stalled;
        add_map(&mut self.per_target, &o.per_target);
        self.deflate_agreed += o.deflate_agreed;
        self.deflate_context_takeover += o.deflate_context_takeover;
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// What happened during one measured round (a fan-out window, or a hold).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoundStats {
    /// Data frames received in the round, whatever their send time.
    pub received_total: u64,
    /// Data frames whose send time falls in the measured window.
    pub received_window: u64,
    /// Data frames sent before the window (warm-up) or after it.
    pub received_outside: u64,
    /// Data frames without a readable `"t":` send time.
    pub received_untimed: u64,
    /// Publish-to-receive latency of the window's frames, ns.
    #[serde(with = "hist_hex")]
    pub latency: Histogram<u64>,
    /// Missing seq numbers per (connection, topic), and seq numbers that went backwards.
    pub gaps: u64,
    pub dups: u64,
    /// Connections lost during the round, by kind.
    pub closed: BTreeMap<String, u64>,
    /// `{"op":"error"}` replies by code.
    pub server_errors: BTreeMap<String, u64>,
    pub pings_answered: u64,
    /// Frames the bench could not use (fragmented, binary, malformed data frames).
    pub odd_frames: u64,
    pub open_conns: u64,
    /// Healthy connections open at the end of the round, per server (`host:port`).
    #[serde(default)]
    pub open_per_target: BTreeMap<String, u64>,
    /// Stalled subscribers the server ended during the round, by what the socket saw.
    #[serde(default)]
    pub stalled_closed: BTreeMap<String, u64>,
    /// Stalled subscribers still open at the end of the round (not in `open_conns`).
    #[serde(default)]
    pub stalled_open: u64,
    /// Publishers: messages with send time in the window, per bench topic index.
    pub published_window: Vec<u64>,
    pub published_total: u64,
    /// Publishers: messages not sent because the server stopped reading (backlog over limit).
    pub publish_skipped: u64,
    /// CPU seconds of the reporting process during the round (filled by the group).
    pub client_cpu_s: f64,
    /// Bytes read from the sockets during the round (frame headers, compressed payloads,
    /// control frames: what crossed the wire above TCP).
    #[serde(default)]
    pub wire_bytes: u64,
    /// Payload bytes of the data frames received in the round, after inflating.
    #[serde(default)]
    pub payload_bytes: u64,
    /// Messages that arrived compressed (RSV1) and were inflated.
    #[serde(default)]
    pub compressed_frames: u64,
    /// Of those, how many ran the inflater (the others were the same bytes as a message
    /// already inflated on this thread: compress once, see `wire::InflateCache`).
    #[serde(default)]
    pub inflations: u64,
    /// `received_window` by the subscribers' dialect (`plan::Dialect as usize`: v1,
    /// centrifugo, binance).
    #[serde(default)]
    pub received_by_dialect: [u64; 3],
    /// Data frames without a sequence number (Binance streams): counted, not checked for gaps.
    #[serde(default)]
    pub received_no_seq: u64,
}

impl Default for RoundStats {
    fn default() -> Self {
        RoundStats {
            received_total: 0,
            received_window: 0,
            received_outside: 0,
            received_untimed: 0,
            latency: new_hist(),
            gaps: 0,
            dups: 0,
            closed: BTreeMap::new(),
            server_errors: BTreeMap::new(),
            pings_answered: 0,
            odd_frames: 0,
            open_conns: 0,
            open_per_target: BTreeMap::new(),
            stalled_closed: BTreeMap::new(),
            stalled_open: 0,
            published_window: Vec::new(),
            published_total: 0,
            publish_skipped: 0,
            client_cpu_s: 0.0,
            wire_bytes: 0,
            payload_bytes: 0,
            compressed_frames: 0,
            inflations: 0,
            received_by_dialect: [0; 3],
            received_no_seq: 0,
        }
    }
}

impl RoundStats {
    pub fn merge(&mut self, o: &RoundStats) {
        self.received_total += o.received_total;
        self.received_window += o.received_window;
        self.received_outside += o.received_outside;
        self.received_untimed += o.received_untimed;
        self.latency.add(&o.latency).expect("same histogram bounds");
        self.gaps += o.gaps;
        self.dups += o.dups;
        add_map(&mut self.closed, &o.closed);
        add_map(&mut self.server_errors, &o.server_errors);
        self.pings_answered += o.pings_answered;
        self.odd_frames += o.odd_frames;
        self.open_conns += o.open_conns;
        add_map(&mut self.open_per_target, &o.open_per_target);
        add_map(&mut self.stalled_closed, &o.stalled_closed);
        self.stalled_open += o.stalled_open;
        add_vec(&mut self.published_window, &o.published_window);
        self.published_total += o.published_total;
        self.publish_skipped += o.publish_skipped;
        self.client_cpu_s += o.client_cpu_s;
        self.wire_bytes += o.wire_bytes;
        self.payload_bytes += o.payload_bytes;
        self.compressed_frames += o.compressed_frames;
        self.inflations += o.inflations;
        for (a, b) in self
            .received_by_dialect
            .iter_mut()
            .zip(o.received_by_dialect)
        {
            *a += b;
        }
        self.received_no_seq += o.received_no_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(to_hex(&b), "00017f80ff");
        assert_eq!(from_hex("00017f80ff").unwrap(), b);
        assert!(from_hex("0").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn stats_survive_json_and_merge() {
        let mut a = RoundStats::default();
        record(&mut a.latency, 1_000);
        record(&mut a.latency, 2_000_000);
        a.received_window = 2;
        a.published_window = vec![1, 2];
        a.closed.insert("eof".into(), 1);
        a.stalled_closed.insert("reset".into(), 1);
        a.stalled_open = 1;
        let json = serde_json::to_string(&a).unwrap();
        let b: RoundStats = serde_json::from_str(&json).unwrap();
        assert_eq!(b.latency.len(), 2);
        assert_eq!(b.latency.max(), a.latency.max());
        let mut m = RoundStats::default();
        m.merge(&a);
        m.merge(&b);
        assert_eq!(m.received_window, 4);
        assert_eq!(m.latency.len(), 4);
        assert_eq!(m.published_window, vec![2, 4]);
        assert_eq!(m.closed["eof"], 2);
        assert_eq!(m.stalled_closed["reset"], 2);
        assert_eq!(m.stalled_open, 2);
    }
}
