//! The `fanout` scenario: subscribers over K topics and paced publishers, then one measured
//! round; with `--max-rate`, rounds at rising rates until one fails (loss, p99 over the bound,
//! closed connections, or a publisher that cannot keep the rate), a failing step tried again
//! up to `--step-retries` times. One round is measured in `fanout/round.rs`; the text and JSON
//! reports are written in `fanout/print.rs`.

mod print;
mod round;

use serde_json::{Value, json};

use super::{
    CONNS_MAX, Common, DURATION_S_MAX, PAYLOAD_BYTES_MAX, PUBLISHERS_MAX, RATE_MAX, Res, STEPS_MAX,
    TOPICS_MAX, WARMUP_S_MAX,
    flags::parse_targets,
    kinds,
    server::server_rss,
    spread::{Spread, plan_groups, start_groups, wait_connected, worker_processes},
};
use crate::{
    engine::mono_ns,
    group::{Group, GroupPlan, watchdog},
    plan::{Dialects, ThreadPlan, Topics},
    procfs,
};
use print::{print_fanout, print_max_rate};
use round::fanout_round;

pub struct FanoutArgs {
    pub subs: u64,
    pub topics: u32,
    pub topics_per_sub: u32,
    pub pubs: u64,
    pub rate: f64,
    pub payload: usize,
    /// `--data market`: demo-feed-like JSON (market.rs) instead of padding.
    pub market: bool,
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
    /// What the subscribers speak (`--dialect`); publishers speak protocol v1.
    pub dialects: Dialects,
    /// Distinct subscription filters over the v1 subscribers (`--filters`).
    pub filters: u32,
    /// `--filters-in-blocks`: a filter's subscribers are consecutive connections.
    pub filters_in_blocks: bool,
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
        dialects: a.dialects,
        filters: a.filters,
        filter_block: if a.filters_in_blocks && a.filters > 0 {
            (a.subs / u64::from(a.filters)).max(1)
        } else {
            0
        },
    };
    let rss_before = server_rss(c);
    let sub_plans = plan_groups(c, &targets, spread)?;
    let workers = worker_processes(&sub_plans);
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
            deflate: c.deflate,
            tls_ca: c.tls_ca.clone(),
            dialects: Dialects::V1,
            filters: 0,
            filter_block: 0,
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
        print_max_rate(c, a, &done, workers, passes);
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
    // Per subscribed connection: all of RSS (VmRSS), and its anonymous part (RssAnon: the heap
    // and stacks). The rest is file-backed, mostly the binary's code paged in the first time a
    // path runs (~0.65 MB for the first connection's handshake and delivery paths on tickcast),
    // which no number of connections adds to again.
    let per_conn = |m: Option<procfs::Mem>, field: fn(&procfs::Mem) -> u64| match (before, m) {
        (Some(b), Some(m)) if subs_ok > 0 => {
            Some(((field(&m) as f64 - field(&b) as f64) / subs_ok as f64).round())
        }
        _ => None,
    };
    let all: fn(&procfs::Mem) -> u64 = |m| m.vm_rss_bytes;
    let anon: fn(&procfs::Mem) -> u64 = |m| m.rss_anon_bytes;
    let obj = s.json.as_object_mut().expect("object");
    obj.insert("server_rss_before_kib".into(), json!(kib(before)));
    obj.insert("server_rss_connected_kib".into(), json!(kib(connected)));
    obj.insert("server_rss_after_kib".into(), json!(kib(after)));
    let per_conn_fields = [
        ("server_rss_per_conn_connected_bytes", connected, all),
        ("server_rss_per_conn_after_bytes", after, all),
        ("server_rss_anon_per_conn_connected_bytes", connected, anon),
        ("server_rss_anon_per_conn_after_bytes", after, anon),
    ];
    for (name, m, field) in per_conn_fields {
        obj.insert(name.into(), json!(per_conn(m, field)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
