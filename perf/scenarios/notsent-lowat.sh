#!/usr/bin/env bash
# server.tcp_notsent_lowat_bytes on (128 KiB, the default) against off (0, the kernel's default):
# 1k subscribers x 1 topic x 1000 msgs/s, healthy only and with 1 % stalled subscribers.
# CPU per delivery and p99 of the healthy ones; how the stalled ones ended within the run.
# Usage: perf/scenarios/notsent-lowat.sh [RUNS]   (medians: python3 perf/summarize.py FILE)
source "$(dirname "$0")/lib.sh"
runs="${1:-1}"
build_bench; build_server tickcast
for _ in $(seq 1 "$runs"); do
  for lowat in 131072 0; do
    SERVER_ENV=(TICKCAST_SERVER__TCP_NOTSENT_LOWAT_BYTES="$lowat" \
      TICKCAST_TOPICS='[{pattern="bench.>",slow_policy="disconnect"}]')
    restart_server tickcast
    LABEL="tickcast/lowat-$lowat" bench fanout --subs 1000 --topics 1 --pubs 1 --rate 1000 \
      --payload 100 --duration 10 --warmup 2 --source-ips "$SOURCE_IPS"
    restart_server tickcast
    LABEL="tickcast/lowat-$lowat-stalled" bench fanout --subs 1000 --topics 1 --pubs 1 \
      --rate 1000 --payload 100 --duration 20 --warmup 2 --stalled-pct 1 --source-ips "$SOURCE_IPS"
  done
done
finish
