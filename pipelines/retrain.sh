#!/usr/bin/env bash
# The retraining job: the newest lines of the mail logs -> a new model,
# made current atomically (earlier versions stay in the models directory).
#
#   pipelines/retrain.sh [MAX_LINES] [--config FILE] [LOG FILE...] [-- PF-TRAIN OPTIONS]
#
# MAX_LINES defaults to retrain.max_lines (100,000). The logs default to
# paths.postfix_log and paths.roundcube_log from the config (a missing one is
# skipped with a warning). Each log contributes its last MAX_LINES lines, and
# pf-train keeps the newest MAX_LINES usable records. Everything is also
# appended to paths.logs_dir/retraining.log with UTC timestamps.
#
# A new model becomes current only after validation (retrain.validation):
# it loads, scores the records held back from its training, and its anomaly
# rate there is at most max_rate and at most max_ratio times the current
# model's; otherwise it is kept as models/rejected-<version>.json.
#
# Exit status: 0 when a new model is current; non-zero when anything failed
# (no log readable, too little data, a stage failed, validation refused the
# model), in which case the current model is left exactly as it was. Cron example (daily, 02:00):
#   0 2 * * *  cd /opt/postfix-anomaly && pipelines/retrain.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

lines=""
config=()
logs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config=(--config "$2"); shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) if [ -z "$lines" ] && [ ${#logs[@]} -eq 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
               lines="$1"
           else
               logs+=("$1")
           fi
           shift ;;
    esac
done

# shellcheck source=pipelines/lib.sh
. "$root/pipelines/lib.sh"
find_bin "$root" pf-train pf-parse pf-features pf-models

setting() { "$bin/pf-train" "${config[@]}" --print-config | sed -n "s/^$1=//p"; }
[ -n "$lines" ] || lines="$(setting retrain.max_lines)"
logs_dir="$(setting paths.logs_dir)"
mkdir -p "$logs_dir"
logfile="$logs_dir/retraining.log"
# Everything on stderr (ours and the stages') also goes to the log file.
exec 2> >(while IFS= read -r line; do
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$line" >> "$logfile"
    printf '%s\n' "$line"
done >&2)

echo "retrain.sh: start: newest $lines lines" >&2
if [ ${#logs[@]} -eq 0 ]; then
    for key in paths.postfix_log paths.roundcube_log; do
        logs+=("$(setting "$key")")
    done
fi
readable=()
for f in "${logs[@]}"; do
    if [ -r "$f" ]; then
        readable+=("$f")
    else
        echo "retrain.sh: warning: cannot read $f; training without it" >&2
    fi
done
if [ ${#readable[@]} -eq 0 ]; then
    echo "retrain.sh: FAILED: none of the logs is readable (${logs[*]}); set paths.postfix_log / paths.roundcube_log or name the files; the current model is unchanged" >&2
    exit 1
fi

holdout_share="$(setting retrain.validation.holdout)"
models_dir="$(setting paths.models_dir)"
work="$(mktemp -d "${TMPDIR:-/tmp}/retrain.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Every k-th feature record is held back from training to check the new
# model on (k = 1 / retrain.validation.holdout; 0 = no check).
every="$(awk -v h="$holdout_share" 'BEGIN { print (h > 0) ? int(1 / h + 0.5) : 0 }')"

set +e
# The logs' newest lines, interleaved by event time (pf-parse --merge), so
# the behavioural features see mail and webmail logins as they happened.
tails=()
for f in "${readable[@]}"; do
    tails+=("$work/newest-${#tails[@]}-$(basename -- "$f")")
    if ! tail -n "$lines" -- "$f" > "${tails[-1]}"; then
        echo "retrain.sh: FAILED: cannot read the newest lines of $f (disk full in ${TMPDIR:-/tmp}?); the current model is unchanged" >&2
        exit 1
    fi
done
"$bin/pf-parse" "${config[@]}" --merge -- "${tails[@]}" \
    | "$bin/pf-features" "${config[@]}" \
    | awk -v k="$every" -v out="$work/holdout.jsonl" 'k > 0 && NR % k == 0 { print > out; next } { print }' \
    | "$bin/pf-train" "${config[@]}" --max-lines "$lines" --no-activate "$@" > "$work/candidate"
statuses=("${PIPESTATUS[@]}")
set -e
for s in "${statuses[@]}"; do
    if [ "$s" -ne 0 ]; then
        echo "retrain.sh: FAILED (stage exit statuses: ${statuses[*]} for pf-parse, pf-features, hold-out, pf-train); the current model is unchanged" >&2
        exit 1
    fi
done
candidate="$(tail -n 1 "$work/candidate")"
version="$(basename "$candidate" .json)"
version="${version#model-}"

if [ "$every" -gt 0 ] && "$bin/pf-models" "${config[@]}" current >/dev/null 2>&1; then
    touch "$work/holdout.jsonl"
    set +e
    verdict="$("$bin/pf-models" "${config[@]}" validate "$candidate" --holdout "$work/holdout.jsonl" 2>&1)"
    valid=$?
    set -e
    echo "retrain.sh: validation: $verdict" >&2
    if [ $valid -ne 0 ]; then
        mv "$candidate" "$models_dir/rejected-$version.json"
        echo "retrain.sh: FAILED: the new model was rejected and kept as $models_dir/rejected-$version.json; the current model is unchanged" >&2
        exit 1
    fi
fi
"$bin/pf-models" "${config[@]}" activate "$version"
echo "retrain.sh: done: model $version is current, trained on ${readable[*]}" >&2
