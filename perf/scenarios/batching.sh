#!/usr/bin/env bash
# Batched delivery against immediate: the same fan-out with the bench topics in a topic class of
# delivery = "immediate", "batched" with a 1 ms window and with a 5 ms window. Two shapes, 100 B,
# 1000 msgs/s: 1k subscribers on 1 topic (1 M deliveries/s: every subscriber gets every message)
# and 1k subscribers over 10 topics (100 k deliveries/s: 100 msgs/s per subscriber).
# Per run: server CPU ns per delivery, deliveries per write (/metrics), p50/p99, loss.
# SHAPES="SUBS:TOPICS ..." picks other shapes (default "1000:1 1000:10"); "10:1" is a light load
# whose rounds are short, so the latency the window adds shows on its own.
# The variants run back to back inside each repetition (in a rotated order), so their ratios
# share the machine's load. Usage: perf/scenarios/batching.sh [RUNS]   (medians: python3 perf/summarize.py FILE)
source "$(dirname "$0")/lib.sh"
runs="${1:-1}"
build_bench; build_server tickcast
variants=(immediate batched-1ms batched-5ms)
topic_class() {
  case "$1" in
    immediate) echo '[{pattern="bench.>",delivery="immediate"}]' ;;
    batched-1ms) echo '[{pattern="bench.>",delivery="batched",batch_window_ms=1}]' ;;
    batched-5ms) echo '[{pattern="bench.>",delivery="batched",batch_window_ms=5}]' ;;
  esac
}
for rep in $(seq 1 "$runs"); do
  # Each repetition starts at another variant: none always runs first (after an idle gap).
  order=("${variants[@]:$(( (rep - 1) % 3 ))}" "${variants[@]:0:$(( (rep - 1) % 3 ))}")
  for shape in ${SHAPES:-1000:1 1000:10}; do
    subs="${shape%%:*}"; topics="${shape##*:}"
    for v in "${order[@]}"; do
      SERVER_ENV=(TICKCAST_TOPICS="$(topic_class "$v")")
      restart_server tickcast
      LABEL="tickcast/$v" bench fanout --subs "$subs" --topics "$topics" --pubs 1 --rate 1000 \
        --payload 100 --duration 10 --warmup 2 --source-ips "$SOURCE_IPS"
    done
  done
done
finish
