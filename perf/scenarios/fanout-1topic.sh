#!/usr/bin/env bash
# One topic, 100 B payload: 1k subscribers at 1k msgs/s, then 10k subscribers at 100 msgs/s.
# Latency, loss, server CPU per delivery. Usage: perf/scenarios/fanout-1topic.sh [server] [RUNS]
# DEFLATE=1: clients negotiate permessage-deflate (lib.sh); DATA=market: demo-feed-like JSON.
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout --subs 1000 --topics 1 --pubs 1 --rate 1000 --payload 100 --duration 10 --warmup 2 $DATA_FLAGS
  restart_server "$server"
  bench fanout --subs 10000 --topics 1 --pubs 1 --rate 100 --payload 100 --duration 10 --warmup 2 $DATA_FLAGS \
    --source-ips "$SOURCE_IPS"
done
finish
