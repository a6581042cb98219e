#!/usr/bin/env bash
# marginal.sh RESULTS LABEL BIN [ENV=VAL...]: a fresh 1-shard server on core 1; a warm-up fanout
# (1 subscriber, 1 publisher, 1,000 msgs/s for 2 s: its connections close when it ends), then
# the 1k x 1 fanout against the same process. The second run's per-connection fields exclude the
# one-time costs (code paged in, the first /metrics scrapes, the heap's first pages).
set -euo pipefail
res="$1"; label="$2"; bin="$3"; shift 3
BENCH=/work/target-mem1k/release/tickcast-bench
PORT=9520
log=$(mktemp /tmp/mem1k-server.XXXXXX)
TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX=1000000 TICKCAST_LOG__LEVEL=warn \
TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0 \
TICKCAST_AUTH__ANONYMOUS_SUBS='[">"]' TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' \
  env "$@" taskset -c 1 "$bin" serve --listen 127.0.0.1:$PORT --shards 1 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$log" && break; sleep 0.1; done
common=(--url ws://127.0.0.1:$PORT/ws --server-pid $pid --json-out "$res" --topics 1 --pubs 1 --rate 1000 --payload 100 --warmup 2)
taskset -c 0 "$BENCH" fanout "${common[@]}" --label "$label/warm-up" --subs 1 --duration 2 --source-ips 127.2.0.1 >/dev/null 2>&1
sleep 1
taskset -c 0 "$BENCH" fanout "${common[@]}" --label "$label/marginal" --subs 1000 --duration 10 --source-ips 127.2.0.2,127.2.0.3 >/dev/null 2>&1
kill $pid; wait $pid 2>/dev/null || true; rm -f "$log"
