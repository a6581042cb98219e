#!/usr/bin/env python3
"""Medians of repeated scenario runs, as Markdown tables.

Usage: perf/summarize.py reports/<run>/*.jsonl

Reads the JSON lines tickcast-bench and perf/floor append, groups runs of the same scenario,
server and parameters, and prints the median of each figure with the number of runs. Ratios
(tickcast / baseline, tickcast / floor) are computed from those medians.
"""

import json
import statistics
import sys
from collections import defaultdict


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def group(rows, key):
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return groups


def connect_table(rows):
    out = ["| server | runs | connected | connects/s | connect p99 (ms) | RSS per connection (B) |",
           "|---|---|---|---|---|---|"]
    for (server, n), rs in sorted(group(rows, lambda r: (r["server"], r["n"])).items()):
        out.append("| {} | {} | {}/{} | {} | {} | {} |".format(
            server, len(rs), fmt(median([r["ok"] for r in rs])), n,
            fmt(median([r["connects_per_s"] for r in rs])),
            fmt(median([r["connect_latency_ms"]["p99"] for r in rs]), 1),
            fmt(median([r.get("rss_per_conn_bytes") for r in rs]))))
    return out


def fanout_key(r):
    return (r.get("subs"), r.get("topics"), r.get("topics_per_sub", 1), r.get("rate"), r.get("payload"))


def fanout_table(rows):
    out = ["| subs × topics (per sub) | rate msgs/s | server | runs | deliveries/s | loss % | seq gaps "
           "| p50 ms | p99 ms | server CPU % | CPU ns/delivery (window) | CPU ns/frame (whole round) "
           "| encode once |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (key, server), rs in sorted(group(rows, lambda r: (fanout_key(r), r["server"])).items(),
                                    key=lambda kv: (str(kv[0][0]), kv[0][1])):
        subs, topics, per, rate, _ = key
        lat = [r.get("latency_us") or {} for r in rs]
        enc = {r.get("metrics", {}).get("encode_once") for r in rs if r.get("metrics")}
        out.append("| {} × {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            fmt(subs), topics, per, fmt(rate), server, len(rs),
            fmt(median([r.get("deliveries_per_s") for r in rs])),
            fmt(median([r.get("loss_pct") for r in rs]), 2),
            fmt(median([r.get("gaps") for r in rs])),
            fmt(median([l.get("p50") / 1000 if l.get("p50") else None for l in lat]), 2),
            fmt(median([l.get("p99") / 1000 if l.get("p99") else None for l in lat]), 2),
            fmt(median([r.get("server_cpu_pct") for r in rs]), 1),
            fmt(median([r.get("server_cpu_ns_per_delivery") for r in rs])),
            fmt(median([r.get("server_cpu_ns_per_delivery_round") for r in rs])),
            "yes" if enc == {True} else ("no" if False in enc else "–")))
    return out


def spread(values, digits=0):
    """median [min–max] of the runs: how noisy a figure was."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(statistics.median(values), digits)} [{fmt(min(values), digits)}–{fmt(max(values), digits)}]"


def variant_table(rows):
    """Runs labelled `server/variant` (batching.sh, stalled.sh): one line per shape and variant.

    Loss, latency and closes are the healthy subscribers' (the bench leaves --stalled-pct
    subscribers out of them); the last columns say how the stalled ones ended.
    """
    out = ["| subs × topics (per sub) | rate msgs/s | variant | runs | CPU ns/delivery (window) | deliveries/write "
           "| p50 ms | p99 ms | loss % | seq gaps | healthy closed | server CPU % | stalled subs "
           "| stalled: ended / open at end (bench) | slow-consumer closes | conflated |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: (r.get("subs"), r.get("topics"), r.get("topics_per_sub", 1), r.get("rate"), r["server"])
    for (subs, topics, per, rate, server), rs in sorted(group(rows, key).items(), key=lambda kv: str(kv[0])):
        lat = [r.get("latency_us") or {} for r in rs]
        m = [r.get("metrics") or {} for r in rs]
        ended = defaultdict(list)
        for r in rs:
            for k, v in (r.get("stalled_closed") or {}).items():
                ended[k].append(v)
        ended_s = " ".join(f"{k} {fmt(median(v))}" for k, v in sorted(ended.items()))
        if any(r.get("stalled_subs") for r in rs):
            ended_s += f" open {fmt(median([r.get('stalled_open_at_end') for r in rs]))}"
        ended_s = ended_s.strip() or "–"
        out.append("| {} × {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            fmt(subs), topics, per, fmt(rate), server.split("/", 1)[1], len(rs),
            spread([r.get("server_cpu_ns_per_delivery") for r in rs]),
            fmt(median([x.get("deliveries_per_write") for x in m]), 2),
            spread([l.get("p50") / 1000 if l.get("p50") else None for l in lat], 2),
            spread([l.get("p99") / 1000 if l.get("p99") else None for l in lat], 2),
            fmt(median([r.get("loss_pct") for r in rs]), 3),
            fmt(median([r.get("gaps") for r in rs])),
            fmt(median([sum((r.get("closed") or {}).values()) for r in rs])),
            fmt(median([r.get("server_cpu_pct") for r in rs]), 1),
            fmt(median([r.get("stalled_subs", 0) for r in rs])),
            ended_s,
            fmt(median([x.get("slow_consumer_closes") for x in m])),
            fmt(median([x.get("conflated") for x in m]))))
    return out


def max_rate_shape(r):
    """(subs, topics, per sub, data) of a --max-rate line; older lines carry it in `best` only."""
    src = r if "subs" in r else (r.get("best") or {})
    return (src.get("subs"), src.get("topics"), src.get("topics_per_sub", 1), src.get("data", "pad"))


def max_rate_table(rows):
    out = ["| subs × topics (per sub), data | server | runs | max sustainable msgs/s | deliveries/s "
           "| p99 ms there | CPU ns/delivery there | first failing step | p99 bound ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    keyed = group(rows, lambda r: (max_rate_shape(r), r["server"]))
    for ((subs, topics, per, data), server), rs in sorted(keyed.items(), key=lambda kv: str(kv[0])):
        best = [r.get("best") or {} for r in rs]
        failing = []
        for r in rs:
            f = r.get("first_failing")
            if not f:
                failing.append("none (step limit)")
            elif f.get("loss"):
                failing.append(f"{f['rate']:,.0f}/s: loss {f['loss']:,}")
            elif f.get("publisher_limited"):
                failing.append(f"{f['rate']:,.0f}/s: publisher limited")
            else:
                failing.append(f"{f['rate']:,.0f}/s: p99 {f['latency_us']['p99'] / 1e3:,.0f} ms")
        out.append("| {} × {} ({}), {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            fmt(subs), fmt(topics), per, data, server, len(rs),
            fmt(median([r.get("max_sustainable_rate") for r in rs])),
            fmt(median([r.get("max_sustainable_deliveries_per_s") for r in rs])),
            fmt(median([b.get("latency_us", {}).get("p99", 0) / 1e3 if b else None for b in best]), 1),
            fmt(median([b.get("server_cpu_ns_per_delivery") for b in best])),
            "; ".join(failing), fmt(rs[0].get("p99_bound_ms"))))
    return out


def floor_table(rows):
    out = ["| sockets | frames per write | runs | writer CPU ns/write | writer CPU ns/frame "
           "| total CPU ns/frame | frames/s |", "|---|---|---|---|---|---|---|"]
    for (n, batch), rs in sorted(group(rows, lambda r: (r["n"], r["batch"])).items()):
        out.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            fmt(n), batch, len(rs), fmt(median([r["writer_cpu_ns_per_write"] for r in rs])),
            fmt(median([r["writer_cpu_ns_per_frame"] for r in rs])),
            fmt(median([r["total_cpu_ns_per_frame"] for r in rs])),
            fmt(median([r["frames_per_s"] for r in rs]))))
    return out


def ratios(rows):
    """tickcast / baseline and tickcast / floor, from medians.

    CPU per delivery uses the whole-round figure (server CPU over warm-up, window and drain,
    divided by every data frame received): an overloaded server that delivers little inside the
    window would otherwise look arbitrarily expensive per delivery.
    """
    out = ["| figure | tickcast | other | tickcast / other |", "|---|---|---|---|"]
    fan = [r for r in rows if r.get("scenario") == "fanout" and "/" not in r["server"]]
    for key, rs in sorted(group(fan, fanout_key).items(), key=lambda kv: str(kv[0])):
        by = group(rs, lambda r: r["server"])
        for other in sorted(set(by) - {"tickcast"}):
            if "tickcast" not in by:
                continue
            t = median([r.get("server_cpu_ns_per_delivery_round") for r in by["tickcast"]])
            b = median([r.get("server_cpu_ns_per_delivery_round") for r in by[other]])
            if t and b:
                out.append(f"| CPU ns/frame vs {other}: {key[0]} subs × {key[1]} topics ({key[2]}) at "
                           f"{key[3]:.0f} msgs/s | {t:,.0f} | {b:,.0f} | {t / b:.2f} |")
    floor = {(r["n"], r["batch"]): r for r in rows if r.get("scenario") == "floor"}
    floor_ns = {k: median([r["writer_cpu_ns_per_write"] for r in rows
                           if r.get("scenario") == "floor" and (r["n"], r["batch"]) == k]) for k in floor}
    for key, rs in sorted(group(fan, fanout_key).items(), key=lambda kv: str(kv[0])):
        t = median([r.get("server_cpu_ns_per_delivery_round") for r in rs if r["server"] == "tickcast"])
        n = 10_000 if key[0] >= 5_000 else 1_000
        f = floor_ns.get((n, 1))
        if t and f:
            out.append(f"| CPU ns/frame vs floor (1 frame per write, {n:,} sockets): {key[0]} subs × "
                       f"{key[1]} topics ({key[2]}) at {key[3]:.0f} msgs/s | {t:,.0f} | {f:,.0f} | {t / f:.2f} |")
    con = group([r for r in rows if r.get("scenario") == "connect"], lambda r: r["server"])
    for other in sorted(set(con) - {"tickcast"}):
        if "tickcast" not in con:
            continue
        t = median([r.get("rss_per_conn_bytes") for r in con["tickcast"]])
        b = median([r.get("rss_per_conn_bytes") for r in con[other]])
        if t and b:
            out.append(f"| RSS per idle connection (B) vs {other} | {t:,.0f} | {b:,.0f} | {t / b:.4f} |")
    return out


def main():
    rows = load(sys.argv[1:])
    sections = [
        ("Connections (connect-19k)", connect_table([r for r in rows if r.get("scenario") == "connect"])),
        ("Fan-out (fanout-1topic, fanout-10topics, market-data)",
         fanout_table([r for r in rows if r.get("scenario") == "fanout" and "/" not in r["server"]])),
        ("Delivery variants (batching, stalled): median [min–max] of the runs",
         variant_table([r for r in rows if r.get("scenario") == "fanout" and "/" in r["server"]])),
        ("Max sustainable rate (max-throughput)",
         max_rate_table([r for r in rows if r.get("scenario") == "fanout-max-rate"])),
        ("Floor (perf/floor)", floor_table([r for r in rows if r.get("scenario") == "floor"])),
        ("Ratios (medians)", ratios(rows)),
    ]
    for title, table in sections:
        if len(table) > 2:
            print(f"### {title}\n")
            print("\n".join(table))
            print()


if __name__ == "__main__":
    main()
