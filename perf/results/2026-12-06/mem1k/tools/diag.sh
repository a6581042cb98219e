#!/usr/bin/env bash
# diag.sh OUTDIR [ENV=VAL...]: one 1k x 1 fanout round against a fresh server on core 1 with
# extra env; samples the server's smaps_rollup every 0.5 s and full smaps every 2 s.
set -euo pipefail
out="$1"; shift
mkdir -p "$out"
T=/work/target-mem1k/release
BIN="${TC_BIN:-$T/tickcast}"
BENCH="${BENCH_BIN:-$T/tickcast-bench}"
PORT=9520
TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX=1000000 TICKCAST_LOG__LEVEL=warn \
TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0 \
TICKCAST_AUTH__ANONYMOUS_SUBS='[">"]' TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' \
  env "$@" taskset -c 1 "$BIN" serve --listen 127.0.0.1:$PORT --shards 1 >"$out/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$out/server.log" && break; sleep 0.1; done
( i=0; while kill -0 $pid 2>/dev/null; do
    t=$(date +%s.%N); echo "$t $(grep -E '^(Rss|Anonymous)' /proc/$pid/smaps_rollup | tr -s ' ' | tr '\n' ' ')" >> "$out/rollup.txt"
    if [ $((i % 4)) = 0 ]; then cp /proc/$pid/smaps "$out/smaps.$i" 2>/dev/null || true; fi
    i=$((i+1)); sleep 0.5; done ) &
sampler=$!
if [ "${MODE:-fanout}" = connect ]; then taskset -c 0 "$BENCH" connect --url ws://127.0.0.1:$PORT/ws --label diag --server-pid $pid --json-out "$out/run.jsonl" -n ${N:-1000} --hold ${HOLD:-8} > "$out/bench.txt" 2>&1 || true; else
taskset -c 0 "$BENCH" fanout --url ws://127.0.0.1:$PORT/ws --label diag --server-pid $pid \
  --json-out "$out/run.jsonl" --topics 1 --pubs 1 --rate 1000 --payload 100 \
  --subs ${N:-1000} --duration ${DURATION:-10} --warmup 2 ${BENCH_EXTRA:-} > "$out/bench.txt" 2>&1 || true; fi
sleep 1
kill $pid; wait $pid 2>/dev/null || true
kill $sampler 2>/dev/null || true
python3 -c "
import json,sys
for l in open('$out/run.jsonl'):
    r=json.loads(l)
    print({k:r.get(k) for k in ['server_rss_before_kib','server_rss_connected_kib','server_rss_after_kib','server_rss_per_conn_connected_bytes','server_rss_per_conn_after_bytes','server_rss_anon_per_conn_connected_bytes','server_rss_anon_per_conn_after_bytes','server_cpu_ns_per_delivery','loss','p99_ms'] if k in r or True})
"
