#!/usr/bin/env bash
# A fleet with stalled clients: 1k subscribers, 1000 msgs/s, 100 B, every subscriber receiving every
# message: on 1 topic, and on 10 topics with each subscriber subscribed to all 10.
#   no-stalled          every subscriber reads (slow_policy = "disconnect", the default)
#   stalled-disconnect  1 % of the subscribers (tickcast-bench --stalled-pct 1) set a tiny
#                       receive buffer before connect and never read after their subscribe ack;
#                       slow_policy = "disconnect": closed with 4008 once 1 MiB is queued
#   stalled-conflate    the same with slow_policy = "conflate"
# The bench's loss and latency figures are the healthy subscribers'; the stalled ones are
# counted apart (stalled_subs, stalled_closed, stalled_open_at_end), with /metrics'
# tickcast_slow_consumer_closes_total and tickcast_conflated_total.
# The window is 30 s: a stalled socket first fills the server's kernel send buffer (it grew to
# ~2.8 MB on this machine, tcp_wmem max 4 MiB), which takes ~18 s at ~165 KB/s, and only then
# the 1 MiB queue (~6 s more). With 10 topics of which a subscriber takes one (100 msgs/s
# each) that would take ~4 minutes: not run.
# Usage: perf/scenarios/stalled.sh [RUNS]
source "$(dirname "$0")/lib.sh"
runs="${1:-1}"
build_bench; build_server tickcast
variants=(no-stalled stalled-disconnect stalled-conflate)
for _ in $(seq 1 "$runs"); do
  for shape in "1 1" "10 10"; do
    read -r topics per_sub <<<"$shape"
    for v in "${variants[@]}"; do
      case "$v" in
        no-stalled) policy=disconnect; pct=0 ;;
        stalled-disconnect) policy=disconnect; pct=1 ;;
        stalled-conflate) policy=conflate; pct=1 ;;
      esac
      SERVER_ENV=(TICKCAST_TOPICS="[{pattern=\"bench.>\",slow_policy=\"$policy\"}]")
      restart_server tickcast
      LABEL="tickcast/$v" bench fanout --subs 1000 --topics "$topics" --topics-per-sub "$per_sub" \
        --pubs 1 --rate 1000 --payload 100 --duration 30 --warmup 2 --stalled-pct "$pct" \
        --source-ips "$SOURCE_IPS"
    done
  done
done
finish
