#!/usr/bin/env bash
# The headline of perf/README.md: the maximum sustainable deliveries/s on one core (0 loss,
# p99 ≤ P99_BOUND_MS, default 100 ms) for 1k × 1 topic, 10k × 10 topics and market data, for
# tickcast, the tokio baseline and Node ws, all in one run (the machine's load at the time is
# the same for every server). Rounds alternate the servers' order so none always runs first.
#
# Usage: perf/scenarios/headline.sh [ROUNDS] [SERVERS...]   (defaults: 1, tickcast baseline node-ws)
# A failing step is run twice more before it counts (STEP_RETRIES=2; measured on this machine:
# the same server, load and binary gave p99 8.6 ms and 117 ms in two runs a minute apart).
# Environment: SHAPES (default "1k1 10k10 market", see max-throughput.sh), RESULTS (one
# JSON-lines file for everything, default reports/<time>-headline.jsonl), and lib.sh's.
# Then: python3 perf/summarize.py RESULTS   (its "Max sustainable rate" table)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
rounds="${1:-1}"; shift || true
servers=("$@"); [ ${#servers[@]} -gt 0 ] || servers=(tickcast baseline node-ws)
export STEP_RETRIES="${STEP_RETRIES:-2}"
export RESULTS="${RESULTS:-$here/../../reports/$(date -u +%Y%m%dT%H%M%SZ)-headline.jsonl}"
mkdir -p "$(dirname "$RESULTS")"
for round in $(seq 1 "$rounds"); do
  order=("${servers[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=(); for ((i = ${#servers[@]} - 1; i >= 0; i--)); do order+=("${servers[$i]}"); done
  fi
  for shape in ${SHAPES:-1k1 10k10 market}; do
    for server in "${order[@]}"; do
      echo "== round $round: $shape on $server" >&2
      SHAPE="$shape" bash "$here/max-throughput.sh" "$server" 1
    done
  done
done
python3 "$here/../summarize.py" "$RESULTS"
