#!/usr/bin/env bash
# A tickcast cluster on one machine: nats-server (JetStream) plus NODES tickcast nodes (one
# shard each, each on its own loopback port, each under the 20,000 open-files limit), SUBS
# subscribed connections spread round-robin over the nodes by tickcast-bench (worker processes
# of ≤ 15,000 sockets, SRC_IPS client source addresses), market-data traffic published on node 1
# and delivered on every node through NATS. Reports connections held (per node and total),
# deliveries/s, p50/p99, loss and seq gaps, the nodes' RSS (total and per connection), the
# nodes' and nats-server's CPU, and nats-server's RSS. Bounded: the bench runs WARMUP + DURATION
# seconds of traffic (plus connect and drain) under a timeout; every process started here is
# stopped on exit.
#
# Usage: perf/scenarios/cluster-100k.sh
# Environment (defaults):
#   NODES=6 SUBS=100000 TOPICS=997 TOPICS_PER_SUB=1 PUBS=4 RATE=500 (msgs/s, all topics)
#   (subscriber i takes topic i mod TOPICS and node i mod NODES: with TOPICS and NODES coprime
#   every node has subscribers on every topic and receives every message; with 1000 topics and
#   6 nodes even topics would live on nodes 1, 3, 5 only and odd ones on 2, 4, 6)
#   PAYLOAD=100 DURATION=30 WARMUP=5 SRC_IPS=24 (addresses 127.2.<block>.1..N)
#   NATS_STORAGE=file (the history stream's storage: file | memory)
#   ENGINE=nats (or redis: redis-server without persistence instead of nats-server; the
#   summary's "nats_*" fields then describe redis-server; or none: no broker, the nodes are
#   plain single nodes (cluster.engine = "memory"): with NODES=1 the single-node reference
#   of the same per-node shape, published locally; see cluster-vs-single.sh)
#   PERF_NODE=i: `perf record -F $PERF_FREQ -g` on node i for PERF_S seconds (15; 499 Hz) from
#   the start of the window; reports (by thread, top symbols, perf_groups.py's subsystems) go
#   to OUT/perf-node-i-*.txt, perf.data is deleted unless KEEP_PERF=1
#   OUT=reports/<UTC time>-cluster-100k/ (raw output: bench.jsonl, bench.txt, samples.jsonl,
#        metrics-node-<i>.txt, nats-varz.json, nats-jsz.json, logs, summary.txt, summary.json,
#        window.jsonl: proc_snapshot.py at the start and end of the measured window: per thread
#        CPU, run-queue wait, context switches of the nodes, the broker and the bench)
#   CARGO_TARGET_DIR (as for every scenario), SKIP_BUILD=1 to use the binaries as they are.
#   NODE_WRAP a command every node is started under (e.g. "chrt --batch 0": the nodes'
#   threads in SCHED_BATCH); BENCH_WRAP the same for the bench; BENCH_EXTRA extra
#   tickcast-bench flags;
#   NODE_ENV extra VAR=value settings for every node
#   (space-separated, e.g. "TICKCAST_TIMEOUTS__PING_INTERVAL_S=3600 TICKCAST_TIMEOUTS__IDLE_S=7200").
# Nothing is pinned: the nodes, nats-server and the bench share the machine's cores.
source "$(dirname "$0")/lib.sh"
trap - EXIT

NODES="${NODES:-6}"
SUBS="${SUBS:-100000}"
TOPICS="${TOPICS:-997}"
TOPICS_PER_SUB="${TOPICS_PER_SUB:-1}"
PUBS="${PUBS:-4}"
RATE="${RATE:-500}"
PAYLOAD="${PAYLOAD:-100}"
DURATION="${DURATION:-30}"
WARMUP="${WARMUP:-5}"
SRC_IPS="${SRC_IPS:-24}"
NATS_STORAGE="${NATS_STORAGE:-file}"
# The broker: nats (nats-server -js, the default) or redis (redis-server, no persistence).
ENGINE="${ENGINE:-nats}"
SAMPLE_S="${SAMPLE_S:-5}"
PERF_NODE="${PERF_NODE:-}"
PERF_S="${PERF_S:-15}"
PERF_FREQ="${PERF_FREQ:-499}"
OUT="${OUT:-$ROOT/reports/$(date -u +%Y%m%dT%H%M%SZ)-cluster-100k}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

NATS_PID=""
NODE_PIDS=()
BENCH_PID=""
SAMPLER_PID=""
WINDOW_PID=""
WORK="$(mktemp -d /tmp/tickcast-cluster.XXXXXX)"

cleanup() {
  local rc=$?
  # The bench runs in its own process group (setsid): its worker processes go with it.
  if [ -n "$BENCH_PID" ]; then kill -TERM -- "-$BENCH_PID" 2>/dev/null || true; fi
  if [ -n "$SAMPLER_PID" ]; then pkill -P "$SAMPLER_PID" 2>/dev/null || true; kill "$SAMPLER_PID" 2>/dev/null || true; fi
  if [ -n "$WINDOW_PID" ]; then pkill -P "$WINDOW_PID" 2>/dev/null || true; kill "$WINDOW_PID" 2>/dev/null || true; fi
  for p in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
  for p in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  if [ -n "$NATS_PID" ]; then
    kill -TERM "$NATS_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$NATS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$NATS_PID" 2>/dev/null || true
  fi
  if [ -n "$BENCH_PID" ]; then kill -KILL -- "-$BENCH_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback TCP port (bound and released; nothing else here takes ports meanwhile).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# (An empty PID, ENGINE=none's broker, reads as 0: /proc//stat would be /proc/stat.)
rss_kib() { [ -n "$1" ] || { echo 0; return; }; awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
cpu_ticks() { [ -n "$1" ] || { echo 0; return; }; awk '{sub(/.*\) /,""); print $12+$13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# Sum of a tickcast_* metric over its labels, from one node's /metrics.
metric() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1==m || index($1, m"{")==1 {s+=$2} END {printf "%d", s}'; }

if [ "$(python3 -c "import math; print(math.gcd($TOPICS, $NODES))")" != 1 ]; then
  log "note: TOPICS=$TOPICS and NODES=$NODES share a factor: each node gets only some topics"
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_bench; build_server tickcast; fi

# ---- the broker (NATS_* names hold either broker's process) ----------------------------------
NATS_PORT="$(free_port)"
NATS_MON="$(free_port)"
mkdir -p "$WORK/js"
case "$ENGINE" in
  nats)
    log "nats-server -js on 127.0.0.1:$NATS_PORT (monitor $NATS_MON), store $WORK/js"
    nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$WORK/js" >"$OUT/nats.log" 2>&1 &
    NATS_PID=$!
    BROKER_URL="nats://127.0.0.1:$NATS_PORT"
    BROKER_VERSION="nats-server $(nats-server --version | awk '{print $2}') JetStream ($NATS_STORAGE)"
    for _ in $(seq 1 100); do
      curl -s --max-time 1 "http://127.0.0.1:$NATS_MON/healthz" | grep -q ok && break
      kill -0 "$NATS_PID" 2>/dev/null || { cat "$OUT/nats.log" >&2; echo "nats-server exited" >&2; exit 1; }
      sleep 0.1
    done
    ;;
  redis)
    log "redis-server on 127.0.0.1:$NATS_PORT (no persistence)"
    redis-server --port "$NATS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/js" >"$OUT/redis.log" 2>&1 &
    NATS_PID=$!
    BROKER_URL="redis://127.0.0.1:$NATS_PORT"
    BROKER_VERSION="redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')"
    for _ in $(seq 1 100); do
      redis-cli -p "$NATS_PORT" ping 2>/dev/null | grep -q PONG && break
      kill -0 "$NATS_PID" 2>/dev/null || { cat "$OUT/redis.log" >&2; echo "redis-server exited" >&2; exit 1; }
      sleep 0.1
    done
    ;;
  none)
    log "no broker: $NODES plain node(s) (cluster.engine = \"memory\")"
    BROKER_URL=""
    BROKER_VERSION="none"
    ;;
  *) echo "ENGINE must be nats, redis or none" >&2; exit 2 ;;
esac

# ---- nodes ---------------------------------------------------------------------------------
PORTS=()
URLS=""
for i in $(seq 1 "$NODES"); do
  port="$(free_port)"
  PORTS+=("$port")
  node_log="$OUT/node-$i.log"
  # Each node: one shard; the per-IP connection limits and the message rate are lifted (the
  # bench connects thousands of clients from a few addresses); at most 18,500 connections and 1,024 handshakes in flight, so
  # the node stays under its 20,000 open files.
  cluster_env=()
  if [ "$ENGINE" != none ]; then
    cluster_env=(TICKCAST_CLUSTER__ENGINE="$ENGINE" TICKCAST_CLUSTER__URL="$BROKER_URL"
      TICKCAST_CLUSTER__NODE_ID="node-$i" TICKCAST_CLUSTER__NATS_STORAGE="$NATS_STORAGE")
  fi
  env ${cluster_env[@]+"${cluster_env[@]}"} \
  TICKCAST_AUTH__ANONYMOUS_SUBS='[">"]' TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' \
  TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0 \
  TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX=1000000 TICKCAST_LIMITS__CONNECTIONS_MAX=18500 \
  TICKCAST_LIMITS__HANDSHAKES_PER_SHARD_MAX=1024 \
  TICKCAST_LOG__LEVEL=warn \
    env ${NODE_ENV:-} ${NODE_WRAP:-} "$TICKCAST_BIN" serve --listen "127.0.0.1:$port" --shards 1 >"$node_log" 2>&1 &
  NODE_PIDS+=("$!")
  URLS="${URLS:+$URLS,}ws://127.0.0.1:$port/ws"
done
for i in $(seq 1 "$NODES"); do
  pid="${NODE_PIDS[$((i - 1))]}"
  for _ in $(seq 1 600); do
    grep -q "^listening on" "$OUT/node-$i.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/node-$i.log" >&2; echo "node-$i exited" >&2; exit 1; }
    sleep 0.1
  done
  grep -q "^listening on" "$OUT/node-$i.log" || { echo "node-$i did not listen within 60 s" >&2; exit 1; }
  log "node-$i pid $pid: $(grep -m1 '^listening on' "$OUT/node-$i.log")"
done
PIDS_CSV="$(IFS=,; echo "${NODE_PIDS[*]}")"
PORTS_CSV="$(IFS=,; echo "${PORTS[*]}")"

# Client source addresses: a block of SRC_IPS addresses not used by the other scenarios, a
# different one per run (so a run does not meet the previous run's TIME_WAIT sockets).
block=$(( ($$ + $(date +%s)) % 250 + 1 ))
SRC=""
for j in $(seq 1 "$SRC_IPS"); do SRC="${SRC:+$SRC,}127.2.$block.$j"; done

# ---- sampler: every SAMPLE_S seconds, per node RSS and open connections, nats-server RSS ------
(
  while true; do
    line="{\"t\":$(date +%s.%N | cut -c1-14),\"nodes\":["
    for i in $(seq 1 "$NODES"); do
      pid="${NODE_PIDS[$((i - 1))]}"; port="${PORTS[$((i - 1))]}"
      [ "$i" -gt 1 ] && line+=","
      line+="{\"node\":$i,\"rss_kib\":$(rss_kib "$pid"),\"connections\":$(metric "$port" tickcast_connections),\"cpu_ticks\":$(cpu_ticks "$pid")}"
    done
    line+="],\"nats_rss_kib\":$(rss_kib "$NATS_PID"),\"nats_cpu_ticks\":$(cpu_ticks "$NATS_PID")}"
    echo "$line" >>"$OUT/samples.jsonl"
    sleep "$SAMPLE_S"
  done
) >/dev/null 2>&1 &
SAMPLER_PID=$!
# Stops the sampler and its sleep.
stop_sampler() {
  if [ -n "$SAMPLER_PID" ]; then
    pkill -P "$SAMPLER_PID" 2>/dev/null || true
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
  fi
}

# ---- bench ---------------------------------------------------------------------------------
cat >"$OUT/setup.json" <<EOF
{"date":"$(date -u +%Y-%m-%dT%H:%M:%SZ)","commit":"$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo -dirty)","nodes":$NODES,"subs":$SUBS,"topics":$TOPICS,"topics_per_sub":$TOPICS_PER_SUB,"pubs":$PUBS,"rate":$RATE,"payload":$PAYLOAD,"duration_s":$DURATION,"warmup_s":$WARMUP,"src_ips":$SRC_IPS,"nats_storage":"$NATS_STORAGE","node_env":"${NODE_ENV:-}","node_wrap":"${NODE_WRAP:-}","bench_wrap":"${BENCH_WRAP:-}","node_pids":[$PIDS_CSV],"node_ports":[$PORTS_CSV],"nats_pid":${NATS_PID:-null},"engine":"$ENGINE","nats_version":"$BROKER_VERSION","nproc":$(nproc)}
EOF
nats_ticks0="$(cpu_ticks "$NATS_PID")"
bound=$(( WARMUP + DURATION + 400 ))
log "bench: $SUBS subscribers over $NODES nodes, $TOPICS topics x$TOPICS_PER_SUB, $PUBS publishers on node-1 at $RATE msgs/s, ${DURATION}s window after ${WARMUP}s (bound ${bound}s)"
# shellcheck disable=SC2086
setsid timeout --kill-after=10 "$bound" ${BENCH_WRAP:-} "$BENCH_BIN" fanout --url "$URLS" \
  --subs "$SUBS" --topics "$TOPICS" --topics-per-sub "$TOPICS_PER_SUB" --pubs "$PUBS" \
  --rate "$RATE" --payload "$PAYLOAD" --duration "$DURATION" --warmup "$WARMUP" \
  --drain-max-ms 10000 --connect-timeout-ms 30000 --source-ips "$SRC" \
  --server-pid "$PIDS_CSV" --label "tickcast-cluster-$NODES" --json-out "$OUT/bench.jsonl" \
  $BENCH_EXTRA >"$OUT/bench.txt" 2>"$OUT/bench.stderr" &
BENCH_PID=$!

# ---- the measured window: scheduler snapshots at its start and end, perf on one node ---------
# The bench prints "subscribers connected" when every subscriber is ready; publishing starts
# 0.3 s later and the window WARMUP s after that.
(
  for _ in $(seq 1 "$bound"); do
    grep -q "subscribers connected" "$OUT/bench.stderr" 2>/dev/null && break
    sleep 0.2
  done
  # From 0.5 s into the window to ~3 s before its end: both snapshots fall inside it even
  # when this loop sees the bench's line late or python starts slowly on a loaded machine
  # (the bench exits soon after its window when nothing is left to drain).
  sleep "$(python3 -c "print($WARMUP + 0.8)")"
  bench_pids="$(ps -o pid= -s "$BENCH_PID" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
  groups=()
  for i in $(seq 1 "$NODES"); do groups+=("node-$i=${NODE_PIDS[$((i - 1))]}"); done
  groups+=("broker=${NATS_PID:-}" "bench=$bench_pids")
  python3 "$ROOT/perf/scenarios/proc_snapshot.py" "${groups[@]}" >>"$OUT/window.jsonl"
  if [ -n "$PERF_NODE" ]; then
    perf record -q -F "$PERF_FREQ" -g -p "${NODE_PIDS[$((PERF_NODE - 1))]}" \
      -o "$OUT/perf-node-$PERF_NODE.data" -- sleep "$PERF_S" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  sleep "$(python3 -c "print(max(1, $DURATION - 3.5))")"
  python3 "$ROOT/perf/scenarios/proc_snapshot.py" "${groups[@]}" >>"$OUT/window.jsonl"
  if [ -n "$PERF_NODE" ]; then wait "$perf_pid" || true; fi
) >/dev/null 2>"$OUT/window.stderr" &
WINDOW_PID=$!
bench_rc=0
wait "$BENCH_PID" || bench_rc=$?
BENCH_PID=""
nats_ticks1="$(cpu_ticks "$NATS_PID")"
stop_sampler
wait "$WINDOW_PID" 2>/dev/null || true
WINDOW_PID=""
cat "$OUT/bench.stderr" >&2
cat "$OUT/bench.txt"

# ---- after: per-node counters, nats-server state ---------------------------------------------
for i in $(seq 1 "$NODES"); do
  curl -s --max-time 5 "http://127.0.0.1:${PORTS[$((i - 1))]}/metrics" >"$OUT/metrics-node-$i.txt" || true
done
curl -s --max-time 5 "http://127.0.0.1:$NATS_MON/varz" >"$OUT/nats-varz.json" || true
curl -s --max-time 5 "http://127.0.0.1:$NATS_MON/jsz?streams=true" >"$OUT/nats-jsz.json" || true
echo "{\"bench_rc\":$bench_rc,\"nats_cpu_s_bench\":$(( nats_ticks1 - nats_ticks0 ))e-2}" >"$OUT/after.json"

if [ -n "$PERF_NODE" ] && [ -s "$OUT/perf-node-$PERF_NODE.data" ]; then
  data="$OUT/perf-node-$PERF_NODE.data"
  perf report -i "$data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^$' | head -40 >"$OUT/perf-node-$PERF_NODE-threads.txt" || true
  perf report -i "$data" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -v '^$' | head -80 >"$OUT/perf-node-$PERF_NODE-symbols.txt" || true
  perf script -i "$data" -F comm,ip,sym 2>/dev/null | python3 "$ROOT/perf/scenarios/perf_groups.py" >"$OUT/perf-node-$PERF_NODE-groups.txt" || true
  [ "${KEEP_PERF:-0}" = 1 ] || rm -f "$data"
fi
python3 "$ROOT/perf/scenarios/cluster_summary.py" "$OUT" | tee "$OUT/summary.txt"
[ "$bench_rc" = 0 ] || { echo "tickcast-bench exited with status $bench_rc" >&2; exit 1; }
log "raw output in $OUT"
