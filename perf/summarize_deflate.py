#!/usr/bin/env python3
"""The permessage-deflate tables of perf/README.md, from the JSON lines of perf/scenarios/deflate.sh.

Usage: perf/summarize_deflate.py perf/results/2026-12-05/deflate.jsonl

Fanout runs are grouped by shape (subscribers, topics, topics per subscriber, rate) and server
label (`tickcast`, `tickcast/deflate`, `baseline/deflate`, ...). Each cell is the median over the
runs, with [min–max] when there were several. "× plain" is the variant's median server CPU per
delivery over the same server's plain median, same shape, same run; "× tickcast" over tickcast
plain's. Connect runs give RSS per idle subscribed connection.
"""

import json
import statistics
import sys
from collections import defaultdict

from summarylib import cell


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def load(paths):
    rows = []
    for p in paths:
        with open(p) as fh:
            rows += [json.loads(l) for l in fh if l.startswith("{")]
    return rows


def fanout(rows):
    shapes = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["scenario"] != "fanout":
            continue
        key = (r["subs"], r["topics"], r["topics_per_sub"], r["rate"])
        shapes[key][r["server"]].append(r)
    out = [
        "| shape | server | runs | CPU ns/delivery | × plain | + ns vs plain | × tickcast plain | wire B/delivery "
        "| payload B/delivery | deliveries/s | loss % | p99 ms | compressions / publish "
        "| server CPU % | RSS/sub after (B) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = lambda s: (s.split("/")[0] != "tickcast", s.split("/")[0], "/" in s)
    for key in sorted(shapes, key=lambda k: (-k[0], -k[3])):
        subs, topics, per_sub, rate = key
        by = shapes[key]
        shape = f"{subs:,} × {topics} ({per_sub}) at {rate:,.0f}/s"
        cpu = lambda s: med([r.get("server_cpu_ns_per_delivery") for r in by.get(s, [])])
        tc_plain = cpu("tickcast")
        for server in sorted(by, key=order):
            rs = by[server]
            plain = cpu(server.split("/")[0])
            mine = cpu(server)
            ratio = lambda a, b: f"{a / b:.2f}" if a and b else "–"
            comps = [
                (r.get("metrics") or {}).get("compressions_per_publish") for r in rs
            ]
            out.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    shape, server, len(rs),
                    cell([r.get("server_cpu_ns_per_delivery") for r in rs]),
                    ratio(mine, plain),
                    f"{mine - plain:+,.0f}" if mine is not None and plain is not None else "–",
                    ratio(mine, tc_plain),
                    cell([r.get("wire_bytes_per_delivery") for r in rs], 1),
                    cell([r.get("payload_bytes_per_delivery") for r in rs], 1),
                    cell([r.get("deliveries_per_s") for r in rs]),
                    cell([r.get("loss_pct") for r in rs], 2),
                    cell([(r.get("latency_us") or {}).get("p99", 0) / 1e3 if r.get("latency_us") else None for r in rs], 1),
                    cell(comps, 3) if any(c is not None for c in comps) else "–",
                    cell([r.get("server_cpu_pct") for r in rs], 1),
                    cell([r.get("server_rss_per_conn_after_bytes") for r in rs]),
                )
            )
    return out


def connect(rows):
    out = [
        "| server | runs | connected | RSS per idle connection (B) | connects/s |",
        "|---|---|---|---|---|",
    ]
    by = defaultdict(list)
    for r in rows:
        if r["scenario"] == "connect":
            by[r["server"]].append(r)
    for server in sorted(by):
        rs = by[server]
        out.append("| {} | {} | {} | {} | {} |".format(
            server, len(rs), cell([r["ok"] for r in rs]),
            cell([r.get("rss_per_conn_bytes") for r in rs]),
            cell([r.get("connects_per_s") for r in rs])))
    return out


if __name__ == "__main__":
    rows = load(sys.argv[1:])
    print("\n".join(fanout(rows)))
    print()
    print("\n".join(connect(rows)))
