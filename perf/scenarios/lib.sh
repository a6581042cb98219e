# Shared by the scenario scripts: build, start a server pinned to its cores, run the bench pinned
# to the others, stop everything. Source it; do not run it.
#
# Environment (all optional):
#   SERVER_CPUS   cores for the server (taskset list), default 1
#   BENCH_CPUS    cores for tickcast-bench and the floor program, default 0
#   PORT          server port, default 9300
#   RESULTS       JSON-lines file the runs are appended to, default reports/<date>-<scenario>.jsonl
#   BENCH_EXTRA   extra tickcast-bench flags appended to every run (e.g. "--recv-pause-us 500")
#   LABEL         the bench's --label (the "server" of the JSON line), default the server's name
#                 (with DEFLATE=1: NAME/deflate)
#   DEFLATE       1: every bench client offers permessage-deflate and requires it agreed
#                 (tickcast-bench --deflate); the baseline and node-ws are started with --deflate
#                 (per-socket compression); tickcast negotiates it by default ([deflate]
#                 enabled = true), so for tickcast only the clients' offer changes
#   DATA          the fanout data: pad (default, "pad":"xxx…") or market (demo-feed-like JSON,
#                 what compression should be measured with); used by scripts via $DATA_FLAGS
#   TLS           1: tickcast also listens for wss:// on 127.0.0.1:TLS_PORT (default PORT+1)
#                 with a self-signed EC P-256 certificate for 127.0.0.1 made by openssl at the
#                 first start, and the bench's clients connect there (--url wss://…, --tls-ca)
#                 and read /metrics on the plain port; labels become NAME/tls. Read at each
#                 start and bench run, so a script may switch it between runs
#
# Scripts may also set, before restart_server, the bash array SERVER_ENV: extra VAR=value
# settings for the next server start only, e.g.
#   SERVER_ENV=(TICKCAST_TOPICS='[{pattern="bench.>",delivery="batched",batch_window_ms=1}]')
#   CARGO_TARGET_DIR            target dir of the root crate, default ./target
#   BASELINE_TARGET_DIR         target dir of perf/baseline, default perf/baseline/target
#   SKIP_BUILD=1                use the binaries in those target dirs as they are (a long run
#                               then cannot pick up source edits made while it runs)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SERVER_CPUS="${SERVER_CPUS:-1}"
BENCH_CPUS="${BENCH_CPUS:-0}"
PORT="${PORT:-9300}"
BENCH_EXTRA="${BENCH_EXTRA:-}"
DEFLATE="${DEFLATE:-0}"
DATA="${DATA:-}"
TLS="${TLS:-0}"
TLS_PORT="${TLS_PORT:-$((PORT + 1))}"
TLS_DIR=""
SCENARIO="$(basename "$0" .sh)"
mkdir -p "$ROOT/reports"
RESULTS="${RESULTS:-$ROOT/reports/$(date -u +%Y%m%dT%H%M%SZ)-$SCENARIO.jsonl}"
BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tickcast-bench"
TICKCAST_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tickcast"
BASELINE_BIN="${BASELINE_TARGET_DIR:-$ROOT/perf/baseline/target}/release/tickcast-baseline"
FLOOR_BIN="$ROOT/perf/floor/floor"
SERVER_PID=""
SERVER_NAME=""
SERVER_LOG=""
SERVER_ENV=()

log() { echo "== $*" >&2; }

# Cores in a taskset list such as "1" or "0-1" or "2,3".
count_cpus() { taskset -c "$1" nproc; }

build_bench() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then return 0; fi
  log "building tickcast-bench"
  (cd "$ROOT" && cargo build --release --bin tickcast-bench >&2)
}

build_floor() {
  log "building perf/floor"
  make -s -C "$ROOT/perf/floor" >&2
}

build_server() {
  if [ "${SKIP_BUILD:-0}" = 1 ] && [ "$1" != node-ws ]; then return 0; fi
  case "$1" in
    baseline)
      log "building perf/baseline"
      (cd "$ROOT/perf/baseline" && CARGO_TARGET_DIR="${BASELINE_TARGET_DIR:-$ROOT/perf/baseline/target}" \
        cargo build --release >&2) ;;
    node-ws) ;; # run.sh installs it
    tickcast)
      log "building tickcast"
      (cd "$ROOT" && cargo build --release --bin tickcast >&2) ;;
    *) echo "unknown server '$1' (tickcast | baseline | node-ws)" >&2; exit 2 ;;
  esac
}

# The certificate and key of TLS=1 runs, made once per script run (removed on exit). CA:FALSE:
# rustls clients (the bench's) refuse a certificate marked as a CA as the server's own.
make_tls_cert() {
  [ -n "$TLS_DIR" ] && return 0
  TLS_DIR="$(mktemp -d /tmp/tickcast-tls.XXXXXX)"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    2>/dev/null
}

# start_server NAME: starts it pinned to SERVER_CPUS on 127.0.0.1:PORT, waits for "listening on"
# (and, with TLS=1, "tls listening on").
start_server() {
  SERVER_NAME="$1"
  SERVER_LOG="$(mktemp /tmp/tickcast-server.XXXXXX)"
  local threads
  threads="$(count_cpus "$SERVER_CPUS")"
  # Extra settings for this start (empty unless a script sets SERVER_ENV).
  local -a extra_env=(${SERVER_ENV[@]+"${SERVER_ENV[@]}"})
  # Per-socket permessage-deflate for the peers that need a flag (tickcast: on by default).
  local -a deflate_flag=()
  if [ "$DEFLATE" = 1 ]; then deflate_flag=(--deflate); fi
  if [ "$TLS" = 1 ]; then
    [ "$SERVER_NAME" = tickcast ] || { echo "TLS=1 is for tickcast only" >&2; exit 2; }
    make_tls_cert
    extra_env+=("TICKCAST_TLS__LISTEN=127.0.0.1:$TLS_PORT" "TICKCAST_TLS__CERT_FILE=$TLS_DIR/cert.pem"
      "TICKCAST_TLS__KEY_FILE=$TLS_DIR/key.pem")
  fi
  if [ ${#extra_env[@]} -gt 0 ]; then log "server env: ${extra_env[*]}"; fi
  case "$SERVER_NAME" in
    baseline)
      taskset -c "$SERVER_CPUS" "$BASELINE_BIN" --listen "127.0.0.1:$PORT" --threads "$threads" \
        ${deflate_flag[@]+"${deflate_flag[@]}"} >"$SERVER_LOG" 2>&1 &
      ;;
    node-ws)
      taskset -c "$SERVER_CPUS" "$ROOT/perf/peers/node-ws/run.sh" "$PORT" 127.0.0.1 \
        ${deflate_flag[@]+"${deflate_flag[@]}"} >"$SERVER_LOG" 2>&1 &
      ;;
    tickcast)
      # One shard per server core (pinned inside those cores); the bench connects from a few
      # loopback addresses, so the per-IP limits are lifted for the run. The bench's clients
      # are anonymous and publish thousands of messages/s on their own topics: anonymous rights
      # are opened and the per-connection message rate is off (the peers have neither).
      TICKCAST_LIMITS__CONNECTIONS_PER_IP_MAX=1000000 TICKCAST_LOG__LEVEL=warn \
      TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 TICKCAST_LIMITS__CLIENT_MESSAGES_PER_S=0 \
      TICKCAST_AUTH__ANONYMOUS_SUBS='[">"]' TICKCAST_AUTH__ANONYMOUS_PUBS='[">"]' \
        env ${extra_env[@]+"${extra_env[@]}"} \
        taskset -c "$SERVER_CPUS" "$TICKCAST_BIN" serve --listen "127.0.0.1:$PORT" --shards "$threads" \
        >"$SERVER_LOG" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  local ready="^listening on"
  if [ "$TLS" = 1 ]; then ready="^tls listening on"; fi
  for _ in $(seq 1 600); do
    if grep -q "$ready" "$SERVER_LOG"; then
      log "$SERVER_NAME pid $SERVER_PID on cores $SERVER_CPUS: $(grep -m1 '^listening on' "$SERVER_LOG")"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$SERVER_LOG" >&2; echo "server exited" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "server did not print 'listening on' within 60 s" >&2
  exit 1
}

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  [ -n "$SERVER_LOG" ] && rm -f "$SERVER_LOG"
  SERVER_LOG=""
}
cleanup() {
  stop_server
  if [ -n "$TLS_DIR" ]; then rm -rf "$TLS_DIR"; fi
}
trap cleanup EXIT

# Restart between runs so RSS and CPU start from a fresh process.
restart_server() { stop_server; sleep 1; next_source_ips; start_server "$1"; }

# bench SUBCOMMAND ARGS...: runs tickcast-bench against the running server.
bench() {
  local sub="$1"; shift
  # shellcheck disable=SC2086
  local -a deflate=()
  local label="${LABEL:-$SERVER_NAME}"
  if [ "$DEFLATE" = 1 ]; then deflate=(--deflate); label="${LABEL:-$SERVER_NAME/deflate}"; fi
  local -a target=(--url "ws://127.0.0.1:$PORT/ws")
  if [ "$TLS" = 1 ]; then
    target=(--url "wss://127.0.0.1:$TLS_PORT/ws" --tls-ca "$TLS_DIR/cert.pem"
      --metrics-url "ws://127.0.0.1:$PORT/ws")
    label="${LABEL:-$label/tls}"
  fi
  taskset -c "$BENCH_CPUS" "$BENCH_BIN" "$sub" "${target[@]}" \
    --label "$label" --server-pid "$SERVER_PID" --json-out "$RESULTS" \
    ${deflate[@]+"${deflate[@]}"} "$@" $BENCH_EXTRA
}

# Client source addresses. restart_server moves to a fresh block of four for every run: a run
# that reused the previous run's 4-tuples within 60 s hit the server's TIME_WAIT sockets, and
# those SYNs waited for a 1 s retransmit (measured: 19k connects fell from ~15k/s to ~1k/s on
# the second and third back-to-back runs, for every server).
SOURCE_BLOCK=0
next_source_ips() {
  SOURCE_BLOCK=$(( (SOURCE_BLOCK % 250) + 1 ))
  SOURCE_IPS="127.1.$SOURCE_BLOCK.1,127.1.$SOURCE_BLOCK.2,127.1.$SOURCE_BLOCK.3,127.1.$SOURCE_BLOCK.4"
}
next_source_ips

# Flags for fanout runs from DATA (empty: the bench's default padding).
DATA_FLAGS=""
if [ -n "$DATA" ]; then DATA_FLAGS="--data $DATA"; fi

finish() { log "results appended to $RESULTS"; }
