#!/usr/bin/env bash
# Dialects (issue 16): server CPU per delivery for Centrifugo and Binance combined-stream
# subscribers against protocol v1 subscribers, same shape, same server process; and an A/B of
# the v1 hot path before/after the dialect commit. Publishers always speak protocol v1.
#
# Shapes (comma-separated SHAPES, default all):
#   1k       1,000 subscribers x 1 topic at ONE_RATE msgs/s (200: 200k deliveries/s; ~1 frame
#            per write, so CPU per delivery compares like with like)
#   1k-high  the same at ONE_RATE_HIGH msgs/s (1000: 1 M deliveries/s; frames coalesce, and how
#            many per write depends on timing: compare CPU per write too)
#   10k      10,000 subscribers x 10 topics (1 each) at TEN_RATE msgs/s (100: 100k deliveries/s)
#   ab-1k    the 1k shape, v1 only, build OLD_BIN vs this one (NEW_BIN), alternating
#   ab-1k-high, ab-10k   the 1k-high and 10k shapes, the same A/B
# For 1k, 1k-high and 10k, ONE server process per shape serves every round and variant: v1, centrifugo,
# binance and mixed (a third of the subscribers in each format, `--dialect mixed`), one bench
# run each, in that order on odd rounds and reversed on even ones; each bench run
# opens fresh connections from a fresh block of source addresses. The server is started with
# the Binance stream template the bench's streams need (bench<N>@t -> bench.t<N>). The A/B
# restarts the server for each run (two binaries), old/new on odd rounds, new/old on even ones,
# with the same settings for both (no binance.streams: the old build has no such key).
#
# Usage: perf/scenarios/dialects.sh [RUNS] [SHAPES]
# Env: ONE_RATE, ONE_RATE_HIGH, TEN_RATE, DURATION (10), OLD_BIN (the 142bdb1 server, for ab-*), NEW_BIN
#      (default this tree's), OLD_LABEL / NEW_LABEL (v1@old / v1@new), SKIP_BUILD=1, DATA, and
#      lib.sh's (RESULTS, SERVER_CPUS, BENCH_CPUS, PORT, CARGO_TARGET_DIR, ...).
# Build the old side yourself, e.g.
#   git worktree add --detach ../tickcast-142bdb1 142bdb1
#   (cd ../tickcast-142bdb1 && cargo build --release --bin tickcast)
#   OLD_BIN=../tickcast-142bdb1/target/release/tickcast perf/scenarios/dialects.sh
source "$(dirname "$0")/lib.sh"
runs="${1:-3}"; shapes="${2:-1k,1k-high,10k,ab-1k,ab-10k}"
one_rate="${ONE_RATE:-200}"; one_rate_high="${ONE_RATE_HIGH:-1000}"; ten_rate="${TEN_RATE:-100}"; duration="${DURATION:-10}"
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_bench; build_server tickcast; fi
NEW_BIN="${NEW_BIN:-$TICKCAST_BIN}"
old_label="${OLD_LABEL:-v1@old}"; new_label="${NEW_LABEL:-v1@new}"
BINANCE_ENV=(TICKCAST_BINANCE__STREAMS='[{stream="bench{n}@t",topic="bench.t{n}"}]')

# fanout SHAPE DIALECT
fanout() {
  local -a shape_flags
  case "$1" in
    1k) shape_flags=(--subs 1000 --topics 1 --rate "$one_rate") ;;
    1k-high) shape_flags=(--subs 1000 --topics 1 --rate "$one_rate_high") ;;
    10k) shape_flags=(--subs 10000 --topics 10 --rate "$ten_rate") ;;
    *) echo "unknown shape $1" >&2; exit 2 ;;
  esac
  # shellcheck disable=SC2086
  bench fanout "${shape_flags[@]}" --pubs 1 --payload 100 --duration "$duration" --warmup 2 \
    --dialect "$2" --source-ips "$SOURCE_IPS" $DATA_FLAGS
}

# dialect_rounds SHAPE: one server for every round and variant of the shape.
dialect_rounds() {
  TICKCAST_BIN="$NEW_BIN"
  SERVER_ENV=("${BINANCE_ENV[@]}")
  restart_server tickcast
  SERVER_ENV=()
  for round in $(seq 1 "$runs"); do
    local -a variants=(v1 centrifugo binance mixed)
    if [ $((round % 2)) = 0 ]; then variants=(mixed binance centrifugo v1); fi
    for d in "${variants[@]}"; do
      log "round $round, $1, dialect $d (server pid $SERVER_PID)"
      LABEL="tickcast/$d"
      next_source_ips
      fanout "$1" "$d"
    done
  done
  LABEL=""
  stop_server
}

# ab_round SHAPE ROUND: v1 only, old and new builds.
ab_round() {
  : "${OLD_BIN:?set OLD_BIN to the tickcast binary built at 142bdb1}"
  local order="old new"
  if [ $(($2 % 2)) = 0 ]; then order="new old"; fi
  for side in $order; do
    if [ "$side" = old ]; then TICKCAST_BIN="$OLD_BIN"; LABEL="$old_label"
    else TICKCAST_BIN="$NEW_BIN"; LABEL="$new_label"; fi
    log "round $2, $1, $LABEL ($TICKCAST_BIN)"
    restart_server tickcast
    fanout "${1#ab-}" v1
  done
  LABEL=""
}

for shape in ${shapes//,/ }; do
  case "$shape" in
    1k|1k-high|10k) dialect_rounds "$shape" ;;
    ab-1k|ab-1k-high|ab-10k) for round in $(seq 1 "$runs"); do ab_round "$shape" "$round"; done ;;
    *) echo "unknown shape $shape" >&2; exit 2 ;;
  esac
done
finish
