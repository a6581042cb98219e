#!/usr/bin/env bash
# The sustainable deliveries/s: 1k subscribers over 10 topics, rate ×1.5 per step from 100 msgs/s
# until loss or p99 > P99_BOUND_MS (default 100 ms: on a core shared with other work, scheduler
# time slices alone reach tens of ms). Usage: perf/scenarios/max-throughput.sh [server] [RUNS]
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout --subs 1000 --topics 10 --pubs 1 --rate 100 --payload 100 --duration 5 --warmup 1 \
    --max-rate --rate-step 1.5 --max-steps 20 --p99-bound-ms "${P99_BOUND_MS:-100}"
done
finish
