#!/usr/bin/env bash
# 19,000 idle subscribed connections on one server process: handshake rate, connect latency,
# server RSS per connection. Usage: perf/scenarios/connect-19k.sh [baseline|node-ws] [RUNS]
source "$(dirname "$0")/lib.sh"
server="${1:-tickcast}"; runs="${2:-1}"
build_bench; build_server "$server"
for _ in $(seq 1 "$runs"); do
  restart_server "$server"
  bench connect -n 19000 --hold 10 --source-ips "$SOURCE_IPS"
done
finish
