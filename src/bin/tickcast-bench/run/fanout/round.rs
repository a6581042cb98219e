//! One measured fanout round: the round plan (warm-up, window, drain), publishers started
//! after the subscribers, the servers' CPU sampled at the window's edges and `/metrics` before
//! and after, and the round's figures (expected, received, loss, latency, CPU per delivery)
//! gathered into a [`Step`].

use std::time::Duration;

use serde_json::{Value, json};

use super::{FanoutArgs, Step};
use crate::{
    engine::mono_ns,
    group::Group,
    plan::{Dialect, Dialects, PublishPlan, RoundPlan},
    procfs,
    report::{percentiles, round3},
    run::{
        Common, Res, base_json,
        server::{scrape_all, server_cpu},
    },
    stats::{ConnectStats, RoundStats},
};

/// The per-format deltas of `tickcast_serializations_total` (formats present in the scrape).
fn serializations_by_format(
    d: &dyn Fn(&str) -> Option<f64>,
) -> std::collections::BTreeMap<&'static str, f64> {
    ["v1", "centrifugo", "binance_raw", "binance_combined"]
        .into_iter()
        .filter_map(|f| {
            let v = d(&format!("tickcast_serializations_total{{format=\"{f}\"}}"))?;
            Some((f, v))
        })
        .collect()
}

fn sleep_until(t_ns: u64) {
    let now = mono_ns();
    if t_ns > now {
        std::thread::sleep(Duration::from_nanos(t_ns - now));
    }
}

pub(super) fn fanout_round(
    c: &Common,
    a: &FanoutArgs,
    subs: &mut [Group],
    pubs: &mut [Group],
    sub_conn: &ConnectStats,
    rate: f64,
    workers: usize,
) -> Res<Step> {
    let metrics_before = scrape_all(c);
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
        market: a.market,
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
    let metrics_after = scrape_all(c);

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
                // permessage-deflate: compressions per published message (compress once: ≤ 1
                // per window size in use).
                "compressions": d("tickcast_compressions_total"),
                "compressions_per_publish": d("tickcast_compressions_total")
                    .zip(p).filter(|(_, p)| *p > 0.0).map(|(c, p)| round3(c / p)),
                "dropped_oldest": d("tickcast_dropped_oldest_total"),
                // --filters: distinct filters evaluated, data parsed for them, per publish.
                "filter_evaluations": d("tickcast_filter_evaluations_total"),
                "filter_evaluations_per_publish": d("tickcast_filter_evaluations_total")
                    .zip(p).filter(|(_, p)| *p > 0.0).map(|(e, p)| round3(e / p)),
                "filter_parses_per_publish": d("tickcast_filter_parses_total")
                    .zip(p).filter(|(_, p)| *p > 0.0).map(|(e, p)| round3(e / p)),
                "slow_consumer_closes": d("tickcast_slow_consumer_closes_total"),
                "encode_once": match (p, s) { (Some(p), Some(s)) => Some(p == s), _ => None },
                // Encode once per format: serializations of each format per publish (1.000
                // for every format with a subscriber; v1 always, the owner builds it).
                "serializations_by_format": serializations_by_format(&d),
                "serializations_per_publish_by_format": p.filter(|p| *p > 0.0).map(|p| {
                    serializations_by_format(&d)
                        .into_iter()
                        .map(|(f, s)| (f, round3(s / p)))
                        .collect::<std::collections::BTreeMap<_, _>>()
                }),
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
    let wire = json!({
        // What crossed the wire: every byte the bench's sockets read in the round (warm-up,
        // window, drain; frame headers and control frames included) per data frame received
        // in it, and the data frames' payload after inflating, per frame.
        "deflate_agreed": sub_conn.deflate_agreed,
        "deflate_context_takeover": sub_conn.deflate_context_takeover,
        "wire_bytes_round": got.wire_bytes,
        "wire_bytes_per_delivery": (got.received_total > 0)
            .then(|| round3(got.wire_bytes as f64 / got.received_total as f64)),
        "payload_bytes_per_delivery": (got.received_total > 0)
            .then(|| round3(got.payload_bytes as f64 / got.received_total as f64)),
        "inflations": got.inflations,
        "compressed_pct": (got.received_total > 0)
            .then(|| round3(got.compressed_frames as f64 * 100.0 / got.received_total as f64)),
        "data": if a.market { "market" } else { "pad" },
    });
    obj.extend(wire.as_object().expect("object").clone());
    let dialect = json!({
        // --dialect: what the subscribers spoke, what each dialect received of the window,
        // and which frames were checked for gaps (Binance streams carry no seq).
        "dialect": a.dialects.name(),
        "filters": a.filters,
        "filters_in_blocks": a.filters_in_blocks,
        "received_by_dialect": Dialect::ALL
            .iter()
            .filter(|d| a.dialects == Dialects::Mixed || a.dialects.of(0) == **d)
            .map(|d| (d.name(), got.received_by_dialect[*d as usize]))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "received_no_seq": got.received_no_seq,
        // WebSocket pings and Centrifugo `{}` pings answered during the round.
        "pings_answered": got.pings_answered,
        "gap_check": match a.dialects {
            Dialects::V1 | Dialects::Centrifugo => "all",
            Dialects::Binance => "none: binance frames carry no seq (counted only)",
            Dialects::Mixed => {
                "v1 and centrifugo subscribers only: binance frames carry no seq (counted only)"
            }
        },
    });
    obj.extend(dialect.as_object().expect("object").clone());
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
