//! The `connect` scenario: open N subscribed connections (at a rate, or as fast as they come),
//! hold them while answering pings, and report connects per second, connect latency, failures,
//! what survived the hold, and the server's RSS per connection.

use serde_json::json;

use super::{
    CONNS_MAX, Common, HOLD_S_MAX, Res, base_json,
    flags::parse_targets,
    kinds,
    server::server_rss,
    spread::{Spread, plan_groups, run_round, start_groups, wait_connected, worker_processes},
};
use crate::{
    engine::mono_ns,
    group::watchdog,
    plan::{Dialects, RoundPlan, Topics},
    procfs,
    report::{self, pct_line, percentiles, round3},
};

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
        dialects: Dialects::V1,
        filters: 0,
        filter_block: 0,
    };
    let plans = plan_groups(c, &targets, spread)?;
    let workers = worker_processes(&plans);
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
    // Anonymous memory only (heap, stacks): the total also counts the pages of the binary's
    // code that connecting touches for the first time, which grow with the code, not with
    // the connections.
    let anon_per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if conn.ok > 0 => {
            Some((a.rss_anon_bytes as f64 - b.rss_anon_bytes as f64) / conn.ok as f64)
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
        "rss_anon_before_kib": rss_before.map(|m| m.rss_anon_bytes / 1024),
        "rss_anon_after_kib": rss_after.map(|m| m.rss_anon_bytes / 1024),
        "rss_anon_per_conn_bytes": anon_per_conn.map(|x| x.round()),
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
            format!(
                "{} B  (anonymous memory only: {} B)",
                result["rss_per_conn_bytes"], result["rss_anon_per_conn_bytes"]
            ),
        ));
    }
    report::emit(&t, &result, c.json_out.as_deref());
    Ok(())
}
