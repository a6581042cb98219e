#!/usr/bin/env python3
"""One snapshot of scheduler figures, for the window of a cluster-100k.sh run.

Usage: python3 perf/scenarios/proc_snapshot.py GROUP=PID[,PID...] [GROUP=PID...]

Prints one JSON object: the monotonic time, the machine's /proc/stat CPU line (ticks), and per
group (e.g. node-1, nats, bench) per thread (by thread name, summed over the group's processes):
  cpu_ns      time on a CPU          (/proc/PID/task/TID/schedstat, field 1)
  runq_ns     time runnable but waiting for a CPU (schedstat, field 2: run-queue latency)
  slices      times scheduled in     (schedstat, field 3)
  vcsw, ivcsw voluntary and involuntary context switches (/proc/PID/task/TID/status)
Two snapshots (window start, end) give per-window deltas; cluster_summary.py takes them.
Processes or threads that are gone are skipped.
"""
import json
import os
import sys
import time


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def thread_stats(pid):
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        comm, sched, status = read(f"{base}/comm"), read(f"{base}/schedstat"), read(f"{base}/status")
        if comm is None or sched is None or status is None:
            continue
        cpu, runq, slices = (int(x) for x in sched.split()[:3])
        vcsw = ivcsw = 0
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vcsw = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                ivcsw = int(line.split()[1])
        name = comm.strip()
        t = out.setdefault(name, {"threads": 0, "cpu_ns": 0, "runq_ns": 0, "slices": 0, "vcsw": 0, "ivcsw": 0})
        t["threads"] += 1
        t["cpu_ns"] += cpu
        t["runq_ns"] += runq
        t["slices"] += slices
        t["vcsw"] += vcsw
        t["ivcsw"] += ivcsw
    return out


def main():
    snap = {"mono_ns": time.monotonic_ns(), "groups": {}}
    stat = read("/proc/stat") or ""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            snap["proc_stat_cpu"] = [int(x) for x in line.split()[1:]]
        elif line.startswith("ctxt "):
            snap["ctxt"] = int(line.split()[1])
    for arg in sys.argv[1:]:
        group, _, pids = arg.partition("=")
        g = {}
        for pid in filter(None, pids.split(",")):
            for name, t in thread_stats(pid).items():
                a = g.setdefault(name, {k: 0 for k in t})
                for k, v in t.items():
                    a[k] += v
        snap["groups"][group] = g
    print(json.dumps(snap))


if __name__ == "__main__":
    main()
