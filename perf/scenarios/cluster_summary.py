#!/usr/bin/env python3
"""Summary of one perf/scenarios/cluster-100k.sh run: reads the raw files of its output
directory and prints a table, and writes summary.json next to them.

Usage: python3 perf/scenarios/cluster_summary.py OUT_DIR
"""
import json
import os
import sys


def load_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def last_json_line(path):
    last = None
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("{"):
                    last = json.loads(line)
    except OSError:
        pass
    return last


def metrics(path):
    """Sums tickcast_* samples by name (labels dropped)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.startswith("tickcast_"):
                    continue
                name = line.split("{")[0].split(" ")[0]
                try:
                    rest = line.rsplit("}", 1)[-1] if "{" in line else line[len(name):]
                    v = float(rest.split()[0])
                except (ValueError, IndexError):
                    continue
                out[name] = out.get(name, 0.0) + v
    except OSError:
        pass
    return out


def window(d, deliveries_per_s):
    """Deltas between the two proc_snapshot.py lines of window.jsonl (start and end of the
    measured window): per group (node-i, broker, bench) and per thread kind of the nodes
    (shard, bridge, other), CPU, run-queue wait and context switches; the machine's busy time
    and what of it no process of the run accounts for (other work on the shared machine)."""
    snaps = []
    try:
        with open(os.path.join(d, "window.jsonl")) as f:
            snaps = [json.loads(l) for l in f if l.startswith("{")]
    except (OSError, ValueError):
        return None
    if len(snaps) < 2:
        return None
    a, b = snaps[0], snaps[-1]
    wall_s = (b["mono_ns"] - a["mono_ns"]) / 1e9
    # The snapshots span most of the bench's window, not all of it: deliveries at the
    # window's rate over the snapshots' span.
    deliveries = deliveries_per_s * wall_s if deliveries_per_s else None
    keys = ("cpu_ns", "runq_ns", "slices", "vcsw", "ivcsw")

    def delta(group, thread):
        t0 = a["groups"].get(group, {}).get(thread, {})
        t1 = b["groups"].get(group, {}).get(thread, {})
        return {k: t1.get(k, 0) - t0.get(k, 0) for k in keys}

    def add(x, y):
        return {k: x.get(k, 0) + y.get(k, 0) for k in keys}

    groups = {}
    node_threads = {}
    for g in b["groups"]:
        tot = {}
        for thread in b["groups"][g]:
            dt = delta(g, thread)
            tot = add(tot, dt)
            if g.startswith("node-"):
                kind = ("shard" if thread.startswith("tc-shard") else
                        "bridge" if thread.startswith("tc-bridge") else "other")
                node_threads[kind] = add(node_threads.get(kind, {}), dt)
        groups[g] = tot
    nodes = {}
    for g, v in groups.items():
        if g.startswith("node-"):
            nodes = add(nodes, v)
    stat0, stat1 = a.get("proc_stat_cpu", []), b.get("proc_stat_cpu", [])
    hz = os.sysconf("SC_CLK_TCK")
    busy_s = None
    if stat0 and stat1:
        dt = [y - x for x, y in zip(stat0, stat1)]
        idle = dt[3] + (dt[4] if len(dt) > 4 else 0)
        busy_s = (sum(dt[:8]) - idle) / hz

    def per(v):
        v = {k: v.get(k, 0) for k in keys}
        out = {
            "cpu_s": round(v["cpu_ns"] / 1e9, 3),
            "runq_wait_s": round(v["runq_ns"] / 1e9, 3),
            "slices": v["slices"],
            "ctx_switches": v["vcsw"] + v["ivcsw"],
            "involuntary": v["ivcsw"],
        }
        if v["slices"]:
            out["runq_wait_us_per_slice"] = round(v["runq_ns"] / v["slices"] / 1e3, 1)
            out["cpu_us_per_slice"] = round(v["cpu_ns"] / v["slices"] / 1e3, 1)
        if deliveries:
            out["cpu_ns_per_delivery"] = round(v["cpu_ns"] / deliveries)
            out["ctx_switches_per_1k_deliveries"] = round(1000 * (v["vcsw"] + v["ivcsw"]) / deliveries, 2)
        return out

    accounted = sum(v.get("cpu_ns", 0) for v in groups.values()) / 1e9
    return {
        "wall_s": round(wall_s, 2),
        "deliveries_in_span": round(deliveries) if deliveries else None,
        "nodes": per(nodes),
        "node_threads": {k: per(v) for k, v in node_threads.items()},
        "broker": per(groups.get("broker", {})),
        "bench": per(groups.get("bench", {})),
        "machine_busy_s": busy_s,
        "machine_busy_cores": round(busy_s / wall_s, 2) if busy_s is not None and wall_s else None,
        "other_work_s": round(busy_s - accounted, 2) if busy_s is not None else None,
        "machine_ctx_switches_per_s": round((b.get("ctxt", 0) - a.get("ctxt", 0)) / wall_s) if wall_s else None,
    }


def main():
    d = sys.argv[1]
    setup = load_json(os.path.join(d, "setup.json"), {})
    after = load_json(os.path.join(d, "after.json"), {})
    b = last_json_line(os.path.join(d, "bench.jsonl")) or {}
    samples = []
    try:
        with open(os.path.join(d, "samples.jsonl")) as f:
            samples = [json.loads(l) for l in f if l.startswith("{")]
    except (OSError, ValueError):
        pass
    nodes = setup.get("nodes", 0)
    ports = setup.get("node_ports", [])
    port_node = {f"127.0.0.1:{p}": i + 1 for i, p in enumerate(ports)}

    def per_node(m):
        out = [0] * nodes
        for host, n in (m or {}).items():
            if host in port_node:
                out[port_node[host] - 1] = n
        return out

    subs_per_node = per_node(b.get("subs_per_url"))
    open_end_per_node = per_node(b.get("subs_open_per_url_at_end"))
    # Server side: the sample with the most connections over all nodes.
    peak = max(samples, key=lambda s: sum(n["connections"] for n in s["nodes"]), default=None)
    peak_conns = [n["connections"] for n in peak["nodes"]] if peak else []
    peak_rss = [n["rss_kib"] for n in peak["nodes"]] if peak else []
    max_rss_total = max((sum(n["rss_kib"] for n in s["nodes"]) for s in samples), default=0)
    nats_rss_max = max((s["nats_rss_kib"] for s in samples), default=0)
    node_m = [metrics(os.path.join(d, f"metrics-node-{i + 1}.txt")) for i in range(nodes)]
    cluster_keys = sorted({k for m in node_m for k in m if k.startswith("tickcast_cluster_")})
    cluster_totals = {k: sum(m.get(k, 0.0) for m in node_m) for k in cluster_keys}
    varz = load_json(os.path.join(d, "nats-varz.json"), {})
    lat = b.get("latency_us") or {}
    subs_ok = b.get("subs_connected") or 0
    rss_conn = b.get("server_rss_connected_kib")
    rss_before = b.get("server_rss_before_kib")
    dur = b.get("duration_s") or setup.get("duration_s") or 1

    s = {
        "date": setup.get("date"), "commit": setup.get("commit"),
        "nodes": nodes, "subs": setup.get("subs"), "topics": setup.get("topics"),
        "topics_per_sub": setup.get("topics_per_sub"), "pubs": setup.get("pubs"),
        "rate": setup.get("rate"), "payload": setup.get("payload"),
        "duration_s": dur, "warmup_s": setup.get("warmup_s"),
        "nats_storage": setup.get("nats_storage"), "bench_rc": after.get("bench_rc"),
        "bench_workers": b.get("bench_workers"), "source_ips": b.get("source_ips"),
        "subs_connected": subs_ok, "subs_per_node": subs_per_node,
        "subs_open_at_end": b.get("subs_open_at_end"), "subs_open_per_node_at_end": open_end_per_node,
        "server_connections_peak_per_node": peak_conns,
        "server_connections_peak_total": sum(peak_conns),
        "published": b.get("published"), "published_per_s": b.get("published_per_s"),
        "publish_skipped": b.get("publish_skipped"),
        "expected": b.get("expected"), "received": b.get("received"),
        "loss": b.get("loss"), "loss_pct": b.get("loss_pct"),
        "gaps": b.get("gaps"), "dups": b.get("dups"), "closed": b.get("closed"),
        "server_errors": b.get("server_errors"),
        "deliveries_per_s": b.get("deliveries_per_s"),
        "latency_ms": {k: (round(v / 1000, 3) if isinstance(v, (int, float)) else v)
                       for k, v in lat.items() if k != "count"},
        "latency_samples": lat.get("count"),
        "nodes_rss_before_kib": rss_before, "nodes_rss_connected_kib": rss_conn,
        "nodes_rss_after_kib": b.get("server_rss_after_kib"),
        "nodes_rss_per_conn_connected_bytes": b.get("server_rss_per_conn_connected_bytes"),
        "nodes_rss_per_conn_after_bytes": b.get("server_rss_per_conn_after_bytes"),
        "nodes_rss_total_per_conn_connected_bytes":
            round(rss_conn * 1024 / subs_ok) if rss_conn and subs_ok else None,
        "nodes_rss_at_peak_kib": peak_rss, "nodes_rss_total_max_kib": max_rss_total,
        "nats_rss_max_kib": nats_rss_max, "nats_mem_at_end_kib": (varz.get("mem") or 0) // 1024,
        "nats_slow_consumers": varz.get("slow_consumers"),
        "nodes_cpu_s_window": b.get("server_cpu_s"),
        "nodes_cpu_pct_window": b.get("server_cpu_pct"),
        "nodes_cpu_ns_per_delivery": b.get("server_cpu_ns_per_delivery"),
        "nats_cpu_s_bench": after.get("nats_cpu_s_bench"),
        "bench_cpu_s": b.get("client_cpu_s"),
        "deliveries_per_node": [int(m.get("tickcast_deliveries_total", 0)) for m in node_m],
        "publishes_per_node": [int(m.get("tickcast_publishes_total", 0)) for m in node_m],
        "cluster_counters": cluster_totals,
        "metrics_window": b.get("metrics"),
        "frames_per_write": (b.get("metrics") or {}).get("deliveries_per_write"),
        "window": window(d, b.get("deliveries_per_s")),
    }
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(s, f, indent=1)
        f.write("\n")

    rows = [
        ("run", f"{s['date']}  commit {s['commit']}  bench exit {s['bench_rc']}"),
        ("setup", f"{nodes} nodes x 1 shard, {setup.get('nats_version')}, "
                  f"{s['subs']} subs over {s['topics']} topics x{s['topics_per_sub']}, {s['pubs']} pubs on node-1, "
                  f"{s['rate']} msgs/s, {s['payload']} B, {dur} s window after {s['warmup_s']} s, "
                  f"{s['bench_workers']} bench worker processes, {s['source_ips']} source addresses"),
        ("subscribed", f"{subs_ok} (per node {subs_per_node})"),
        ("open at end", f"{s['subs_open_at_end']} (per node {open_end_per_node})"),
        ("server-side peak", f"{sum(peak_conns)} connections (per node {peak_conns})"),
        ("published", f"{s['published']} in window ({s['published_per_s']}/s), skipped {s['publish_skipped']}"),
        ("deliveries", f"expected {s['expected']} received {s['received']} loss {s['loss']} "
                       f"({s['loss_pct']}%) -> {s['deliveries_per_s']}/s"),
        ("seq gaps / dups", f"{s['gaps']} / {s['dups']}"),
        ("closed / errors", f"{s['closed']} / {s['server_errors']}"),
        ("latency ms", " ".join(f"{k} {v}" for k, v in s["latency_ms"].items())),
        ("nodes RSS", f"before {rss_before} KiB, connected {rss_conn} KiB, after {s['nodes_rss_after_kib']} KiB, "
                      f"max sampled {max_rss_total} KiB; per connection: total {s['nodes_rss_total_per_conn_connected_bytes']} B, "
                      f"growth {s['nodes_rss_per_conn_connected_bytes']} B (connected), {s['nodes_rss_per_conn_after_bytes']} B (after)"),
        (setup.get("engine", "nats") + " broker", f"RSS max {nats_rss_max} KiB, CPU {s['nats_cpu_s_bench']} s during the bench, "
                        f"slow consumers {s['nats_slow_consumers']}"),
        ("CPU", f"nodes {s['nodes_cpu_s_window']} s in the window ({s['nodes_cpu_pct_window']}% of one core), "
                f"{s['nodes_cpu_ns_per_delivery']} ns/delivery; bench {s['bench_cpu_s']} s"),
        ("per node", f"deliveries {s['deliveries_per_node']} publishes {s['publishes_per_node']}"),
        ("frames per write", f"{s['frames_per_write']}"),
        ("window (sched)", window_line(s["window"])),
        ("cluster counters", json.dumps({k.removeprefix('tickcast_cluster_'): v for k, v in cluster_totals.items()})),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def window_line(w):
    if not w:
        return "no window.jsonl"
    n, parts = w["nodes"], []
    parts.append(f"{w['wall_s']} s: nodes cpu {n['cpu_s']} s ({n.get('cpu_ns_per_delivery')} ns/delivery), "
                 f"run-queue wait {n['runq_wait_s']} s ({n.get('runq_wait_us_per_slice')} us per slice), "
                 f"{n['ctx_switches']} ctx switches ({n.get('ctx_switches_per_1k_deliveries')}/1k deliveries, "
                 f"{n['involuntary']} involuntary)")
    for k, v in sorted(w["node_threads"].items()):
        parts.append(f"{k}: cpu {v['cpu_s']} s, wait {v['runq_wait_s']} s, {v['ctx_switches']} switches")
    parts.append(f"broker cpu {w['broker']['cpu_s']} s; bench cpu {w['bench']['cpu_s']} s "
                 f"(wait {w['bench']['runq_wait_s']} s); machine {w['machine_busy_cores']} cores busy, "
                 f"other work {w['other_work_s']} s")
    return "; ".join(parts)


if __name__ == "__main__":
    main()
