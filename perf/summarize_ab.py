#!/usr/bin/env python3
"""The main figures of A/B runs (perf/scenarios/ab.sh), one line per label and figure, the runs
in the order they ran: RSS per connection and connects/s (connect), server CPU ns per delivery,
deliveries per write and loss (fanout).

    perf/summarize_ab.py RESULTS.jsonl
"""
import json
import sys

FIGURES = [
    ("connect", lambda r: r.get("rss_per_conn_bytes"), "B/conn", 0),
    ("connect", lambda r: r.get("rss_anon_per_conn_bytes"), "B anon/conn", 0),
    ("connect", lambda r: r.get("connects_per_s"), "conn/s", 0),
    ("fanout", lambda r: r.get("server_cpu_ns_per_delivery"), "ns/delivery", 0),
    ("fanout", lambda r: (r.get("metrics") or {}).get("deliveries_per_write"), "deliveries/write", 1),
    ("fanout", lambda r: r.get("loss"), "lost", 0),
]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    for scenario, figure, unit, decimals in FIGURES:
        for label in sorted({r["server"] for r in rows}):
            runs = [r for r in rows if r["server"] == label and r["scenario"] == scenario]
            if runs:
                shapes = sorted({f'{r.get("subs", r.get("n"))}' for r in runs})
                values = ", ".join("-" if figure(r) is None else f"{figure(r):.{decimals}f}" for r in runs)
                print(f"{label:<28} {scenario:<8} {'/'.join(shapes):<12} {unit:<17} {values}")


if __name__ == "__main__":
    main(sys.argv[1])
