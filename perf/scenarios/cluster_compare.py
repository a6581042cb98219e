#!/usr/bin/env python3
"""The comparison table of perf/scenarios/cluster-vs-single.sh: one line per run
(round-R-VARIANT/summary.json), then per round the cluster's ratios against the single node
(and against the one-node NATS cluster). Writes OUT/compare.jsonl.

Usage: python3 perf/scenarios/cluster_compare.py OUT_DIR
"""
import json
import os
import re
import sys


def main():
    d = sys.argv[1]
    runs = []
    for name in sorted(os.listdir(d)):
        m = re.fullmatch(r"round-(\d+)-(\w+?)(?:-(\w+))?", name)
        path = os.path.join(d, name, "summary.json")
        if not m or not os.path.exists(path):
            continue
        with open(path) as f:
            s = json.load(f)
        w = s.get("window") or {}
        nodes = w.get("nodes") or {}
        threads = w.get("node_threads") or {}
        lat = s.get("latency_ms") or {}
        runs.append({
            "round": int(m.group(1)), "variant": m.group(2), "build": m.group(3) or "",
            "date": s.get("date"),
            "commit": s.get("commit"), "nodes": s.get("nodes"), "subs": s.get("subs_connected"),
            "rate": s.get("rate"), "deliveries_per_s": s.get("deliveries_per_s"),
            "loss": s.get("loss"), "gaps": s.get("gaps"),
            "cpu_ns_per_delivery": s.get("nodes_cpu_ns_per_delivery"),
            "sched_cpu_ns_per_delivery": nodes.get("cpu_ns_per_delivery"),
            "shard_ns_per_delivery": (threads.get("shard") or {}).get("cpu_ns_per_delivery"),
            "bridge_ns_per_delivery": (threads.get("bridge") or {}).get("cpu_ns_per_delivery"),
            "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
            "max_ms": lat.get("max"),
            "frames_per_write": s.get("frames_per_write"),
            "ctx_per_1k_deliveries": nodes.get("ctx_switches_per_1k_deliveries"),
            "runq_wait_us_per_slice": nodes.get("runq_wait_us_per_slice"),
            "cpu_us_per_slice": nodes.get("cpu_us_per_slice"),
            "nodes_runq_wait_s": nodes.get("runq_wait_s"),
            "nodes_cpu_s": nodes.get("cpu_s"),
            "bench_cpu_s": (w.get("bench") or {}).get("cpu_s"),
            "broker_cpu_s": (w.get("broker") or {}).get("cpu_s"),
            "machine_busy_cores": w.get("machine_busy_cores"),
            "other_work_s": w.get("other_work_s"),
        })
    cols = [("round", "round"), ("variant", "variant"), ("build", "build"), ("deliveries/s", "deliveries_per_s"),
            ("loss", "loss"), ("gaps", "gaps"), ("ns/deliv", "cpu_ns_per_delivery"),
            ("shard ns", "shard_ns_per_delivery"), ("bridge ns", "bridge_ns_per_delivery"),
            ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"), ("frames/write", "frames_per_write"),
            ("ctx/1k", "ctx_per_1k_deliveries"), ("runq us/slice", "runq_wait_us_per_slice"),
            ("cpu us/slice", "cpu_us_per_slice"), ("busy cores", "machine_busy_cores"),
            ("other s", "other_work_s"), ("bench s", "bench_cpu_s"), ("broker s", "broker_cpu_s")]
    print(" | ".join(c for c, _ in cols))
    for r in runs:
        print(" | ".join(str(r.get(k)) for _, k in cols))
    ratios = []
    for rnd, build in sorted({(r["round"], r["build"]) for r in runs}):
        by = {r["variant"]: r for r in runs if r["round"] == rnd and r["build"] == build}
        # SETTINGS runs the single node once per round, unlabelled: the reference of every label.
        shared = {r["variant"]: r for r in runs if r["round"] == rnd and r["build"] == ""}
        c = by.get("cluster")
        for ref in ("single", "nats1"):
            o = by.get(ref) or shared.get(ref)
            if not c or not o:
                continue
            def ratio(k):
                a, b = c.get(k), o.get(k)
                return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None
            q = {"round": rnd, "build": build, "cluster_vs": ref, "cpu_per_delivery": ratio("cpu_ns_per_delivery"),
                 "p50": ratio("p50_ms"), "p99": ratio("p99_ms")}
            ratios.append(q)
            print(f"round {rnd}{' ' + build if build else ''}: cluster / {ref}: CPU per delivery x{q['cpu_per_delivery']}, "
                  f"p50 x{q['p50']}, p99 x{q['p99']}")
    with open(os.path.join(d, "compare.jsonl"), "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
        for q in ratios:
            f.write(json.dumps(q) + "\n")


if __name__ == "__main__":
    main()
