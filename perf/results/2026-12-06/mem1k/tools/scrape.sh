#!/usr/bin/env bash
# scrape.sh BIN: a fresh 1-shard server on core 1 with no connections; anonymous RSS (KiB)
# before and after each of 40 GET /metrics (what tickcast-bench fanout does twice per round).
BIN="$1"; PORT=9520
TICKCAST_LOG__LEVEL=warn taskset -c 1 "$BIN" serve --listen 127.0.0.1:$PORT --shards 1 >/dev/null 2>&1 &
pid=$!; sleep 1
a() { grep Anonymous /proc/$pid/smaps_rollup | awk '{print $2}'; }
echo "before: $(a) KiB; response $(curl -s http://127.0.0.1:$PORT/metrics | wc -c) B; after 1: $(a)"
for i in $(seq 2 40); do curl -s http://127.0.0.1:$PORT/metrics >/dev/null; echo -n "$(a) "; done; echo
kill $pid
