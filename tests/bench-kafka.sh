#!/usr/bin/env bash
# Benchmark: kafka-tail throughput against a reference librdkafka consumer
# (Python confluent-kafka) on a local tansu broker, and the live pipeline's
# end-to-end latency at 1k and 10k messages/s. Details: tests/bench_kafka.py.
#
#   tests/bench-kafka.sh [--messages N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(tests/setup-python.sh)"
tansu="$(tests/find-tansu.sh "$python")"
cargo build --release -q -p kafka-tail -p pf-parse -p pf-features -p pf-score -p pf-sink
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
exec "$python" tests/bench_kafka.py --tansu "$tansu" --bin "$PWD/target/release" --root "$PWD" "$@"
