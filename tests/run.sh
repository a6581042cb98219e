#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it:
#   1. formatting and lints (rustfmt, clippy -D warnings, rustdoc -D warnings),
#   2. unit, property and integration tests (`cargo test`; every integration test runs the
#      real server on both the io_uring and the epoll driver),
#   3. WebSocket conformance: the Autobahn|Testsuite cases 1-10 (kosoku) against `/echo`, on
#      both drivers.
# Needs: the Rust toolchain, python3 with venv/pip (kosoku and websockets are installed into
# target/venv), node and npm (ws into target/node), chromium for the browser test
# (tests/browser.rs), promtool (package prometheus) for tests/prometheus.rs, nats-server
# and redis-server for the cluster tests (tests/cluster.rs starts its own on free loopback
# ports; tests/k8s.rs runs one with tuning/k8s's NATS configuration), and ip (iproute2) and
# iptables for tests/netem.rs (loss, delay and partitions in network namespaces it creates; as
# root only, it says SKIP otherwise), nginx and haproxy for tests/proxies.rs (the shipped
# tuning/nginx and tuning/haproxy configurations in front of two nodes), all installed here with
# apt-get when missing and running as root. tests/k8s.rs validates tuning/k8s/ with
# kubernetes-validate (pinned, in target/venv).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

# Every step runs even when an earlier one failed (one failure must not hide the others); the
# script fails at the end if any did.
failed=()

missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
# tests/netem.rs runs (and needs these) only as root; elsewhere it skips, saying so.
if [ "$(id -u)" = 0 ]; then
    command -v ip >/dev/null || missing+=(iproute2)
    command -v iptables >/dev/null || missing+=(iptables)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing ${missing[*]} (cluster, client, browser and proxy tests)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "the tests need ${missing[*]}: install them (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

step "rustfmt"
cargo fmt --all -- --check || failed+=(rustfmt)

step "clippy"
cargo clippy --all-targets --all-features -- -D warnings || failed+=(clippy)

step "rustdoc"
# The source's own docs (module maps, invariants) are read: a broken link is an error.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --quiet || failed+=(rustdoc)

step "client libraries (target/venv)"
# Pinned: the conformance runner, Python websockets for tests/clients.rs, and
# kubernetes-validate (the Kubernetes API schemas) for tests/k8s.rs.
venv=target/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check kosoku==0.1.0 websockets==15.0.1 \
    kubernetes-validate==1.37.0
# Pinned: Node ws for tests/clients.rs (needs node and npm).
nodedir=target/node
[ -d "$nodedir/node_modules/ws" ] && grep -q '"version": "8.18.3"' "$nodedir/node_modules/ws/package.json" ||
    npm install --silent --no-audit --no-fund --prefix "$nodedir" ws@8.18.3
# Pinned Centrifugo SDKs (centrifuge-python, npm centrifuge) for tests/centrifugo.rs and
# Binance connectors (binance-sdk-spot, @binance/spot) for tests/binance.rs, each from its
# lock file (tests/clients/*/), in target/venv-* and target/node-*.
bash tests/clients/centrifugo/install.sh
bash tests/clients/binance/install.sh
# Headless Chromium for tests/browser.rs: Debian's package, not pinned to a version, since
# Debian replaces it with every security update (an exact apt pin would stop installing within
# weeks). Its version is printed here so a run's log says which browser passed or failed.
chromium=$(command -v chromium)
"$chromium" --version 2>/dev/null || echo "$chromium --version failed"
# nginx and haproxy for tests/proxies.rs: Debian's packages, unpinned for the same reason.
nginx -v 2>&1 || echo "nginx -v failed"
haproxy -v 2>&1 | sed -n 1p || echo "haproxy -v failed"

step "cargo test"
# --no-fail-fast: a failing test binary does not skip the ones after it.
# fault-injection: tests/crash.rs makes a shard and the cluster bridge panic on purpose.
# TICKCAST_TEST_PYTHON, TICKCAST_TEST_NODE_PATH: the pinned clients for tests/clients.rs;
# TICKCAST_TEST_CHROMIUM: the browser for tests/browser.rs; TICKCAST_TEST_PROMTOOL: promtool
# for tests/prometheus.rs (Debian package prometheus); TICKCAST_TEST_KUBERNETES_VALIDATE: the
# pinned validator for tests/k8s.rs (which also reads YAML with TICKCAST_TEST_PYTHON's PyYAML);
# TICKCAST_TEST_CENTRIFUGO_*,
# TICKCAST_TEST_BINANCE_*: the pinned SDKs and connectors (given to cargo test only:
# a TICKCAST_* variable in the environment of the conformance server below would be read as a
# setting).
TICKCAST_TEST_PYTHON="$PWD/$venv/bin/python" TICKCAST_TEST_NODE_PATH="$PWD/$nodedir/node_modules" \
    TICKCAST_TEST_CHROMIUM="$chromium" TICKCAST_TEST_PROMTOOL="$(command -v promtool)" \
    TICKCAST_TEST_KUBERNETES_VALIDATE="$PWD/$venv/bin/kubernetes-validate" \
    TICKCAST_TEST_CENTRIFUGO_PYTHON="$PWD/target/venv-centrifugo/bin/python" \
    TICKCAST_TEST_CENTRIFUGO_NODE_PATH="$PWD/target/node-centrifugo/node_modules" \
    TICKCAST_TEST_BINANCE_PYTHON="$PWD/target/venv-binance/bin/python" \
    TICKCAST_TEST_BINANCE_NODE_PATH="$PWD/target/node-binance/node_modules" \
    cargo test --all-targets --features fault-injection --no-fail-fast || failed+=("cargo test")

step "conformance (Autobahn cases 1-10 via kosoku)"
cargo build --quiet --bin tickcast
for driver in io_uring epoll; do
    log=$(mktemp)
    # The suite opens ~300 connections from one address within seconds: the per-IP connect
    # rate limit (a production default) is turned off for it.
    TICKCAST_LIMITS__CONNECT_RATE_PER_IP_PER_S=0 \
        ./target/debug/tickcast serve --echo --driver "$driver" --listen 127.0.0.1:0 >"$log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' EXIT
    # Waits for the address line while the process lives; 60 s is a failure bound (a loaded
    # machine may take a while to start it), not a pause.
    for _ in $(seq 1200); do
        grep -q '^listening on ' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    addr=$(sed -n 's/^listening on //p' "$log" | head -n1)
    if [ -z "$addr" ]; then
        cat "$log"
        echo "tickcast did not start"
        failed+=("conformance $driver")
    else
        out="target/conformance/$driver"
        rm -rf "$out"
        echo "driver $driver on $addr"
        # kosoku exits non-zero unless every case passes; reports go to $out.
        "$venv/bin/kosoku" -x '12.*' -x '13.*' -p 4 -o "$out" "ws://$addr/echo" | tail -n 3 ||
            failed+=("conformance $driver")
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
    step "FAILED: ${failed[*]}"
    exit 1
fi
step "all tests passed"
