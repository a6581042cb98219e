#!/usr/bin/env python3
"""The dialect tables of perf/README.md, from the JSON lines of perf/scenarios/dialects.sh.

Usage: perf/summarize_dialects.py perf/results/2026-12-05/dialects.jsonl [MORE.jsonl ...]

Fanout runs are grouped by shape (subscribers, topics, rate), A/B apart, and label: `tickcast/v1`,
`tickcast/centrifugo`, `tickcast/binance`, `tickcast/mixed` (one server process per shape),
and the A/B's `v1@old` / `v1@new` (or whatever OLD_LABEL / NEW_LABEL were). Each cell is the
median over the runs, [min–max] when there were several. "frames/write" is
tickcast_deliveries_total over tickcast_writes_total (frames coalesced per sendmsg), "CPU
ns/write" the server's CPU in the whole round over those writes: where frames coalesce
(1k subscribers at high rates) CPU per delivery follows frames per write, which depends on
timing, so compare both. "× ref" is the variant's median server
CPU per delivery over the reference's median (tickcast/v1 for the dialects, the old build for
the A/B); "× ref, per round" pairs the k-th run of a variant with the k-th run of the
reference in the same file (the same round of the script) and gives the median [min–max] of
those ratios. "ser./publish" is tickcast_serializations_total per format over
tickcast_publishes_total in the round (1.000 = encoded once per publish in that format); only
formats with a non-zero count are shown.
"""

import json
import statistics
import sys
from collections import defaultdict

from summarylib import cell

FORMAT_SHORT = {"v1": "v1", "centrifugo": "cf", "binance_combined": "bn", "binance_raw": "bn-raw"}


def load(paths):
    rows = []
    for fi, p in enumerate(paths):
        with open(p) as fh:
            for l in fh:
                if l.startswith("{"):
                    r = json.loads(l)
                    r["_file"] = fi
                    rows.append(r)
    return rows


def reference(labels):
    if "tickcast/v1" in labels:
        return "tickcast/v1"
    olds = [l for l in labels if l.endswith("@old") or "142bdb1" in l]
    return olds[0] if olds else None


def order(label):
    known = ["tickcast/v1", "tickcast/centrifugo", "tickcast/binance", "tickcast/mixed"]
    return (known.index(label) if label in known else 10, not label.endswith("old"), label)


def ser_per_publish(r):
    m = r.get("metrics") or {}
    by = m.get("serializations_per_publish_by_format") or {}
    parts = [f"{FORMAT_SHORT.get(k, k)} {v:.3f}" for k, v in sorted(by.items(), key=lambda kv: list(FORMAT_SHORT).index(kv[0]) if kv[0] in FORMAT_SHORT else 9) if v]
    return ", ".join(parts) if parts else "–"


def per_write(r):
    """Server CPU of the whole round (warm-up, window, drain) per sendmsg in it (/metrics)."""
    w = (r.get("metrics") or {}).get("writes")
    c = r.get("server_cpu_s_round")
    return c * 1e9 / w if w and c is not None else None


def table(rows):
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("scenario") != "fanout":
            continue
        kind = "A/B" if r["server"].startswith("v1@") else "dialects"
        groups[(r["subs"], r["topics"], r["rate"], kind)][r["server"]].append(r)
    out = [
        "| shape | subscribers | runs | CPU ns/delivery | × ref | × ref, per round | deliveries/s "
        "| frames/write | CPU ns/write | loss % | gaps | p50 ms | p99 ms | ser./publish by format | server CPU % | bench CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (k[3] == "A/B", k[0], -k[2])):
        subs, topics, rate, kind = key
        by = groups[key]
        ref = reference(by)
        cpu = lambda rs: [r.get("server_cpu_ns_per_delivery") for r in rs]
        ref_med = statistics.median([v for v in cpu(by[ref]) if v]) if ref else None
        shape = f"{subs:,} × {topics} at {rate:,.0f}/s ({subs // topics * rate:,.0f} deliveries/s)"
        if kind == "A/B":
            shape += ", A/B"
        for label in sorted(by, key=order):
            rs = by[label]
            mine = [v for v in cpu(rs) if v]
            ratio = f"{statistics.median(mine) / ref_med:.3f}" if mine and ref_med else "–"
            paired = []
            if ref:
                refs_by_file = defaultdict(list)
                for r in by[ref]:
                    refs_by_file[r["_file"]].append(r)
                seen = defaultdict(int)
                for r in rs:
                    k = seen[r["_file"]]
                    seen[r["_file"]] += 1
                    peers = refs_by_file[r["_file"]]
                    if k < len(peers) and r.get("server_cpu_ns_per_delivery") and peers[k].get("server_cpu_ns_per_delivery"):
                        paired.append(r["server_cpu_ns_per_delivery"] / peers[k]["server_cpu_ns_per_delivery"])
            sers = sorted({ser_per_publish(r) for r in rs})
            out.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    shape,
                    label,
                    len(rs),
                    cell(mine),
                    ratio,
                    cell(paired, 3) if label != ref else "1",
                    cell([r.get("deliveries_per_s") for r in rs]),
                    cell([(r.get("metrics") or {}).get("deliveries_per_write") for r in rs], 2),
                    cell([per_write(r) for r in rs]),
                    cell([r.get("loss_pct") for r in rs], 2),
                    cell([r.get("gaps") for r in rs]) + (" (no seq)" if rs[0].get("dialect") == "binance" else ""),
                    cell([(r.get("latency_us") or {}).get("p50") / 1e3 if r.get("latency_us") else None for r in rs], 2),
                    cell([(r.get("latency_us") or {}).get("p99") / 1e3 if r.get("latency_us") else None for r in rs], 1),
                    "; ".join(sers),
                    cell([r.get("server_cpu_pct") for r in rs], 1),
                    cell([r.get("client_cpu_pct") for r in rs], 1),
                )
            )
    return out


if __name__ == "__main__":
    print("\n".join(table(load(sys.argv[1:]))))
