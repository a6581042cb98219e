#!/usr/bin/env bash
for r in "$@"; do echo "$r: $(awk 'NR==1{t=$1;b=$6} {printf "%.1f:%+d ", $1-t, $6-b}' $r/rollup.txt)"; done
