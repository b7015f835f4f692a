#!/usr/bin/env bash
# Benchmark: the detector stages end to end on one core, on the real public
# log shared/conformance/real/postfix-logsums-mail.log (69,861 lines): parse
# it once, train a model on it (pf-train, timed), then time pf-features and
# pf-score (read, compute, write JSON) over the records repeated REPEATS
# times. Prints records/s per stage. Model-only figures: cargo bench -p pf-model.
#
#   tests/bench-detect.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-8}
shared=${PF_SHARED_DIR:-../shared}
log="$shared/conformance/real/postfix-logsums-mail.log"
[ -f "$log" ] || { echo "bench-detect: $log not found (set PF_SHARED_DIR)" >&2; exit 2; }
cargo build --release -q -p pf-parse -p pf-features -p pf-train -p pf-score
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)

"$bin/pf-parse" --timezone UTC "$log" > "$work/records.jsonl"
for _ in $(seq "$repeats"); do cat "$work/records.jsonl"; done > "$work/input.jsonl"
n=$(wc -l < "$work/input.jsonl")
rate() { awk -v n="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%.0f", n / (e - s) }'; }

start=$(date +%s.%N)
"${pin[@]}" "$bin/pf-features" "$work/input.jsonl" > "$work/features.jsonl"
end=$(date +%s.%N)
echo "pf-features: $n records, $(rate "$n" "$start" "$end") records/s"

head -n 69861 "$work/features.jsonl" > "$work/train.jsonl"
start=$(date +%s.%N)
"${pin[@]}" "$bin/pf-train" --seed 1 --max-lines all --models-dir "$work/models" --metrics - "$work/train.jsonl" 2> "$work/train.err"
end=$(date +%s.%N)
echo "pf-train:    69861 records in $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }') s (reading included)"

start=$(date +%s.%N)
"${pin[@]}" "$bin/pf-score" --models-dir "$work/models" "$work/features.jsonl" > "$work/scored.jsonl"
end=$(date +%s.%N)
anomalies=$(grep -c '"is_anomaly":true' "$work/scored.jsonl" || true)
echo "pf-score:    $n records, $(rate "$n" "$start" "$end") records/s ($anomalies anomalies explained)"
