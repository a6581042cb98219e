#!/usr/bin/env bash
# The cluster run against single nodes of the same per-node shape, back to back in one
# invocation (issue 14 item 3): what the cluster costs per delivery and in latency.
#
#   cluster  NODES nodes over nats-server, SUBS subscribers (cluster-100k.sh's defaults:
#            6 nodes, 100,000 subscribers, 997 topics, 4 publishers, 500 msgs/s)
#   single   one node, no broker (cluster.engine = "memory"), SUBS/NODES subscribers over the
#            same topics, the same message rate, published on that node: the shape one
#            cluster node serves, without the broker and without the other nodes
#   nats1    one node over nats-server with the same SUBS/NODES subscribers: the broker hop
#            alone, without the other nodes (separates the hop from the node count)
#
# Each variant is a full cluster-100k.sh run (fresh processes, its own output directory); a
# round runs them all, and rounds alternate the order. The comparison (CPU per delivery of the
# nodes, p50/p99, frames per write, context switches, run-queue wait, the machine's busy
# cores) is printed and written to OUT/compare.txt and OUT/compare.jsonl by
# cluster_compare.py. Take the whole invocation under the perf lock, e.g.
#   flock /tmp/tickcast-perf.lock perf/scenarios/cluster-vs-single.sh
#
# A/B of two builds in the same invocation: BUILDS="A=/dir/a B=/dir/b", each dir holding
# release/tickcast and release/tickcast-bench (a CARGO_TARGET_DIR); every variant then runs
# once per build (order alternating with the rounds), into round-R-VARIANT-LABEL.
#
# A/B of two node settings in the same invocation: SETTINGS="LABEL:VAR=value[,VAR=value…] …",
# e.g. SETTINGS="shard:TICKCAST_CLUSTER__NATS_LIVE_READER=shard bridge:TICKCAST_CLUSTER__NATS_LIVE_READER=bridge";
# the cluster and nats1 variants then run once per setting (added to NODE_ENV), into
# round-R-VARIANT-LABEL, and single once per round (it has no broker); the ratios compare each
# labelled cluster run with that round's single node.
#
# Environment (defaults): ROUNDS=1, VARIANTS="cluster single nats1", OUT=reports/<UTC>-cluster-vs-single,
#   PERF=1: perf record on node PERF_CLUSTER_NODE (3) of the cluster and on the single nodes
#   (cluster-100k.sh's PERF_NODE, PERF_S, PERF_FREQ), SKIP_BUILD=1; everything else (NODES,
#   SUBS, TOPICS, PUBS, RATE, DURATION, WARMUP, NODE_ENV, BENCH_EXTRA, CARGO_TARGET_DIR) is
#   passed to cluster-100k.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROUNDS="${ROUNDS:-1}"
VARIANTS="${VARIANTS:-cluster single nats1}"
NODES="${NODES:-6}"
SUBS="${SUBS:-100000}"
PER_NODE=$(( (SUBS + NODES - 1) / NODES ))
OUT="${OUT:-$ROOT/reports/$(date -u +%Y%m%dT%H%M%SZ)-cluster-vs-single}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --bin tickcast --bin tickcast-bench >&2)
fi

run_variant() {
  local round="$1" v="$2" dir="$OUT/round-$1-$2${3:+-$3}"
  local perf_node=""
  echo "== round $round: $v" >&2
  case "$v" in
    cluster)
      [ "${PERF:-0}" = 1 ] && perf_node="${PERF_CLUSTER_NODE:-3}"
      SKIP_BUILD=1 NODES="$NODES" SUBS="$SUBS" ENGINE=nats PERF_NODE="$perf_node" OUT="$dir" \
        "$HERE/cluster-100k.sh" >/dev/null ;;
    single)
      [ "${PERF:-0}" = 1 ] && perf_node=1
      SKIP_BUILD=1 NODES=1 SUBS="$PER_NODE" ENGINE=none PERF_NODE="$perf_node" OUT="$dir" \
        "$HERE/cluster-100k.sh" >/dev/null ;;
    nats1)
      [ "${PERF:-0}" = 1 ] && perf_node=1
      SKIP_BUILD=1 NODES=1 SUBS="$PER_NODE" ENGINE=nats PERF_NODE="$perf_node" OUT="$dir" \
        "$HERE/cluster-100k.sh" >/dev/null ;;
    *) echo "unknown variant $v (cluster | single | nats1)" >&2; exit 2 ;;
  esac
  cat "$dir/summary.txt" >&2
}

# The words of $1 in reverse order ("" stays "").
reverse() { echo "$1" | tr ' ' '\n' | grep -v '^$' | tac | paste -sd ' ' || true; }
for round in $(seq 1 "$ROUNDS"); do
  order="$VARIANTS"
  builds="${BUILDS:-}"
  if [ $((round % 2)) = 0 ]; then order="$(reverse "$VARIANTS")"; builds="$(reverse "$builds")"; fi
  settings="${SETTINGS:-}"
  if [ $((round % 2)) = 0 ]; then settings="$(reverse "$settings")"; fi
  for v in $order; do
    if [ -n "$settings" ] && [ "$v" != single ]; then
      for s in $settings; do
        vars="${s#*:}"
        NODE_ENV="${NODE_ENV:-} ${vars//,/ }" run_variant "$round" "$v" "${s%%:*}"
      done
      continue
    fi
    if [ -z "$builds" ]; then run_variant "$round" "$v"; continue; fi
    for b in $builds; do
      CARGO_TARGET_DIR="${b#*=}" run_variant "$round" "$v" "${b%%=*}"
    done
  done
done
python3 "$HERE/cluster_compare.py" "$OUT" | tee "$OUT/compare.txt"
