#!/usr/bin/env bash
# The sustainable deliveries/s: 1k subscribers over 10 topics, rate ×1.5 per step from 500 msgs/s
# until loss or p99 > 50 ms. Usage: perf/scenarios/max-throughput.sh [server] [RUNS]
source "$(dirname "$0")/lib.sh"
server="${1:-baseline}"; runs="${2:-1}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout --subs 1000 --topics 10 --pubs 1 --rate 500 --payload 100 --duration 5 --warmup 1 \
    --max-rate --rate-step 1.5 --max-steps 14 --p99-bound-ms 50
done
finish
