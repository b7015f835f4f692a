#!/usr/bin/env bash
# Soak test: the live pipeline (pipelines/live-detector.sh) on a local tansu
# broker at a sustained rate, each stage's memory sampled, every message
# accounted for at the end (count in = count out). Details: tests/soak.py.
#
#   tests/soak.sh [--minutes 10] [--rate 2000] [--every 30]
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(tests/setup-python.sh)"
tansu="$(tests/find-tansu.sh "$python")"
cargo build --release -q -p kafka-tail -p pf-parse -p pf-features -p pf-score -p pf-sink
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2
exec "$python" tests/soak.py --tansu "$tansu" --bin "$PWD/target/release" --root "$PWD" "$@"
