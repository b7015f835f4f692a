#!/usr/bin/env bash
# Performance report: measures the tools on this machine and writes
# docs/performance.md (or --out FILE). Every figure in it comes from the run.
#
#   tests/perf-report.sh [--quick] [--out FILE] [--sizes N,N,...] [--seed N]
#                        [--kafka-messages N] [--pipeline-messages N]
#                        [--latency-seconds S] [--shap-rows N] [--no-kafka]
#                        [--tmpdir DIR]
#
# What it measures (details: tests/perf_report.py):
#   1. the machine: CPU, cores, RAM, OS, rustc, git commit, date;
#   2. pf-parse, pf-features, pf-train and pf-score one at a time, each
#      pinned to one core (taskset -c 0), lines/s and peak RSS, on the
#      public real log $PF_SHARED_DIR/conformance/real/postfix-logsums-mail.log
#      (PF_SHARED_DIR defaults to ../shared) and on generated logs of --sizes
#      lines (default 1000000,10000000: tests/traffic/simulate.py, repeated
#      with shifted dates to reach the size);
#   3. kafka-tail's messages/s and peak RSS on a local tansu broker, the live
#      pipeline's throughput and its end-to-end latency percentiles
#      (tests/bench_kafka.py, which starts and stops the broker);
#   4. scikit-learn's IsolationForest (fit, decision_function) and shap's
#      TreeExplainer against pf-train and pf-score on the same feature rows
#      (the real log's), and pf-model alone (cargo bench -p pf-model).
#
#   --quick             small sizes for trying the script (50000,200000 lines,
#                       200k Kafka messages, 2 s per latency rate): ~2-3 minutes
#                       after building (later options override its sizes)
#   --sizes LIST        generated log sizes in lines; empty: the real log only
#   --seed N            simulation and training seed (default 1)
#   --kafka-messages N  messages kafka-tail reads (default 2000000)
#   --pipeline-messages N  messages through the whole live pipeline (default 500000)
#   --latency-seconds S seconds per latency measurement (default 5)
#   --shap-rows N       rows shap explains (default 2000; shap is slow)
#   --no-kafka          leave out part 3 (no tansu broker needed)
#   --tmpdir DIR        where intermediate files go (default $TMPDIR or /tmp);
#                       10M lines need a few GB with zstd installed, ~20 GB without
#
# With the defaults it takes about 10-20 minutes on 2 cores; run it on an
# otherwise idle machine. Environment:
#   PF_BIN=DIR                    use the binaries in DIR instead of building
#                                 them (cargo build --release)
#   PF_PERF_SKIP_CARGO_BENCH=1    do not run cargo bench -p pf-model
#   PF_SHARED_DIR=DIR             the public corpora (default ../shared)
set -euo pipefail
started=$(date +%s.%N)
cmdline="tests/perf-report.sh"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
for v in PF_PERF_SKIP_CARGO_BENCH PF_BIN PF_SHARED_DIR; do
    if [ -n "${!v:-}" ]; then cmdline="$v=$(printf '%q' "${!v}") $cmdline"; fi
done
caller=$PWD
cd "$(dirname "$0")/.."
root=$PWD

out=docs/performance.md out_given="" sizes=1000000,10000000 seed=1 kafka_messages=2000000
pipeline_messages=500000 latency_seconds=5 shap_rows=2000 kafka=yes tmpdir=${TMPDIR:-/tmp}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) sizes=50000,200000 kafka_messages=200000 pipeline_messages=50000 latency_seconds=2 ;;
        --out) out=$2 out_given=yes; shift ;;
        --sizes) sizes=$2; shift ;;
        --seed) seed=$2; shift ;;
        --kafka-messages) kafka_messages=$2; shift ;;
        --pipeline-messages) pipeline_messages=$2; shift ;;
        --latency-seconds) latency_seconds=$2; shift ;;
        --shap-rows) shap_rows=$2; shift ;;
        --no-kafka) kafka=no ;;
        --tmpdir) tmpdir=$2; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "perf-report: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
# --out and --tmpdir are relative to where the script was started; the
# default docs/performance.md is the checkout's.
if [ -z "$out_given" ]; then out="$root/$out"; fi
case "$out" in /*) ;; *) out="$caller/$out" ;; esac
case "$tmpdir" in /*) ;; *) tmpdir="$caller/$tmpdir" ;; esac

shared=${PF_SHARED_DIR:-../shared}
real_log="$shared/conformance/real/postfix-logsums-mail.log"
[ -f "$real_log" ] || { echo "perf-report: $real_log not found (set PF_SHARED_DIR)" >&2; exit 2; }
real_log="$(cd "$(dirname "$real_log")" && pwd)/$(basename "$real_log")"

python="$(tests/setup-python.sh)"
tansu="" kafka_skipped=""
if [ "$kafka" = yes ]; then
    tansu="$(tests/find-tansu.sh "$python")"
else
    kafka_skipped="--no-kafka"
fi

if [ -n "${PF_BIN:-}" ]; then
    bin="$(cd "$PF_BIN" && pwd)"
    built="prebuilt, from \`PF_BIN=$PF_BIN\` (not built by this run)"
else
    cargo build --release -q -p kafka-tail -p pf-parse -p pf-features -p pf-train -p pf-score -p pf-sink
    bin="$root/target/release"
    built="built by this run: \`cargo build --release\`"
fi

work="$(mktemp -d "$tmpdir/perf-report.XXXXXX")"
trap 'rm -rf "$work"' EXIT

pin=()
command -v taskset >/dev/null && pin=(taskset -c 0)
bench_file="" bench_skipped=""
if [ "${PF_PERF_SKIP_CARGO_BENCH:-}" = 1 ]; then
    bench_skipped="PF_PERF_SKIP_CARGO_BENCH=1"
else
    # Build first, then run the benchmark alone on one core.
    cargo bench -q -p pf-model --no-run
    echo "perf-report: cargo bench -p pf-model" >&2
    "${pin[@]}" cargo bench -q -p pf-model > "$work/cargo-bench.txt"
    bench_file="$work/cargo-bench.txt"
fi

# --opt=VALUE throughout: a value may begin with "--".
"$python" tests/perf_report.py report --root="$root" --bin="$bin" --built="$built" --tansu="$tansu" \
    --work="$work" --out="$out" --command="$cmdline" --real-log="$real_log" --sizes="$sizes" \
    --seed="$seed" --shap-rows="$shap_rows" --kafka-messages="$kafka_messages" \
    --pipeline-messages="$pipeline_messages" --latency-seconds="$latency_seconds" \
    --kafka-skipped="$kafka_skipped" --cargo-bench="$bench_file" --bench-skipped="$bench_skipped" \
    --started="$started"
