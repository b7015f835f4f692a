#!/usr/bin/env bash
# Benchmark: pf-parse end to end (read, parse, write JSON) on one core, on the
# real public log shared/conformance/real/postfix-logsums-mail.log repeated
# to about a million lines. Prints lines/s and MB/s for each run and the median.
#
#   tests/bench-parse.sh [REPEATS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-15}
runs=${2:-5}
shared=${PF_SHARED_DIR:-../shared}
log="$shared/conformance/real/postfix-logsums-mail.log"
[ -f "$log" ] || { echo "bench-parse: $log not found (set PF_SHARED_DIR)" >&2; exit 2; }

cargo build --release -q -p pf-parse
bin=target/release/pf-parse
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for _ in $(seq "$repeats"); do cat "$log"; done > "$work/input.log"
lines=$(wc -l < "$work/input.log")
bytes=$(wc -c < "$work/input.log")
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

echo "pf-parse benchmark: $lines lines, $((bytes / 1024 / 1024)) MiB input, $(nproc) cores available, pinned to one: ${pin[*]:-no}"
rates=()
for run in $(seq "$runs"); do
  start=$(date +%s.%N)
  "${pin[@]}" "$bin" --timezone UTC "$work/input.log" > "$work/out.jsonl"
  end=$(date +%s.%N)
  out_lines=$(wc -l < "$work/out.jsonl")
  [ "$out_lines" -eq "$lines" ] || { echo "bench-parse: $out_lines records for $lines lines" >&2; exit 1; }
  rate=$(awk -v l="$lines" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", l / (e - s) }')
  mbs=$(awk -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", b / 1048576 / (e - s) }')
  echo "run $run: $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }') s, $rate lines/s, $mbs MB/s in"
  rates+=("$rate")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median: $median lines/s (one core, end to end)"
