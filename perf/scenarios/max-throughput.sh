#!/usr/bin/env bash
# The sustainable deliveries/s on the server's core(s): the rate rises ×RATE_STEP (1.5) per step
# until a step loses a message, closes a subscriber, cannot be published at its rate, or its p99
# passes P99_BOUND_MS (default 100 ms: on a core shared with other work, scheduler time slices
# alone reach tens of ms); the last passing step is the result. A failing step is run once more
# before it counts (STEP_RETRIES, default 1: one scheduler stall on a shared machine can fail a
# step the server sustains).
#
# Usage: perf/scenarios/max-throughput.sh [server] [RUNS]
# SHAPE (default 1k10) picks the load; each starts low enough that every server passes a step:
#   1k10    1,000 subscribers over 10 topics, 1 publisher, from 100 msgs/s (100 deliveries each)
#   1k1     1,000 subscribers on 1 topic, 1 publisher, from 10 msgs/s (1,000 deliveries each)
#   10k10   10,000 subscribers over 10 topics, 1 publisher, from 10 msgs/s (1,000 deliveries each)
#   market  10,000 subscribers, 5 of 200 topics each, 4 publishers, demo-feed-like data
#           (--data market), from 50 msgs/s (250 deliveries each)
# MAX_STEPS (default 20) bounds the search; RATE_STEP the factor per step.
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"
shape="${SHAPE:-1k10}"
case "$shape" in
  1k10) args=(--subs 1000 --topics 10 --pubs 1 --rate 100) ;;
  1k1) args=(--subs 1000 --topics 1 --pubs 1 --rate 10) ;;
  10k10) args=(--subs 10000 --topics 10 --pubs 1 --rate 10) ;;
  market) args=(--subs 10000 --topics 200 --topics-per-sub 5 --pubs 4 --rate 50 --data market) ;;
  *) echo "unknown SHAPE '$shape' (1k10 | 1k1 | 10k10 | market)" >&2; exit 2 ;;
esac
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout "${args[@]}" --payload 100 --duration 5 --warmup 1 --source-ips "$SOURCE_IPS" \
    --max-rate --step-retries "${STEP_RETRIES:-1}" --rate-step "${RATE_STEP:-1.5}" --max-steps "${MAX_STEPS:-20}" \
    --p99-bound-ms "${P99_BOUND_MS:-100}"
done
finish
