#!/usr/bin/env bash
# Detection benchmark: does the detector catch attacks, with which feature set?
#
# Simulates a small mail domain (tests/traffic/simulate.py: users with
# habits, partners, noise that resembles attacks, and ten labelled attack
# scenarios on the later days), parses it, computes the `seed` (the old
# system's six per-line features) and `behavioural` feature sets, trains
# models per set on the attack-free early days (one per training seed,
# --models of them), scores the later days and prints per scenario the
# ROC-AUC and the share of attack episodes alerted at a false-alarm rate of
# 0.5% of normal lines, averaged over the models, side by side. Also
# writes the tuning report of the first behavioural model's scores.
#
#   tests/bench-detection.sh [--check] [--markdown] [--keep DIR] [--days N]
#                            [--train-days N] [--users N] [--seed N] [--models N]
#                            [--max-samples N]
#
#   --seed N    the simulation's seed (default 1); --models N: models per
#               set, trained with seeds 1..N (default 3); --max-samples N:
#               rows per tree (default retrain.max_samples of the config)
#   --check     exit 1 unless the behavioural set meets the targets (every
#               loud scenario AUC >= 0.95 and >= 90% of episodes alerted,
#               slow spraying AUC >= 0.8)
#   --min-alerted X  with --check, the share of episodes required (default 0.9)
#   --markdown  print the table as Markdown (as in docs/detection.md)
#   --keep DIR  keep the traffic, records, models, scores and report in DIR
#
# Uses the binaries in $PF_BIN (default: target/release, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
days=21 train_days=14 users=40 seed=1 models=3 keep="" report_args=() train_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --check|--markdown) report_args+=("$1") ;;
        --min-alerted) report_args+=("$1" "$2"); shift ;;
        --keep) keep=$2; shift ;;
        --days) days=$2; shift ;;
        --train-days) train_days=$2; shift ;;
        --users) users=$2; shift ;;
        --seed) seed=$2; shift ;;
        --models) models=$2; shift ;;
        --max-samples) train_args+=(--max-samples "$2"); shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-detection: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PF_BIN:-}" ]; then
    cargo build --release -q -p pf-parse -p pf-features -p pf-train -p pf-score
    bin=target/release
else
    bin=$PF_BIN
fi
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    work=$keep
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

python3 tests/traffic/simulate.py --days "$days" --train-days "$train_days" \
    --users "$users" --seed "$seed" --out "$work"
"$bin/pf-parse" --timezone UTC "$work/traffic.log" > "$work/records.jsonl"
scored=()
for set in seed behavioural; do
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f %M -o "$work/rss-$set" \
            "$bin/pf-features" --features "features/$set.json" "$work/records.jsonl" > "$work/features-$set.jsonl"
        echo "pf-features --features $set: $(wc -l < "$work/records.jsonl") records, peak RSS $(( $(cat "$work/rss-$set") / 1024 )) MB" >&2
    else
        "$bin/pf-features" --features "features/$set.json" "$work/records.jsonl" > "$work/features-$set.jsonl"
    fi
    python3 tests/traffic/evaluate.py split --labels "$work/labels.csv" --train-days "$train_days" \
        "$work/features-$set.jsonl" "$work/train-$set.jsonl" "$work/test-$set.jsonl"
    files=""
    for k in $(seq "$models"); do
        "$bin/pf-train" --seed "$k" --max-lines all --metrics - "${train_args[@]}" --out "$work/model-$set-$k.json" \
            "$work/train-$set.jsonl" 2> "$work/train-$set-$k.log"
        report=()
        [ "$set" = behavioural ] && [ "$k" = 1 ] && report=(--report "$work/report.html")
        "$bin/pf-score" --model "$work/model-$set-$k.json" "${report[@]}" "$work/test-$set.jsonl" \
            > "$work/scored-$set-$k.jsonl" 2> "$work/score-$set-$k.log"
        files+="${files:+,}$work/scored-$set-$k.jsonl"
    done
    scored+=("$set=$files")
done
python3 tests/traffic/evaluate.py report --labels "$work/labels.csv" --train-days "$train_days" \
    "${report_args[@]}" "${scored[@]}"
[ -n "$keep" ] && echo "bench-detection: files kept in $keep (tuning report: $keep/report.html)" >&2
exit 0
