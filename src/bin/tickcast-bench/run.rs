//! The scenarios: `connect` and `fanout` (with its `--max-rate` search).
//!
//! The coordinator builds groups of I/O threads (here or in worker processes), waits for their
//! connections, then runs rounds. A round is a window of CLOCK_MONOTONIC time: subscribers count
//! and time the messages whose send time `t` falls in it, publishers count what they sent in it,
//! and the coordinator samples the server's CPU at the window's edges.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    engine::mono_ns,
    group::{Group, GroupPlan, split, watchdog},
    plan::{PublishPlan, RoundPlan, Target, ThreadPlan, Topics},
    procfs,
    report::{self, pct_line, percentiles, round3},
    stats::{ConnectStats, RoundStats},
};

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
/// File descriptors a process keeps for itself beyond its sockets.
const SPARE_FDS: u64 = 200;

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
}

/// Parses `ws://host:port/path` and refuses targets outside 127.0.0.0/8 and ::1 unless allowed.
pub fn parse_target(url: &str, allow_remote: bool) -> Res<Target> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or("--url must start with ws://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or(format!("{authority} resolves to nothing"))?;
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(format!(
            "refusing non-loopback target {addr} (pass --allow-remote)"
        ));
    }
    Ok(Target {
        addr,
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// Parses `--url`: one URL, or several comma-separated (the nodes of a cluster).
pub fn parse_targets(urls: &str, allow_remote: bool) -> Res<Vec<Target>> {
    let v = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| parse_target(u, allow_remote))
        .collect::<Res<Vec<_>>>()?;
    if v.is_empty() {
        return Err("--url: no URL".into());
    }
    Ok(v)
}

/// Parses `--server-pid`: comma-separated process ids.
pub fn parse_pids(s: &str) -> Res<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|e| format!("--server-pid {p}: {e}")))
        .collect()
}

pub fn parse_source_ips(s: &str, allow_remote: bool) -> Res<Vec<IpAddr>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part
            .parse()
            .map_err(|e| format!("--source-ips {part}: {e}"))?;
        if !allow_remote && !ip.is_loopback() {
            return Err(format!("refusing non-loopback source address {ip}"));
        }
        v.push(ip);
    }
    Ok(v)
}

/// Raises the soft open-file limit to the hard one and returns it.
fn open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

fn sleep_until(t_ns: u64) {
    let now = mono_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

/// CPU seconds of the server processes, summed; `None` without pids or if one cannot be read.
fn server_cpu(c: &Common) -> Option<f64> {
    if c.server_pids.is_empty() {
        return None;
    }
    c.server_pids
        .iter()
        .map(|&p| procfs::cpu_seconds(Some(p)).ok())
        .sum()
}

/// RSS of the server processes, summed; `None` without pids or if one cannot be read.
fn server_rss(c: &Common) -> Option<procfs::Mem> {
    if c.server_pids.is_empty() {
        return None;
    }
    let mut total = procfs::Mem::default();
    for &p in &c.server_pids {
        let m = procfs::mem(p).ok()?;
        total.vm_rss_bytes += m.vm_rss_bytes;
        total.rss_anon_bytes += m.rss_anon_bytes;
    }
    Some(total)
}

/// `/metrics` of every server, summed; `None` if none answers.
fn scrape_all(targets: &[Target]) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut total: Option<std::collections::BTreeMap<String, f64>> = None;
    for t in targets {
        if let Some(m) = procfs::scrape_metrics(t.addr, &t.host) {
            let into = total.get_or_insert_with(Default::default);
            for (k, v) in m {
                *into.entry(k).or_insert(0.0) += v;
            }
        }
    }
    total
}

/// Connections to spread over groups.
struct Spread {
    first: u64,
    count: u64,
    topics: Topics,
    connect_rate: Option<f64>,
    deadline_ns: u64,
    /// Sockets this process holds besides these (the publishers).
    extra_local_sockets: u64,
    /// Global indices (sorted) of the connections that stall.
    stalled: Vec<u64>,
}

/// Plans subscriber groups: in-process threads, or worker processes past `per_process` sockets.
fn plan_groups(c: &Common, targets: &[Target], s: Spread) -> Res<Vec<(GroupPlan, bool)>> {
    let Spread {
        first,
        count,
        topics,
        connect_rate,
        deadline_ns,
        extra_local_sockets,
        stalled,
    } = s;
    let fd_limit = open_files_limit();
    let per_process = c.per_process.min(fd_limit.saturating_sub(SPARE_FDS)).max(1);
    let workers = c
        .workers
        .unwrap_or(if count + extra_local_sockets > per_process {
            count.div_ceil(per_process)
        } else {
            0
        });
    if workers == 0 && count + extra_local_sockets + SPARE_FDS > fd_limit {
        return Err(format!(
            "{} sockets do not fit in one process (open files limit {fd_limit})",
            count + extra_local_sockets
        ));
    }
    if workers > 0 && count.div_ceil(workers) + SPARE_FDS > fd_limit {
        return Err(format!(
            "{count} sockets over {workers} workers exceed {fd_limit} files each"
        ));
    }
    let groups = workers.max(1);
    let threads = c.threads.max(1) as u64;
    let rate_per_thread = connect_rate.map(|r| r / (groups * threads) as f64);
    Ok(split(first, count, groups)
        .into_iter()
        .map(|(gfirst, gcount)| {
            let threads = split(gfirst, gcount, threads)
                .into_iter()
                .map(|(tfirst, tcount)| ThreadPlan {
                    targets: targets.to_vec(),
                    source_ips: c.source_ips.clone(),
                    first: tfirst,
                    count: tcount,
                    topics: topics.clone(),
                    connect_rate: rate_per_thread,
                    concurrency: c.concurrency.max(1),
                    connect_timeout_ms: c.connect_timeout_ms,
                    recv_pause_us: c.recv_pause_us,
                    stalled: stalled
                        .iter()
                        .copied()
                        .filter(|i| (tfirst..tfirst + tcount).contains(i))
                        .collect(),
                })
                .collect();
            (
                GroupPlan {
                    threads,
                    deadline_ns,
                },
                workers > 0,
            )
        })
        .collect())
}

fn start_groups(plans: &[(GroupPlan, bool)]) -> Res<Vec<Group>> {
    plans
        .iter()
        .map(|(p, remote)| Group::start(p, *remote).map_err(|e| format!("start group: {e}")))
        .collect()
}

fn wait_connected(groups: &mut [Group]) -> Res<ConnectStats> {
    let mut total = ConnectStats::default();
    for g in groups.iter_mut() {
        total.merge(&g.wait_connected().map_err(|e| format!("group: {e}"))?);
    }
    Ok(total)
}

fn run_round(groups: &mut [Group], plan: &RoundPlan) -> Res<RoundStats> {
    for g in groups.iter_mut() {
        g.send_round(plan).map_err(|e| format!("group: {e}"))?;
    }
    let mut total = RoundStats::default();
    for g in groups.iter_mut() {
        total.merge(&g.wait_round().map_err(|e| format!("group: {e}"))?);
    }
    Ok(total)
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

// ---- connect ------------------------------------------------------------------------------

pub struct ConnectArgs {
    pub n: u64,
    pub hold_s: f64,
    pub topic: String,
    pub rate: Option<f64>,
}

pub fn connect(c: &Common, a: &ConnectArgs) -> Res<()> {
    let targets = parse_targets(&c.url, c.allow_remote)?;
    if a.n == 0 || a.n > CONNS_MAX {
        return Err(format!("-n must be in 1..={CONNS_MAX}"));
    }
    if !(0.0..=HOLD_S_MAX).contains(&a.hold_s) {
        return Err(format!("--hold must be in 0..={HOLD_S_MAX} s"));
    }
    // Bounded: every attempt times out, plus the hold, plus slack for start and stop.
    let connect_bound_s = c.connect_timeout_ms as f64 / 1e3
        + a.rate
            .map_or(a.n as f64 / 1000.0, |r| a.n as f64 / r.max(1.0));
    let deadline = mono_ns() + ((connect_bound_s + a.hold_s + 60.0) * 1e9) as u64;
    watchdog(deadline, "connect");
    let rss_before = server_rss(c);
    let spread = Spread {
        first: 0,
        count: a.n,
        topics: Topics::Fixed(a.topic.clone()),
        connect_rate: a.rate,
        deadline_ns: deadline,
        extra_local_sockets: 0,
        stalled: Vec::new(),
    };
    let plans = plan_groups(c, &targets, spread)?;
    let workers = if plans.first().is_some_and(|p| p.1) {
        plans.len()
    } else {
        0
    };
    let mut groups = start_groups(&plans)?;
    let conn = wait_connected(&mut groups)?;
    let rss_connected = server_rss(c);
    let hold_end = mono_ns() + (a.hold_s * 1e9) as u64;
    let hold = run_round(
        &mut groups,
        &RoundPlan {
            window_start_ns: hold_end,
            window_end_ns: hold_end,
            quiet_ns: 0,
            finish_by_ns: hold_end + 1_000_000_000,
            publish: None,
        },
    )?;
    let rss_after = server_rss(c);
    for g in groups {
        g.quit();
    }

    let span_s = conn.last_done_ns.saturating_sub(conn.first_start_ns) as f64 / 1e9;
    let rate = if span_s > 0.0 {
        conn.ok as f64 / span_s
    } else {
        0.0
    };
    let lat = percentiles(&conn.latency, 1e6);
    let per_conn = |m: Option<procfs::Mem>| match (rss_before, m) {
        (Some(b), Some(a)) if conn.ok > 0 => {
            Some((a.vm_rss_bytes as f64 - b.vm_rss_bytes as f64) / conn.ok as f64)
        }
        _ => None,
    };
    let mut result = base_json("connect", c, workers);
    let obj = result.as_object_mut().expect("object");
    let fields = json!({
        "n": a.n, "topic": a.topic, "rate_limit": a.rate, "hold_s": a.hold_s,
        "ok": conn.ok, "failed": conn.failed(), "failures": conn.failures,
        "connects_per_s": round3(rate), "connect_span_s": round3(span_s),
        "connect_latency_ms": lat,
        "welcome_missing": conn.welcome_missing, "shards": conn.shards,
        "conns_per_url": conn.per_target, "open_per_url_after_hold": hold.open_per_target,
        "dropped_during_hold": hold.closed, "open_after_hold": hold.open_conns,
        "pings_answered": hold.pings_answered,
        "rss_before_kib": rss_before.map(|m| m.vm_rss_bytes / 1024),
        "rss_connected_kib": rss_connected.map(|m| m.vm_rss_bytes / 1024),
        "rss_after_kib": rss_after.map(|m| m.vm_rss_bytes / 1024),
        "rss_anon_after_kib": rss_after.map(|m| m.rss_anon_bytes / 1024),
        "rss_per_conn_bytes": per_conn(rss_after).map(|x| x.round()),
        "rss_per_conn_connected_bytes": per_conn(rss_connected).map(|x| x.round()),
    });
    obj.extend(fields.as_object().expect("object").clone());

    let mut t = vec![
        (
            "scenario".into(),
            format!(
                "connect  server={}  {}",
                c.label,
                result["date"].as_str().unwrap_or("")
            ),
        ),
        (
            "connections".into(),
            format!("{} ok / {} attempted", conn.ok, conn.attempted),
        ),
        ("failures".into(), kinds(&conn.failures)),
        (
            "connects/s".into(),
            format!("{:.0}  ({} in {:.3} s)", rate, conn.ok, span_s),
        ),
        ("connect latency".into(), pct_line(&lat, "ms")),
        ("shards (welcome)".into(), format!("{:?}", conn.shards)),
        (
            format!("hold {} s", a.hold_s),
            format!(
                "open {}  dropped: {}  pings answered {}",
                hold.open_conns,
                kinds(&hold.closed),
                hold.pings_answered
            ),
        ),
    ];
    if let (Some(b), Some(after)) = (rss_before, rss_after) {
        t.push((
            "server RSS".into(),
            format!(
                "before {} KiB, connected {} KiB, after hold {} KiB",
                b.vm_rss_bytes / 1024,
                rss_connected.map_or(0, |m| m.vm_rss_bytes / 1024),
                after.vm_rss_bytes / 1024
            ),
        ));
        t.push((
            "RSS per connection".into(),
            format!("{} B", result["rss_per_conn_bytes"]),
        ));
    }
    report::emit(&t, &result, c.json_out.as_deref());
    Ok(())
}

// ---- fanout -------------------------------------------------------------------------------

pub struct FanoutArgs {
    pub subs: u64,
    pub topics: u32,
    pub topics_per_sub: u32,
    pub pubs: u64,
    pub rate: f64,
    pub payload: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub seed: u64,
    pub max_rate: bool,
    pub p99_bound_ms: f64,
    pub rate_step: f64,
    pub max_steps: u32,
    pub step_retries: u32,
    pub quiet_ms: u64,
    pub drain_max_ms: u64,
    pub connect_rate: Option<f64>,
    pub stalled_pct: f64,
}

/// The subscribers that stall: `pct` % of `0..subs` (rounded), a seeded random choice so they
/// spread over topics and threads; sorted.
pub fn pick_stalled(subs: u64, pct: f64, seed: u64) -> Vec<u64> {
    let n = ((subs as f64 * pct / 100.0).round() as u64).min(subs);
    if n == 0 {
        return Vec::new();
    }
    let mut all: Vec<u64> = (0..subs).collect();
    fastrand::Rng::with_seed(seed ^ 0x5747_4c4c).shuffle(&mut all);
    all.truncate(n as usize);
    all.sort_unstable();
    all
}

struct Step {
    rate: f64,
    json: Value,
    loss: u64,
    p99_ms: f64,
    closed: u64,
    publisher_limited: bool,
    attempts: u32,
}

pub fn fanout(c: &Common, a: &FanoutArgs) -> Res<()> {
    // Subscribers go round-robin over the URLs; the publishers connect to the first one.
    let targets = parse_targets(&c.url, c.allow_remote)?;
    if a.subs > CONNS_MAX || a.pubs == 0 || a.pubs > PUBLISHERS_MAX {
        return Err(format!(
            "--subs ≤ {CONNS_MAX}, 1 ≤ --pubs ≤ {PUBLISHERS_MAX}"
        ));
    }
    if a.topics == 0 || a.topics > TOPICS_MAX || a.topics_per_sub == 0 {
        return Err(format!(
            "--topics in 1..={TOPICS_MAX}, --topics-per-sub ≥ 1"
        ));
    }
    if !(a.rate > 0.0 && a.rate <= RATE_MAX) {
        return Err(format!("--rate in (0, {RATE_MAX}]"));
    }
    if a.payload > PAYLOAD_BYTES_MAX
        || !(a.duration_s > 0.0 && a.duration_s <= DURATION_S_MAX)
        || !(0.0..=WARMUP_S_MAX).contains(&a.warmup_s)
    {
        return Err(format!(
            "--payload ≤ {PAYLOAD_BYTES_MAX}, --duration in (0, {DURATION_S_MAX}], --warmup ≤ {WARMUP_S_MAX}"
        ));
    }
    if !(0.0..100.0).contains(&a.stalled_pct) {
        return Err("--stalled-pct in [0, 100)".into());
    }
    let steps = if a.max_rate {
        a.max_steps.clamp(1, STEPS_MAX)
    } else {
        1
    };
    if a.max_rate && a.rate_step <= 1.0 {
        return Err("--rate-step must be > 1".into());
    }
    let round_s = (0.3 + a.warmup_s + a.duration_s + a.drain_max_ms as f64 / 1e3 + 2.0)
        * f64::from(1 + a.step_retries);
    let connect_s = c.connect_timeout_ms as f64 / 1e3
        + a.connect_rate
            .map_or((a.subs + a.pubs) as f64 / 1000.0, |r| {
                a.subs as f64 / r.max(1.0)
            });
    let deadline = mono_ns() + ((connect_s * 2.0 + round_s * f64::from(steps) + 60.0) * 1e9) as u64;
    watchdog(deadline, "fanout");

    let topics = Topics::Bench {
        k: a.topics,
        per_sub: a.topics_per_sub,
        seed: a.seed,
    };
    let spread = Spread {
        first: 0,
        count: a.subs,
        topics,
        connect_rate: a.connect_rate,
        deadline_ns: deadline,
        extra_local_sockets: a.pubs,
        stalled: pick_stalled(a.subs, a.stalled_pct, a.seed),
    };
    let rss_before = server_rss(c);
    let sub_plans = plan_groups(c, &targets, spread)?;
    let workers = if sub_plans.first().is_some_and(|p| p.1) {
        sub_plans.len()
    } else {
        0
    };
    let mut subs = start_groups(&sub_plans)?;
    let sub_conn = wait_connected(&mut subs)?;
    let pub_plan = GroupPlan {
        threads: vec![ThreadPlan {
            targets: vec![targets[0].clone()],
            source_ips: c.source_ips.clone(),
            first: a.subs,
            count: a.pubs,
            topics: Topics::Publisher,
            connect_rate: None,
            concurrency: c.concurrency.max(1),
            connect_timeout_ms: c.connect_timeout_ms,
            recv_pause_us: 0,
            stalled: Vec::new(),
        }],
        deadline_ns: deadline,
    };
    let mut pubs = vec![Group::start(&pub_plan, false).map_err(|e| format!("publishers: {e}"))?];
    let pub_conn = wait_connected(&mut pubs)?;
    let rss_connected = server_rss(c);
    eprintln!(
        "tickcast-bench: {} subscribers connected ({} failed: {}), {} publishers",
        sub_conn.ok,
        sub_conn.failed(),
        kinds(&sub_conn.failures),
        pub_conn.ok
    );
    if pub_conn.ok == 0 {
        for g in subs.into_iter().chain(pubs) {
            g.quit();
        }
        return Err(format!(
            "no publisher connected: {}",
            kinds(&pub_conn.failures)
        ));
    }

    let mut rate = a.rate;
    let mut done: Vec<Step> = Vec::new();
    let passes = |s: &Step| {
        s.loss == 0 && s.p99_ms <= a.p99_bound_ms && s.closed == 0 && !s.publisher_limited
    };
    for step in 0..steps {
        let mut s = fanout_round(c, a, &mut subs, &mut pubs, &sub_conn, rate, workers)?;
        add_rss(&mut s, c, rss_before, rss_connected, sub_conn.ok);
        // A failing step is run again (same connections) before it counts: on a machine shared
        // with other work, one scheduler stall can fail a step the server sustains.
        let mut attempt = 1;
        while a.max_rate && !passes(&s) && s.closed == 0 && attempt <= a.step_retries {
            eprintln!(
                "tickcast-bench: step {step}: rate {rate:.0}/s failed (loss {}, p99 {:.3} ms), retrying",
                s.loss, s.p99_ms
            );
            s = fanout_round(c, a, &mut subs, &mut pubs, &sub_conn, rate, workers)?;
            add_rss(&mut s, c, rss_before, rss_connected, sub_conn.ok);
            attempt += 1;
        }
        s.attempts = attempt;
        let stop = !passes(&s) || rate * a.rate_step > RATE_MAX;
        if !a.max_rate {
            print_fanout(c, a, &s.json, &sub_conn);
        } else {
            eprintln!(
                "tickcast-bench: step {step}: rate {rate:.0}/s loss {} p99 {:.3} ms closed {}{}",
                s.loss,
                s.p99_ms,
                s.closed,
                if s.publisher_limited {
                    " (publisher could not keep the rate)"
                } else {
                    ""
                }
            );
        }
        done.push(s);
        if stop {
            break;
        }
        rate *= a.rate_step;
    }
    for g in subs.into_iter().chain(pubs) {
        g.quit();
    }
    if a.max_rate {
        let passing = |s: &&Step| passes(s);
        let best = done.iter().rev().find(passing);
        let mut result = base_json("fanout-max-rate", c, workers);
        let obj = result.as_object_mut().expect("object");
        obj.insert("p99_bound_ms".into(), json!(a.p99_bound_ms));
        obj.insert(
            "max_sustainable_rate".into(),
            json!(best.map(|s| s.rate.round())),
        );
        obj.insert(
            "max_sustainable_deliveries_per_s".into(),
            best.map_or(Value::Null, |s| s.json["deliveries_per_s"].clone()),
        );
        obj.insert("best".into(), best.map_or(Value::Null, |s| s.json.clone()));
        let last = done.last().expect("one step at least");
        obj.insert(
            "first_failing".into(),
            if passing(&last) {
                Value::Null
            } else {
                last.json.clone()
            },
        );
        obj.insert(
            "steps".into(),
            json!(
                done.iter()
                    .map(
                        |s| json!({"rate": s.rate.round(), "loss": s.loss, "p99_ms": s.p99_ms,
                    "closed": s.closed, "publisher_limited": s.publisher_limited,
                    "attempts": s.attempts,
                    "deliveries_per_s": s.json["deliveries_per_s"],
                    "server_cpu_ns_per_delivery": s.json["server_cpu_ns_per_delivery"]})
                    )
                    .collect::<Vec<_>>()
            ),
        );
        let mut t = vec![(
            "scenario".into(),
            format!(
                "fanout --max-rate  server={}  {}",
                c.label,
                result["date"].as_str().unwrap_or("")
            ),
        )];
        for s in &done {
            t.push((
                format!("rate {:.0}/s", s.rate),
                format!(
                    "deliveries/s {}  loss {}  p99 {:.3} ms  closed {}  cpu/delivery {} ns{}",
                    s.json["deliveries_per_s"],
                    s.loss,
                    s.p99_ms,
                    s.closed,
                    s.json["server_cpu_ns_per_delivery"],
                    if s.publisher_limited {
                        "  (publisher-limited)"
                    } else {
                        ""
                    }
                ) + &if s.attempts > 1 {
                    format!("  ({} attempts)", s.attempts)
                } else {
                    String::new()
                },
            ));
        }
        t.push((
            "max sustainable".into(),
            match best {
                Some(b) => format!(
                    "{:.0} msgs/s = {} deliveries/s (p99 ≤ {} ms, zero loss)",
                    b.rate, b.json["deliveries_per_s"], a.p99_bound_ms
                ),
                None => "none: the first step already failed".into(),
            },
        ));
        report::emit(&t, &result, c.json_out.as_deref());
    }
    Ok(())
}

/// Adds the servers' RSS (summed over `--server-pid`) to a step: before the subscribers
/// connected, once they and the publishers were connected, and after the round; per
/// subscribed connection = (RSS − RSS before) ÷ subscribers connected.
fn add_rss(
    s: &mut Step,
    c: &Common,
    before: Option<procfs::Mem>,
    connected: Option<procfs::Mem>,
    subs_ok: u64,
) {
    let after = server_rss(c);
    let kib = |m: Option<procfs::Mem>| m.map(|m| m.vm_rss_bytes / 1024);
    let per_conn = |m: Option<procfs::Mem>| match (before, m) {
        (Some(b), Some(m)) if subs_ok > 0 => {
            Some(((m.vm_rss_bytes as f64 - b.vm_rss_bytes as f64) / subs_ok as f64).round())
        }
        _ => None,
    };
    let obj = s.json.as_object_mut().expect("object");
    obj.insert("server_rss_before_kib".into(), json!(kib(before)));
    obj.insert("server_rss_connected_kib".into(), json!(kib(connected)));
    obj.insert("server_rss_after_kib".into(), json!(kib(after)));
    obj.insert(
        "server_rss_per_conn_connected_bytes".into(),
        json!(per_conn(connected)),
    );
    obj.insert(
        "server_rss_per_conn_after_bytes".into(),
        json!(per_conn(after)),
    );
}

fn fanout_round(
    c: &Common,
    a: &FanoutArgs,
    subs: &mut [Group],
    pubs: &mut [Group],
    sub_conn: &ConnectStats,
    rate: f64,
    workers: usize,
) -> Res<Step> {
    let targets = parse_targets(&c.url, c.allow_remote)?;
    let metrics_before = scrape_all(&targets);
    let start = mono_ns() + 300_000_000;
    let ws = start + (a.warmup_s * 1e9) as u64;
    let we = ws + (a.duration_s * 1e9) as u64;
    let mut plan = RoundPlan {
        window_start_ns: ws,
        window_end_ns: we,
        quiet_ns: a.quiet_ms * 1_000_000,
        finish_by_ns: we + a.drain_max_ms * 1_000_000,
        publish: None,
    };
    let client_cpu0 = procfs::cpu_seconds(None).unwrap_or(0.0);
    let round_cpu0 = server_cpu(c);
    for g in subs.iter_mut() {
        g.send_round(&plan).map_err(|e| format!("group: {e}"))?;
    }
    plan.publish = Some(PublishPlan {
        start_ns: start,
        rate,
        topics_k: a.topics,
        payload_bytes: a.payload,
    });
    for g in pubs.iter_mut() {
        g.send_round(&plan)
            .map_err(|e| format!("publishers: {e}"))?;
    }
    sleep_until(ws);
    let cpu0 = server_cpu(c);
    sleep_until(we);
    let cpu1 = server_cpu(c);
    let mut got = RoundStats::default();
    let mut remote_cpu = 0.0;
    for g in subs.iter_mut() {
        let s = g.wait_round().map_err(|e| format!("group: {e}"))?;
        if g.is_remote() {
            remote_cpu += s.client_cpu_s;
        }
        got.merge(&s);
    }
    let mut published = RoundStats::default();
    for g in pubs.iter_mut() {
        published.merge(&g.wait_round().map_err(|e| format!("publishers: {e}"))?);
    }
    let round_cpu1 = server_cpu(c);
    let round_wall_s = (mono_ns() - start) as f64 / 1e9 + 0.3;
    let client_cpu = procfs::cpu_seconds(None).unwrap_or(0.0) - client_cpu0 + remote_cpu;
    let metrics_after = scrape_all(&targets);

    let expected: u64 = published
        .published_window
        .iter()
        .zip(&sub_conn.subs_per_topic)
        .map(|(p, s)| p * s)
        .sum();
    let published_window: u64 = published.published_window.iter().sum();
    let received = got.received_window;
    let loss = expected.saturating_sub(received);
    let dps = received as f64 / a.duration_s;
    let lat = percentiles(&got.latency, 1e3);
    let p99_ms = if got.latency.is_empty() {
        f64::INFINITY
    } else {
        got.latency.value_at_quantile(0.99) as f64 / 1e6
    };
    let server_cpu_s = match (cpu0, cpu1) {
        (Some(x), Some(y)) => Some(y - x),
        _ => None,
    };
    let metrics = match (&metrics_before, &metrics_after) {
        (Some(b), Some(af)) => {
            let d = |k: &str| af.get(k).map(|v| v - b.get(k).copied().unwrap_or(0.0));
            let p = d("tickcast_publishes_total");
            let s = d("tickcast_serializations_total");
            let (dl, w) = (d("tickcast_deliveries_total"), d("tickcast_writes_total"));
            json!({
                "publishes": p, "serializations": s,
                "deliveries": dl, "writes": w,
                // Frames coalesced per sendmsg (control frames count as writes, not deliveries).
                "deliveries_per_write": dl.zip(w).filter(|(_, w)| *w > 0.0).map(|(d, w)| round3(d / w)),
                "conflated": d("tickcast_conflated_total"),
                "dropped_oldest": d("tickcast_dropped_oldest_total"),
                "slow_consumer_closes": d("tickcast_slow_consumer_closes_total"),
                "encode_once": match (p, s) { (Some(p), Some(s)) => Some(p == s), _ => None },
            })
        }
        _ => Value::Null,
    };
    let closed: u64 = got.closed.values().sum();
    let publisher_limited = (published_window as f64) < 0.95 * rate * a.duration_s;
    let mut result = base_json("fanout", c, workers);
    let obj = result.as_object_mut().expect("object");
    let fields = json!({
        "subs": a.subs, "subs_connected": sub_conn.ok, "topics": a.topics,
        // With --stalled-pct, expected/received/loss/gaps/latency/closed are the healthy
        // subscribers' only; the stalled ones are counted here.
        "stalled_pct": a.stalled_pct, "stalled_subs": sub_conn.stalled,
        "stalled_closed": got.stalled_closed, "stalled_open_at_end": got.stalled_open,
        "topics_per_sub": a.topics_per_sub, "pubs": a.pubs, "rate": rate.round(),
        "payload": a.payload, "duration_s": a.duration_s, "warmup_s": a.warmup_s,
        "published": published_window,
        "published_per_s": round3(published_window as f64 / a.duration_s),
        "publish_skipped": published.publish_skipped,
        "expected": expected, "received": received, "loss": loss,
        "loss_pct": if expected > 0 { round3(loss as f64 * 100.0 / expected as f64) } else { 0.0 },
        "extra": received.saturating_sub(expected),
        "deliveries_per_s": dps.round(),
        "received_outside_window": got.received_outside,
        "received_untimed": got.received_untimed,
        "gaps": got.gaps, "dups": got.dups, "closed": got.closed,
        "server_errors": got.server_errors, "odd_frames": got.odd_frames,
        "latency_us": lat,
        "server_cpu_s": server_cpu_s.map(round3),
        "server_cpu_pct": server_cpu_s.map(|s| round3(s * 100.0 / a.duration_s)),
        "server_cpu_ns_per_delivery": server_cpu_s
            .filter(|_| received > 0)
            .map(|s| (s * 1e9 / received as f64).round()),
        // Whole round (warm-up, window, drain) over every frame received in it: still defined
        // when an overloaded server delivers nothing of the window in time.
        "server_cpu_s_round": round_cpu0.zip(round_cpu1).map(|(x, y)| round3(y - x)),
        "server_cpu_ns_per_delivery_round": round_cpu0
            .zip(round_cpu1)
            .filter(|_| got.received_total > 0)
            .map(|(x, y)| ((y - x) * 1e9 / got.received_total as f64).round()),
        "received_round": got.received_total,
        "client_cpu_s": round3(client_cpu),
        "client_cpu_pct": round3(client_cpu * 100.0 / round_wall_s),
        "metrics": metrics,
        "shards": sub_conn.shards,
    });
    obj.extend(fields.as_object().expect("object").clone());
    obj.insert("subs_per_url".into(), json!(sub_conn.per_target));
    obj.insert("subs_open_at_end".into(), json!(got.open_conns));
    obj.insert(
        "subs_open_per_url_at_end".into(),
        json!(got.open_per_target),
    );
    Ok(Step {
        rate,
        loss,
        p99_ms,
        closed,
        publisher_limited,
        attempts: 1,
        json: result,
    })
}

fn print_fanout(c: &Common, a: &FanoutArgs, r: &Value, conn: &ConnectStats) {
    let mut t = vec![
        (
            "scenario".into(),
            format!(
                "fanout  server={}  {}",
                c.label,
                r["date"].as_str().unwrap_or("")
            ),
        ),
        (
            "setup".into(),
            format!(
                "{} subs ({} ok) over {} topics ×{} each, {} pubs, {} msgs/s, {} B, {} s after {} s warm-up",
                a.subs,
                conn.ok,
                a.topics,
                a.topics_per_sub,
                a.pubs,
                r["rate"],
                a.payload,
                a.duration_s,
                a.warmup_s
            ),
        ),
        (
            "published".into(),
            format!(
                "{} in window ({}/s), skipped {}",
                r["published"], r["published_per_s"], r["publish_skipped"]
            ),
        ),
        (
            "deliveries".into(),
            format!(
                "expected {}  received {}  loss {} ({}%)  → {}/s",
                r["expected"], r["received"], r["loss"], r["loss_pct"], r["deliveries_per_s"]
            ),
        ),
        (
            "seq gaps / dups".into(),
            format!("{} / {}", r["gaps"], r["dups"]),
        ),
        ("latency".into(), pct_line(&r["latency_us"], "µs")),
        ("closed".into(), format!("{}", r["closed"])),
        (
            "subs per url".into(),
            format!(
                "connected {}  open at end {}",
                r["subs_per_url"], r["subs_open_per_url_at_end"]
            ),
        ),
    ];
    if conn.stalled > 0 {
        t.push((
            "stalled subscribers".into(),
            format!(
                "{} (not in the figures above): ended {}  still open {}",
                conn.stalled, r["stalled_closed"], r["stalled_open_at_end"]
            ),
        ));
    }
    if !r["server_cpu_s"].is_null() {
        t.push((
            "server CPU".into(),
            format!(
                "{} s ({}% of one core)  {} ns per delivery",
                r["server_cpu_s"], r["server_cpu_pct"], r["server_cpu_ns_per_delivery"]
            ),
        ));
        t.push((
            "server CPU, round".into(),
            format!(
                "{} s for {} frames received (warm-up + window + drain)  {} ns per delivery",
                r["server_cpu_s_round"], r["received_round"], r["server_cpu_ns_per_delivery_round"]
            ),
        ));
    }
    if !r["server_rss_after_kib"].is_null() {
        t.push((
            "server RSS".into(),
            format!(
                "before {} KiB, connected {} KiB, after {} KiB; per subscriber {} B connected, {} B after",
                r["server_rss_before_kib"],
                r["server_rss_connected_kib"],
                r["server_rss_after_kib"],
                r["server_rss_per_conn_connected_bytes"],
                r["server_rss_per_conn_after_bytes"]
            ),
        ));
    }
    t.push((
        "bench CPU".into(),
        format!("{} s ({}%)", r["client_cpu_s"], r["client_cpu_pct"]),
    ));
    t.push(("/metrics".into(), format!("{}", r["metrics"])));
    report::emit(&t, r, c.json_out.as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_be_loopback() {
        let t = parse_target("ws://127.0.0.1:9000/ws", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host, "127.0.0.1:9000");
        assert!(parse_target("ws://127.0.0.9:1/ws", false).is_ok());
        assert!(parse_target("ws://10.0.0.1:9000/ws", false).is_err());
        assert!(parse_target("http://127.0.0.1:9000/ws", false).is_err());
        assert!(
            parse_source_ips("127.0.0.1, 127.0.0.2", false)
                .unwrap()
                .len()
                == 2
        );
        assert!(parse_source_ips("192.168.1.1", false).is_err());
        let ts = parse_targets("ws://127.0.0.1:9001/ws, ws://127.0.0.1:9002/ws", false).unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1].host, "127.0.0.1:9002");
        assert!(parse_targets("ws://127.0.0.1:9001/ws,ws://10.0.0.1:1/ws", false).is_err());
        assert!(parse_targets(" , ", false).is_err());
        assert_eq!(parse_pids("12, 34").unwrap(), vec![12, 34]);
        assert!(parse_pids("").unwrap().is_empty());
        assert!(parse_pids("x").is_err());
    }

    #[test]
    fn stalled_choice_is_exact_distinct_and_seeded() {
        let a = pick_stalled(1000, 1.0, 1);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[9] < 1000);
        assert_eq!(a, pick_stalled(1000, 1.0, 1));
        assert_ne!(a, pick_stalled(1000, 1.0, 2));
        assert!(pick_stalled(1000, 0.0, 1).is_empty());
        assert_eq!(pick_stalled(10, 99.0, 1).len(), 10);
    }

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
}
