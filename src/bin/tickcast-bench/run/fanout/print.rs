//! The fanout reports: one round as a table and a JSON line, and the `--max-rate` summary
//! (every step, the best passing rate, the first failing step).

use serde_json::{Value, json};

use super::{FanoutArgs, Step};
use crate::{
    report::{self, pct_line},
    run::{Common, base_json},
    stats::ConnectStats,
};

pub(super) fn print_fanout(c: &Common, a: &FanoutArgs, r: &Value, conn: &ConnectStats) {
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
            "dialect".into(),
            format!(
                "{}  received in window by dialect {}",
                r["dialect"].as_str().unwrap_or(""),
                r["received_by_dialect"]
            ),
        ),
        (
            "seq gaps / dups".into(),
            format!(
                "{} / {}  (checked: {}; {} frames without seq)",
                r["gaps"],
                r["dups"],
                r["gap_check"].as_str().unwrap_or(""),
                r["received_no_seq"]
            ),
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
    if a.filters > 0 {
        let m = &r["metrics"];
        t.push((
            "filters".into(),
            format!(
                "{} distinct  evaluated {} per publish  data parsed {} per publish",
                a.filters, m["filter_evaluations_per_publish"], m["filter_parses_per_publish"]
            ),
        ));
    }
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
        "wire bytes".into(),
        format!(
            "{} per delivery ({} payload bytes after inflate; {}% compressed; deflate agreed on {} subs, {} keeping context)",
            r["wire_bytes_per_delivery"],
            r["payload_bytes_per_delivery"],
            r["compressed_pct"],
            r["deflate_agreed"],
            r["deflate_context_takeover"]
        ),
    ));
    t.push((
        "bench CPU".into(),
        format!("{} s ({}%)", r["client_cpu_s"], r["client_cpu_pct"]),
    ));
    t.push(("/metrics".into(), format!("{}", r["metrics"])));
    report::emit(&t, r, c.json_out.as_deref());
}

/// The `--max-rate` summary: each step's figures, the highest rate that passed, and the first
/// step that failed.
pub(super) fn print_max_rate(
    c: &Common,
    a: &FanoutArgs,
    done: &[Step],
    workers: usize,
    passes: impl Fn(&Step) -> bool,
) {
    let passing = |s: &&Step| passes(s);
    let best = done.iter().rev().find(passing);
    let mut result = base_json("fanout-max-rate", c, workers);
    let obj = result.as_object_mut().expect("object");
    obj.insert("p99_bound_ms".into(), json!(a.p99_bound_ms));
    // The shape, also when no step passed (then `best` is null and carries none of it).
    obj.insert("subs".into(), json!(a.subs));
    obj.insert("topics".into(), json!(a.topics));
    obj.insert("topics_per_sub".into(), json!(a.topics_per_sub));
    obj.insert("pubs".into(), json!(a.pubs));
    obj.insert("payload".into(), json!(a.payload));
    obj.insert(
        "data".into(),
        json!(if a.market { "market" } else { "pad" }),
    );
    obj.insert("start_rate".into(), json!(a.rate));
    obj.insert("rate_step".into(), json!(a.rate_step));
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
    for s in done {
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
