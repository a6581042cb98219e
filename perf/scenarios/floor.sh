#!/usr/bin/env bash
# The physical limit: one pre-built 100 B frame per write() to each of N loopback sockets, as
# fast as the kernel allows; N = 100, 1k, 10k; one frame per write and 10 per write.
# The writer is pinned where the server runs (first core of SERVER_CPUS), the sink where the
# bench runs (first core of BENCH_CPUS). Usage: perf/scenarios/floor.sh [RUNS]
source "$(dirname "$0")/lib.sh"
runs="${1:-1}"
build_floor
for _ in $(seq 1 "$runs"); do
  for n in 100 1000 10000; do
    for batch in 1 10; do
      "$FLOOR_BIN" -n "$n" -d 5 --batch "$batch" \
        --writer-cpu "${SERVER_CPUS%%[,-]*}" --sink-cpu "${BENCH_CPUS%%[,-]*}" | tee -a /dev/stderr | grep '^{' >>"$RESULTS"
    done
  done
done
finish
