#!/usr/bin/env bash
# 10k subscribers over 10 topics at 200 msgs/s, 100 B: one frame per write, no batching
# possible (the kernel's send path dominates). Usage: perf/scenarios/fanout-10topics.sh [server] [RUNS]
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout --subs 10000 --topics 10 --pubs 1 --rate 200 --payload 100 --duration 10 --warmup 2 \
    --source-ips "$SOURCE_IPS"
done
finish
