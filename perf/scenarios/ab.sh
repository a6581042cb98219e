#!/usr/bin/env bash
# A/B of two tickcast builds in one run, alternating, so both see the same machine: the shapes
# of fanout-1topic.sh (1k x 1 topic at 1k msgs/s, 10k x 1 topic at 100 msgs/s),
# fanout-10topics.sh (10k x 10 topics at 200 msgs/s) and connect-19k.sh. The same bench binary
# drives both (B's). Nothing is built: build each side yourself, e.g.
#   git worktree add /tmp/before <commit>
#   (cd /tmp/before && CARGO_TARGET_DIR=/tmp/t-before cargo build --release --bin tickcast)
#   CARGO_TARGET_DIR=/tmp/t-after cargo build --release --bin tickcast --bin tickcast-bench
#   A=/tmp/t-before/release/tickcast B=/tmp/t-after/release/tickcast \
#     BENCH_BIN=/tmp/t-after/release/tickcast-bench perf/scenarios/ab.sh 2
# Lines are labelled tickcast/A and tickcast/B (LABEL_A / LABEL_B to rename them).
# TRANSPORTS=plain,tls runs every shape over ws:// and over wss:// (lib.sh's TLS=1: the
# server also listens for TLS, every bench client, publishers included, speaks it; labels get
# /tls), alternating which goes first; CONNECT_N sets the connect shape's connections (19,000).
# perf/summarize_ab.py prints the runs' main figures per label at the end.
# Usage: A=... B=... BENCH_BIN=... perf/scenarios/ab.sh [RUNS] [SHAPES]
#   SHAPES: any of 1k,10k,10topics,connect (default all four), comma-separated.
bench_bin="${BENCH_BIN:?set BENCH_BIN to the tickcast-bench binary}"
source "$(dirname "$0")/lib.sh"
BENCH_BIN="$bench_bin"
runs="${1:-2}"; shapes="${2:-1k,10k,10topics,connect}"
: "${A:?set A to the first tickcast binary}" "${B:?set B to the second tickcast binary}"
label_a="${LABEL_A:-tickcast/A}"; label_b="${LABEL_B:-tickcast/B}"
transports="${TRANSPORTS:-plain}"; connect_n="${CONNECT_N:-19000}"

run_shape() {
  case "$1" in
    1k) bench fanout --subs 1000 --topics 1 --pubs 1 --rate 1000 --payload 100 --duration 10 \
          --warmup 2 ;;
    10k) bench fanout --subs 10000 --topics 1 --pubs 1 --rate 100 --payload 100 --duration 10 \
          --warmup 2 --source-ips "$SOURCE_IPS" ;;
    10topics) bench fanout --subs 10000 --topics 10 --pubs 1 --rate 200 --payload 100 \
          --duration 10 --warmup 2 --source-ips "$SOURCE_IPS" ;;
    connect) bench connect -n "$connect_n" --hold 10 --source-ips "$SOURCE_IPS" ;;
    *) echo "unknown shape $1" >&2; exit 2 ;;
  esac
}

for round in $(seq 1 "$runs"); do
  for shape in ${shapes//,/ }; do
    # Alternate which side (and transport) goes first, so neither always runs on a warmer
    # machine.
    if [ $((round % 2)) = 1 ]; then order="A B"; ways="${transports//,/ }"; else
      order="B A"; ways="$(echo "${transports//,/ }" | tr ' ' '\n' | tac | tr '\n' ' ')"; fi
    for side in $order; do
      for way in $ways; do
        if [ "$side" = A ]; then TICKCAST_BIN="$A"; LABEL="$label_a"; else TICKCAST_BIN="$B"; LABEL="$label_b"; fi
        TLS=0
        if [ "$way" = tls ]; then TLS=1; LABEL="$LABEL/tls"; fi
        log "round $round, $shape, $LABEL"
        restart_server tickcast
        run_shape "$shape"
      done
    done
  done
done
stop_server
python3 "$ROOT/perf/summarize_ab.py" "$RESULTS"
finish
