#!/usr/bin/env bash
# The retraining job: the newest lines of the mail logs -> a new model,
# made current atomically (the previous versions stay in the models dir).
#
#   pipelines/retrain.sh [-n LINES] [--config FILE] [LOG FILE...] [-- PF-TRAIN OPTIONS]
#
# Defaults: -n 100000 (retrain.max_lines), logs /var/log/mail.log. Each log
# contributes its last LINES lines; pf-train then keeps the newest LINES
# usable records. Example (cron, daily at 03:10):
#   10 3 * * *  cd /opt/postfix-anomaly && pipelines/retrain.sh /var/log/mail.log
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
lines=100000
config=()
logs=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) lines="$2"; shift 2 ;;
        --config) config=(--config "$2"); shift 2 ;;
        --) shift; break ;;
        *) logs+=("$1"); shift ;;
    esac
done
[ ${#logs[@]} -gt 0 ] || logs=(/var/log/mail.log)
for tool in pf-parse pf-features pf-train; do
    [ -x "$bin/$tool" ] || { cargo build --release -q --manifest-path "$root/Cargo.toml" -p "$tool"; }
done
tail -q -n "$lines" "${logs[@]}" \
    | "$bin/pf-parse" "${config[@]}" \
    | "$bin/pf-features" "${config[@]}" \
    | "$bin/pf-train" "${config[@]}" --max-lines "$lines" "$@"
