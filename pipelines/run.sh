#!/usr/bin/env bash
# The main job: builds the tools, then runs the live detector.
#
#   pipelines/run.sh [--config FILE] [LOG FILE...]
#
# * kafka.broker set in the config: the live detector on Kafka
#   (pipelines/live-detector.sh), until stopped with Ctrl-C.
# * no broker configured: replays the bundled two-day sample of a small
#   mail domain (pipelines/sample/) through the same stages with the
#   bundled default model, prints the anomalies it finds, and leaves the
#   output files in output/sample/.
# * LOG FILEs given: replays those instead (output in paths.output_dir).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config=()
if [ "${1:-}" = "--config" ]; then config=(--config "$2"); shift 2; fi

cargo build --release -q -p kafka-tail -p pf-parse -p pf-features -p pf-score -p pf-sink -p pf-train
bin="$root/target/release"
export PF_BIN="$bin"

if [ $# -gt 0 ]; then
    exec pipelines/live-detector.sh "${config[@]}" --replay "$@"
fi

broker="$("$bin/kafka-tail" "${config[@]}" --print-config | sed -n 's/^kafka\.broker=//p')"
if [ -n "$broker" ]; then
    echo "run.sh: live detector on Kafka at $broker (Ctrl-C stops it; offsets are committed)" >&2
    exec pipelines/live-detector.sh "${config[@]}"
fi

out="output/sample"
mkdir -p "$out"
rm -f "$out"/all_detections.jsonl "$out"/anomalies.jsonl "$out"/*_logs.json "$out"/report.html
echo "run.sh: no Kafka broker configured (kafka.broker in config/config.yaml);" \
     "replaying the bundled sample through the live pipeline with the default model" >&2
pipelines/live-detector.sh "${config[@]}" --output-dir "$out" \
    --replay pipelines/sample/mail.log pipelines/sample/roundcube.log
echo "run.sh: output files:" >&2
wc -l "$out"/*.json* >&2
echo "run.sh: tuning report (score histogram, thresholds, top anomalies): $out/report.html" >&2
