#!/usr/bin/env bash
# RSS per connection at 1k x 1 topic (1,000 msgs/s, 100 B) without the one-time costs: each
# round starts a fresh server, runs a warm-up fanout against it (1 subscriber, 1 publisher,
# 1,000 msgs/s for 2 s after a 2 s warm-up; its connections close when it ends), then the 1k x 1
# fanout against the same process. The warm-up pays what the first connection and round pay
# once per process: the binary's code paged in (~0.55 MB), the heap's first pages, the
# bench's first /metrics scrapes (~0.19 MB together, measured 2026-12-06). The second run's
# server_rss{,_anon}_per_conn_* fields are then the marginal cost of a subscribed connection
# with data flowing; its label ends in /marginal, the warm-up's in /warm-up.
# Without A and B: the tickcast of CARGO_TARGET_DIR, label tickcast. With A=... B=...
# (binaries) and BENCH_BIN=...: both, alternating which goes first, labels tickcast/A and
# tickcast/B (LABEL_A / LABEL_B to rename them), as ab.sh.
# Usage: perf/scenarios/marginal.sh [RUNS]
bench_bin="${BENCH_BIN:-}"
source "$(dirname "$0")/lib.sh"
if [ -n "$bench_bin" ]; then BENCH_BIN="$bench_bin"; fi
runs="${1:-3}"
if [ -n "${A:-}" ] || [ -n "${B:-}" ]; then
  : "${A:?set A and B}" "${B:?set A and B}"
  sides="A B"
else
  build_bench; build_server tickcast
  A="$TICKCAST_BIN"; sides="A"; LABEL_A="${LABEL_A:-tickcast}"
fi
label_a="${LABEL_A:-tickcast/A}"; label_b="${LABEL_B:-tickcast/B}"
fanout_1k=(--topics 1 --pubs 1 --rate 1000 --payload 100 --warmup 2)
for round in $(seq 1 "$runs"); do
  order="$sides"
  if [ $((round % 2)) = 0 ]; then order="$(echo "$sides" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
  for side in $order; do
    if [ "$side" = A ]; then TICKCAST_BIN="$A"; name="$label_a"; else TICKCAST_BIN="$B"; name="$label_b"; fi
    log "round $round, $name"
    restart_server tickcast
    LABEL="$name/warm-up" bench fanout --subs 1 --duration 2 "${fanout_1k[@]}" >/dev/null
    sleep 1
    LABEL="$name/marginal" bench fanout --subs 1000 --duration 10 "${fanout_1k[@]}"
  done
done
stop_server
finish
