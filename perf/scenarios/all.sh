#!/usr/bin/env bash
# Every scenario, RUNS times each, for each server, plus the floor program; then the summary.
# Usage: perf/scenarios/all.sh [RUNS] [SERVERS...]   (default 3, tickcast baseline)
# Results: reports/<date>-all/*.jsonl and reports/<date>-all/summary.md. Takes ~30 min for 3 runs.
set -euo pipefail
cd "$(dirname "$0")"
runs="${1:-3}"; shift || true
servers=("$@"); [ ${#servers[@]} -gt 0 ] || servers=(tickcast baseline)
out="../../reports/$(date -u +%Y%m%dT%H%M%SZ)-all"
mkdir -p "$out"
for server in "${servers[@]}"; do
  for scenario in connect-19k fanout-1topic fanout-10topics market-data max-throughput; do
    RESULTS="$out/$scenario.jsonl" bash "./$scenario.sh" "$server" "$runs"
  done
done
RESULTS="$out/floor.jsonl" bash ./floor.sh "$runs"
python3 ../summarize.py "$out"/*.jsonl | tee "$out/summary.md"
