#!/usr/bin/env bash
# Detection benchmark: does the detector catch attacks, with which feature
# set and which model?
#
# Two sources of labelled traffic:
#   simulated (default)  tests/traffic/simulate.py: a small mail domain with
#                        habits, partners, noise that resembles attacks, and
#                        ten labelled attack scenarios on the later days;
#   --real LOG           a real mail log with attack episodes injected in its
#                        own style (tests/traffic/inject.py); every real line
#                        stays, labelled normal; training on the early part.
# It parses the traffic, computes the `seed` (the old system's six per-line
# features) and `behavioural` feature sets, trains on the attack-free early
# days the old system's model (seed features, forest), the forest on the
# behavioural features (one per training seed, --models of them) and the
# default tail model, scores the later days and prints per scenario the
# ROC-AUC and the share of attack episodes alerted at a false-alarm rate of
# 0.5% of normal lines (forests averaged over their models), side by side.
# Then the anchors (tests/traffic/anchors.py, in the test venv): the
# default model beside PyOD's ECOD, COPOD and IForest fitted on the same
# feature rows, with its calibrated severities: episodes alerted at `low`,
# with a line above `low`, and the share of normal lines at each severity.
# Also writes the tuning report of the default model's scores.
#
#   tests/bench-detection.sh [--check] [--markdown] [--keep DIR] [--days N]
#                            [--train-days N] [--users N] [--seed N] [--models N]
#                            [--max-samples N] [--real LOG] [--no-anchors]
#
#   --seed N    the simulation's seed (default 1); --models N: models per
#               set, trained with seeds 1..N (default 3); --max-samples N:
#               rows per tree (default retrain.max_samples of the config)
#   --check     exit 1 unless the default model meets the targets (every
#               loud scenario AUC >= 0.95 and >= 90% of episodes alerted,
#               slow spraying AUC >= 0.8); the anchors' targets are printed
#               (anchors.py --check applies them)
#   --min-alerted X  with --check, the share of episodes required (default 0.9)
#   --markdown  print the table as Markdown (as in docs/detection.md)
#   --keep DIR  keep the traffic, records, models, scores and report in DIR
#
# Uses the binaries in $PF_BIN (default: target/release, built if missing)
# and the Python in $PF_PYTHON (default: the test venv, tests/setup-python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
days=21 train_days=14 users=40 seed=1 models=3 keep="" report_args=() train_args=()
real="" anchors=1 markdown=()
while [ $# -gt 0 ]; do
    case "$1" in
        --check) report_args+=("$1") ;;
        --markdown) report_args+=("$1"); markdown=(--markdown) ;;
        --real) real=$2; shift ;;
        --no-anchors) anchors=0 ;;
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
    cargo build --release -q -p pf-parse -p pf-features -p pf-train -p pf-score -p pf-sink
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

parse_args=(--timezone UTC)
if [ -n "$real" ]; then
    python3 tests/traffic/inject.py --log "$real" --seed "$seed" --out "$work" > /dev/null
    # The split and what the log's stamps lack (year, zone), from the injector.
    train_days=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["train_days"])' "$work/split.json")
    read -r year zone < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s.get("year") or "-", s.get("zone") or "UTC")' "$work/split.json")
    parse_args=(--timezone "$zone")
    [ "$year" = - ] || parse_args+=(--year "$year")
else
    python3 tests/traffic/simulate.py --days "$days" --train-days "$train_days" \
        --users "$users" --seed "$seed" --out "$work"
fi
"$bin/pf-parse" "${parse_args[@]}" "$work/traffic.log" > "$work/records.jsonl"
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
        "$bin/pf-train" --detector forest --seed "$k" --max-lines all --metrics - "${train_args[@]}" \
            --out "$work/model-$set-$k.json" "$work/train-$set.jsonl" 2> "$work/train-$set-$k.log"
        "$bin/pf-score" --model "$work/model-$set-$k.json" "$work/test-$set.jsonl" \
            > "$work/scored-$set-$k.jsonl" 2> "$work/score-$set-$k.log"
        files+="${files:+,}$work/scored-$set-$k.jsonl"
    done
    scored+=("$set-forest=$files")
done
# The default model: the tail model on the behavioural features (deterministic: one model).
"$bin/pf-train" --detector tails --max-lines all --metrics - --out "$work/model-default.json" \
    "$work/train-behavioural.jsonl" 2> "$work/train-default.log"
"$bin/pf-score" --model "$work/model-default.json" --report "$work/report.html" \
    "$work/test-behavioural.jsonl" > "$work/scored-default.jsonl" 2> "$work/score-default.log"
scored+=("default=$work/scored-default.jsonl")
python3 tests/traffic/evaluate.py report --labels "$work/labels.csv" --train-days "$train_days" \
    "${report_args[@]}" "${scored[@]}"
# What the admin is told: the default model's anomalies as pf-sink's incidents.
rm -rf "$work/sink"
"$bin/pf-sink" --output-dir "$work/sink" --quiet --close-incidents --stats - \
    < "$work/scored-default.jsonl" 2> "$work/sink.log"
echo "incidents of the default model (pf-sink, incidents.gap_minutes from the config):"
python3 tests/traffic/evaluate.py incidents --labels "$work/labels.csv" --train-days "$train_days" \
    "${markdown[@]}" "$work/sink/incidents.jsonl"
status=0
if [ "$anchors" = 1 ]; then
    PF_PYTHON="${PF_PYTHON:-}"
    [ -n "$PF_PYTHON" ] || PF_PYTHON="$(tests/setup-python.sh)"
    "$PF_PYTHON" tests/traffic/anchors.py --labels "$work/labels.csv" --name default \
        --train "$work/train-behavioural.jsonl" --scored "$work/scored-default.jsonl" "${markdown[@]}" || status=$?
fi
[ -n "$keep" ] && echo "bench-detection: files kept in $keep (tuning report: $keep/report.html)" >&2
exit "$status"
