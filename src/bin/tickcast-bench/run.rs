//! The scenarios: `connect` and `fanout` (with its `--max-rate` search).
//!
//! The coordinator builds groups of I/O threads (here or in worker processes), waits for their
//! connections, then runs rounds. A round is a window of CLOCK_MONOTONIC time: subscribers count
//! and time the messages whose send time `t` falls in it, publishers count what they sent in it,
//! and the coordinator samples the server's CPU at the window's edges.
//!
//! Layout: `flags.rs` parses and checks the target flags; `spread.rs` spreads connections over
//! groups and drives them; `server.rs` samples the servers (CPU, RSS, `/metrics`); `connect.rs`
//! and `fanout.rs` are the scenarios (a fanout round and the fanout reports are in `fanout/`).

mod connect;
mod fanout;
mod flags;
mod server;
mod spread;

use std::{net::IpAddr, path::PathBuf};

use serde_json::{Value, json};

use crate::report;
pub use connect::{ConnectArgs, connect};
pub use fanout::{FanoutArgs, fanout};
pub use flags::{parse_pids, parse_source_ips};

/// Bounds on every run, whatever the flags say.
pub const CONNS_MAX: u64 = 100_000;
pub const HOLD_S_MAX: f64 = 3600.0;
pub const DURATION_S_MAX: f64 = 600.0;
pub const WARMUP_S_MAX: f64 = 120.0;
pub const RATE_MAX: f64 = 5_000_000.0;
pub const PAYLOAD_BYTES_MAX: usize = 1 << 20;
pub const PUBLISHERS_MAX: u64 = 1000;
pub const TOPICS_MAX: u32 = 1_000_000;
pub const STEPS_MAX: u32 = 30;

pub type Res<T> = Result<T, String>;

pub struct Common {
    pub url: String,
    pub label: String,
    /// Server process ids (several: the nodes of a cluster); CPU and RSS are summed over them.
    pub server_pids: Vec<u32>,
    pub source_ips: Vec<IpAddr>,
    pub threads: usize,
    pub per_process: u64,
    pub workers: Option<u64>,
    pub concurrency: usize,
    pub connect_timeout_ms: u64,
    pub recv_pause_us: u64,
    pub allow_remote: bool,
    pub json_out: Option<PathBuf>,
    /// Every client offers permessage-deflate and requires it agreed (`--deflate`).
    pub deflate: bool,
    /// `--tls-ca`: what `wss://` servers are checked against.
    pub tls_ca: Option<String>,
    /// `--metrics-url`: where `/metrics` is read, if not at `url`.
    pub metrics_url: Option<String>,
}

fn base_json(scenario: &str, c: &Common, workers: usize) -> Value {
    json!({
        "scenario": scenario,
        "server": c.label,
        "date": report::utc_now(),
        "url": c.url,
        "server_pid": c.server_pids,
        "bench_workers": workers,
        "bench_threads_per_process": c.threads,
        "source_ips": c.source_ips.len().max(1),
        "recv_pause_us": c.recv_pause_us,
        "deflate": c.deflate,
        "tls": c.url.starts_with("wss://"),
        "cmd": std::env::args().collect::<Vec<_>>().join(" "),
    })
}

fn kinds(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
