//! `tickcast-bench`: the load generator for tickcast and its peers (protocol v1 over WebSocket).
//!
//! It shares a 2-core machine with the server it measures, so its client side is cheap:
//! raw TCP, a normal RFC 6455 handshake, then a minimal frame reader that allocates nothing per
//! message and finds `"seq":` and the send time `"t":` by byte search instead of parsing JSON.
//!
//! **Why mio (epoll) and not monoio:** the bench must be the part of the run that does not
//! change. A plain readiness loop lets one thread own thousands of sockets with one shared read
//! buffer (monoio's owned-buffer reads would pin a buffer per idle connection), keeps the
//! client's syscall pattern independent of the io_uring code under test, and runs the same on
//! any kernel. Connections are spread over a few threads (`--threads`, default 1 per process)
//! and, past `--per-process` sockets (15,000; the open-file limit here is 20,000), over worker
//! processes.
//!
//! Every run is bounded: connections, durations, rates and steps are capped (see `run.rs`), a
//! watchdog ends any process past its deadline, and targets outside 127.0.0.0/8 (and ::1) are
//! refused unless `--allow-remote` is given.

mod engine;
mod group;
mod market;
mod plan;
mod procfs;
mod report;
mod run;
mod stats;
mod wire;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tickcast-bench",
    about = "Load generator for WebSocket fan-out servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N subscribed connections, hold them, report connect rate, latency and server RSS.
    Connect {
        #[command(flatten)]
        common: CommonArgs,
        /// Connections to open.
        #[arg(short = 'n', long, default_value_t = 1000)]
        n: u64,
        /// Seconds to hold the connections open (pings are answered).
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// The topic every connection subscribes to.
        #[arg(long, default_value = "bench.t0")]
        topic: String,
        /// Connection attempts per second, or `unlimited`.
        #[arg(long, default_value = "unlimited")]
        rate: String,
    },
    /// Subscribers over K topics, paced publishers: throughput, loss, latency, server CPU.
    Fanout {
        #[command(flatten)]
        common: CommonArgs,
        /// Subscriber connections.
        #[arg(long, default_value_t = 1000)]
        subs: u64,
        /// Topics `bench.t0..bench.t{K-1}`.
        #[arg(long, default_value_t = 1)]
        topics: u32,
        /// Distinct random topics per subscriber (1: subscriber i takes topic i mod K).
        #[arg(long, default_value_t = 1)]
        topics_per_sub: u32,
        /// Publisher connections (publishing fire-and-forget, round-robin over topics).
        #[arg(long, default_value_t = 1)]
        pubs: u64,
        /// Total publishes per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Approximate size of each publish's `data` JSON, bytes.
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// What the `data` holds besides the send time: `pad` (`"pad":"xxx…"`, compresses
        /// ~50×) or `market` (demo-feed-like trades, best bid/offers, or book updates from
        /// `--payload` 200 on: what permessage-deflate should be measured with).
        #[arg(long, default_value = "pad", value_parser = ["pad", "market"])]
        data: String,
        /// Measured window, seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Publishing before the measured window, seconds.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Seed of the random topic choice (`--topics-per-sub` > 1).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Raise the rate by `--rate-step` until loss appears or p99 passes `--p99-bound-ms`.
        #[arg(long)]
        max_rate: bool,
        #[arg(long, default_value_t = 10.0)]
        p99_bound_ms: f64,
        #[arg(long, default_value_t = 1.5)]
        rate_step: f64,
        #[arg(long, default_value_t = 12)]
        max_steps: u32,
        /// With --max-rate, run a failing step again up to this many times before it counts.
        #[arg(long, default_value_t = 1)]
        step_retries: u32,
        /// After the window, stop waiting once no window message arrived for this long.
        #[arg(long, default_value_t = 500)]
        quiet_ms: u64,
        /// After the window, wait at most this long for late messages.
        #[arg(long, default_value_t = 5000)]
        drain_max_ms: u64,
        /// Subscriber connection attempts per second (default: unlimited).
        #[arg(long)]
        connect_rate: Option<f64>,
        /// Percent of subscribers that stall: a tiny receive buffer (set before connect), and
        /// after the subscribe ack they never read again. They are not counted in the
        /// expected deliveries, loss or latency, which then describe the healthy ones only.
        #[arg(long, default_value_t = 0.0)]
        stalled_pct: f64,
        /// What the subscribers speak: `v1` (the URL's path), `centrifugo` (Centrifugo's
        /// client protocol on `/connection/websocket`), `binance` (combined market streams on
        /// `/binance/stream`, stream `bench<N>@t` for topic `bench.t<N>`: the server needs
        /// `binance.streams = [{stream="bench{n}@t",topic="bench.t{n}"}]`; no seq, so no gap
        /// check), or `mixed` (subscriber i: v1, centrifugo, binance for i mod 3). Publishers
        /// speak protocol v1 on the URL.
        #[arg(long, default_value = "v1", value_parser = ["v1", "centrifugo", "binance", "mixed"])]
        dialect: String,
        /// Distinct subscription filters over the v1 subscribers (0: none): subscriber i
        /// subscribes with filter i mod N, `{"t":{"exists":true,"gt":-(i mod N + 1)}}`, two
        /// tests that every published message passes (its `t` is the send time), so the
        /// deliveries are those of the same run without filters and CPU per delivery compares.
        #[arg(long, default_value_t = 0)]
        filters: u32,
        /// With --filters: subscriber i takes filter ⌊i·N/subs⌋ instead of i mod N, so the
        /// subscribers of one filter are consecutive connections (the fan-out visits a
        /// pattern's subscribers filter by filter).
        #[arg(long)]
        filters_in_blocks: bool,
    },
    /// Internal: one group of connections for a parent `tickcast-bench` (JSON lines on stdio).
    #[command(hide = true)]
    Worker,
}

#[derive(Args)]
struct CommonArgs {
    /// Server URL; must be loopback unless --allow-remote. Several, comma-separated (the
    /// nodes of a cluster): connection i goes to URL i mod N; fanout's publishers to the first.
    #[arg(long, default_value = "ws://127.0.0.1:9000/ws")]
    url: String,
    /// Name of the server under test, as written in the output.
    #[arg(long, default_value = "unnamed")]
    label: String,
    /// Server process id: RSS and CPU are read from /proc/PID. Several, comma-separated: summed.
    #[arg(long, default_value = "")]
    server_pid: String,
    /// Local addresses to spread connections over (bind before connect), comma-separated.
    #[arg(long, default_value = "")]
    source_ips: String,
    /// I/O threads per bench process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sockets per process before worker processes are used.
    #[arg(long, default_value_t = 15_000)]
    per_process: u64,
    /// Force this many worker processes (0: all in this process).
    #[arg(long)]
    workers: Option<u64>,
    /// Handshakes in flight at once, per thread.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// A connection not subscribed after this long counts as failed.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Subscriber threads sleep this long between event batches (fewer, fuller reads: a cheaper
    /// bench for throughput runs; the latency figures then include up to this pause).
    #[arg(long, default_value_t = 0)]
    recv_pause_us: u64,
    /// Allow targets outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_remote: bool,
    /// Every client offers permessage-deflate (RFC 7692: client_max_window_bits,
    /// client_no_context_takeover) and fails if the server does not agree; compressed (RSV1)
    /// messages are inflated before they are read. Wire bytes are reported either way.
    #[arg(long)]
    deflate: bool,
    /// PEM certificate(s) that `wss://` servers are checked against (their certificate, or its
    /// CA): with `--url wss://…`, every connection speaks TLS.
    #[arg(long)]
    tls_ca: Option<String>,
    /// Where `/metrics` is read (plain `ws://` URLs of the same servers, comma-separated);
    /// default: the `--url` servers. A `wss://` server's metrics need this.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Append the JSON result line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

impl CommonArgs {
    fn into_common(self) -> Result<run::Common, String> {
        Ok(run::Common {
            source_ips: run::parse_source_ips(&self.source_ips, self.allow_remote)?,
            url: self.url,
            label: self.label,
            server_pids: run::parse_pids(&self.server_pid)?,
            threads: self.threads.clamp(1, 64),
            per_process: self.per_process,
            workers: self.workers,
            concurrency: self.connect_concurrency,
            connect_timeout_ms: self.connect_timeout_ms.clamp(100, 120_000),
            recv_pause_us: self.recv_pause_us.min(100_000),
            allow_remote: self.allow_remote,
            json_out: self.json_out,
            deflate: self.deflate,
            tls_ca: self.tls_ca,
            metrics_url: self.metrics_url,
        })
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Command::Worker => group::worker_main().map_err(|e| format!("worker: {e}")),
        Command::Connect {
            common,
            n,
            hold,
            topic,
            rate,
        } => {
            let rate = match rate.as_str() {
                "unlimited" => Ok(None),
                r => r
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0)
                    .map(Some)
                    .ok_or(format!("--rate {r}: a positive number or `unlimited`")),
            };
            rate.and_then(|rate| {
                let c = common.into_common()?;
                run::connect(
                    &c,
                    &run::ConnectArgs {
                        n,
                        hold_s: hold,
                        topic,
                        rate,
                    },
                )
            })
        }
        Command::Fanout {
            common,
            subs,
            topics,
            topics_per_sub,
            pubs,
            rate,
            payload,
            data,
            duration,
            warmup,
            seed,
            max_rate,
            p99_bound_ms,
            rate_step,
            max_steps,
            step_retries,
            quiet_ms,
            drain_max_ms,
            connect_rate,
            stalled_pct,
            dialect,
            filters,
            filters_in_blocks,
        } => common.into_common().and_then(|c| {
            run::fanout(
                &c,
                &run::FanoutArgs {
                    subs,
                    topics,
                    topics_per_sub,
                    pubs,
                    rate,
                    payload,
                    market: data == "market",
                    duration_s: duration,
                    warmup_s: warmup,
                    seed,
                    max_rate,
                    p99_bound_ms,
                    rate_step,
                    max_steps,
                    step_retries: step_retries.min(5),
                    quiet_ms: quiet_ms.min(60_000),
                    drain_max_ms: drain_max_ms.min(120_000),
                    connect_rate,
                    stalled_pct,
                    dialects: plan::Dialects::parse(&dialect).expect("checked by clap"),
                    filters,
                    filters_in_blocks,
                },
            )
        }),
    };
    if let Err(e) = result {
        eprintln!("tickcast-bench: {e}");
        std::process::exit(1);
    }
}
