#!/usr/bin/env bash
# Fuzzes every target for a bounded time and prints execs and time per target.
#
#   tests/fuzz/run.sh [seconds-per-target]      (default 60)
#
# Stable Rust is enough: cargo-fuzz with `--sanitizer none` passes only stable -C flags.
# Installs cargo-fuzz if it is missing. Runs the targets one after the other, each under
# `nice -n 10` on one core; new corpus entries go to tests/fuzz/corpus/<target>/ (minimize
# with `tests/fuzz/run.sh --cmin` before committing), crashes to tests/fuzz/artifacts/<target>/.
# Environment: CARGO_TARGET_DIR (default /work/target-fuzz if /work exists, else
# tests/fuzz/target), FUZZ_TARGETS (default "http frame deflate protocol envelope filter proxy tls").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

mode=run
if [[ "${1:-}" == "--cmin" ]]; then
    mode=cmin
    shift
fi
secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [--cmin] [seconds-per-target]" >&2; exit 2; }
targets=(${FUZZ_TARGETS:-http frame deflate protocol envelope filter proxy tls})
if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
    if [[ -d /work ]]; then CARGO_TARGET_DIR=/work/target-fuzz; else CARGO_TARGET_DIR="$here/target"; fi
fi
export CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

flags=(--fuzz-dir tests/fuzz --sanitizer none --release --debug-assertions --target-dir "$CARGO_TARGET_DIR")
nice -n 10 cargo fuzz build "${flags[@]}"

if [[ "$mode" == cmin ]]; then
    for t in "${targets[@]}"; do
        before=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
        nice -n 10 cargo fuzz cmin "${flags[@]}" "$t" "tests/fuzz/corpus/$t" >"$CARGO_TARGET_DIR/cmin-$t.log" 2>&1
        after=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
        printf '%-9s corpus %d -> %d files, %s\n' "$t" "$before" "$after" "$(du -sh --apparent-size "tests/fuzz/corpus/$t" | cut -f1)"
    done
    exit 0
fi

status=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "tests/fuzz/corpus/$t"
    log="$CARGO_TARGET_DIR/fuzz-$t.log"
    start=$(date +%s)
    # -max_total_time bounds the run; -timeout turns a hang (one input over 10 s) into a
    # failure; -rss_limit_mb bounds memory (the decoder must stay within its limits).
    if nice -n 10 cargo fuzz run "${flags[@]}" "$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log and tests/fuzz/artifacts/$t/)"
        status=1
    fi
    elapsed=$(( $(date +%s) - start ))
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    files=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
    line=$(printf '%-9s %s  execs %s  exec/s %s  time %ss  corpus %s files (%s)' "$t" "$result" \
        "${execs:-?}" "${rate:-?}" "$elapsed" "$files" "$(du -sh --apparent-size "tests/fuzz/corpus/$t" | cut -f1)")
    echo "$line"
    summary+=("$line")
done
echo "--- summary ($secs s per target)"
printf '%s\n' "${summary[@]}"
exit $status
