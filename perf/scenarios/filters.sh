#!/usr/bin/env bash
# Subscription filters: CPU per delivery of 10k subscribers on one topic with 0, 10 and 1,000
# distinct filters (tickcast-bench --filters N: subscriber i takes filter i mod N, two tests
# every message passes, so each run delivers the same frames and the figures compare), and,
# with BASE set, the same shape on another build without filters (the zero-cost A/B: no
# subscriber has a filter). Every round runs each variant once, in an order that rotates from
# round to round, so all see the same machine.
# Usage: [BASE=/path/to/tickcast] [VARIANTS="0 10 1000"] perf/scenarios/filters.sh [RUNS] [RATE]
#   VARIANTS: distinct filters per run; a "b" suffix (10b) gives them to consecutive subscribers
#   (--filters-in-blocks) instead of interleaved (i mod N), to see what the fan-out's order costs.
#   RATE: publishes per second on the topic (default 10: 100k deliveries/s, a fifth of a core,
#   close to one frame per write on a quiet machine; at 50/s the load decides how many frames
#   share a write, and that, not the filters, sets CPU per delivery: perf/README.md).
# Nothing is built for BASE: build it yourself, e.g.
#   git worktree add /tmp/base <commit> &&
#   (cd /tmp/base && CARGO_TARGET_DIR=/tmp/t-base cargo build --release --bin tickcast)
source "$(dirname "$0")/lib.sh"
runs="${1:-3}"; rate="${2:-10}"
build_bench; build_server tickcast
new_bin="$TICKCAST_BIN"
read -r -a variants <<< "${VARIANTS:-0 10 1000}"
if [ -n "${BASE:-}" ]; then variants=(base "${variants[@]}"); fi
n=${#variants[@]}
for round in $(seq 1 "$runs"); do
  for i in $(seq 0 $((n - 1))); do
    v="${variants[$(( (i + round - 1) % n ))]}"
    if [ "$v" = base ]; then
      TICKCAST_BIN="$BASE"; LABEL="tickcast/base"; filters=0
    else
      TICKCAST_BIN="$new_bin"; LABEL="tickcast/filters-$v"; filters="${v%b}"
    fi
    blocks=()
    if [ "$v" != "${v%b}" ]; then blocks=(--filters-in-blocks); fi
    log "round $round: $LABEL"
    restart_server tickcast
    bench fanout --subs 10000 --topics 1 --pubs 1 --rate "$rate" --payload 100 --duration 10 \
      --warmup 2 --source-ips "$SOURCE_IPS" --filters "$filters" ${blocks[@]+"${blocks[@]}"}
  done
done
finish
