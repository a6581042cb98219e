#!/usr/bin/env bash
# Market data: 10k subscribers each on 5 of 200 symbol topics, 4 publishers at a total of
# 20k msgs/s (5M deliveries/s offered). Deliveries/s, p99, loss. The workload where coalescing
# queued frames into one write per socket pays. Usage: perf/scenarios/market-data.sh [server] [RUNS]
# RATE=... overrides the publish rate (a server that cannot keep up shows loss and closes).
# DEFLATE=1: clients negotiate permessage-deflate (lib.sh); DATA=market: demo-feed-like JSON.
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"; rate="${RATE:-20000}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench fanout --subs 10000 --topics 200 --topics-per-sub 5 --pubs 4 --rate "$rate" --payload 100 \
    --duration 10 $DATA_FLAGS --warmup 2 --source-ips "$SOURCE_IPS"
done
finish
