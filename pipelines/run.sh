#!/usr/bin/env bash
# The main job. With a Kafka broker configured it will run the live detector
# (kafka-tail | pf-parse | pf-features | pf-score: issues 3 and 4). Today the
# stages after pf-parse do not exist yet, so this builds the tools and parses
# the bundled sample (or the files given) and prints a table of what was found.
#
#   pipelines/run.sh [--config FILE] [LOG FILE...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
config=()
if [ "${1:-}" = "--config" ]; then config=(--config "$2"); shift 2; fi
cargo build --release -q -p pf-parse
inputs=("$@")
[ ${#inputs[@]} -gt 0 ] || inputs=("$root/pipelines/sample/mail.log")
"$root/target/release/pf-parse" "${config[@]}" --stats "${inputs[@]}"
