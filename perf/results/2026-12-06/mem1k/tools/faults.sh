#!/usr/bin/env bash
# faults.sh LABEL BIN SHAPE(1k|10k) [ENV=VAL...]: fresh server on core 1, one fanout round; prints
# the server's minor page faults and CPU (utime+stime ticks) over its life, and madvise calls
# counted by strace's summary would perturb timing, so only faults are counted.
set -euo pipefail
label="$1"; bin="$2"; shape="$3"; shift 3
BENCH=/work/target-mem1k/release/tickcast-bench
PORT=9520
log=$(mktemp /tmp/mem1k-server.XXXXXX)
TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX=1000000 TICKCAST_LOG__LEVEL=warn \
TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0 \
TICKCAST_AUTH__ANONYMOUS_SUBS='[">"]' TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' \
  env "$@" taskset -c 1 "$bin" serve --listen 127.0.0.1:$PORT --shards 1 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$log" && break; sleep 0.1; done
read -r f0 < <(awk '{print $10}' /proc/$pid/stat)
if [ "$shape" = 1k ]; then args=(--subs 1000 --rate 1000); else args=(--subs 10000 --rate 100 --source-ips 127.4.$((RANDOM%200+1)).1,127.4.$((RANDOM%200+1)).2,127.4.$((RANDOM%200+1)).3,127.4.$((RANDOM%200+1)).4); fi
taskset -c 0 "$BENCH" fanout --url ws://127.0.0.1:$PORT/ws --label "$label" --server-pid $pid \
  --json-out /work/mem1k-diag/faults.jsonl --topics 1 --pubs 1 --payload 100 --duration 10 --warmup 2 "${args[@]}" >/dev/null 2>&1
read -r f1 < <(awk '{print $10}' /proc/$pid/stat)
echo "$label $shape minflt_during_bench=$((f1-f0)) $(tail -1 /work/mem1k-diag/faults.jsonl | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("ns/delivery", r["server_cpu_ns_per_delivery"], "deliveries", r["metrics"]["deliveries"], "anon_after", r["server_rss_anon_per_conn_after_bytes"])')"
kill $pid; wait $pid 2>/dev/null || true; rm -f "$log"
