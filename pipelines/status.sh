#!/usr/bin/env bash
# What the detector is doing, for a mail admin (root is not needed: reading
# needs membership of the service's group).
#
#   pipelines/status.sh [--config FILE]
#
# Prints: the systemd service's state; the current model, its age and
# training figures; the last retraining result; records and anomalies in the
# last hour (from pf-sink's state/detector-stats.json); the output files'
# sizes; and the consumer group's lag per partition when a broker is
# configured and reachable (kafka-tail --lag).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=pipelines/lib.sh
. "$root/pipelines/lib.sh"
find_bin "$root" pf-models kafka-tail
config=()
if [ "${1:-}" = "--config" ]; then config=(--config "$2"); shift 2; fi
setting() { "$bin/pf-models" "${config[@]}" --print-config | sed -n "s/^$1=//p"; }
age() {
    local secs=$(( $(date +%s) - $1 ))
    if [ $secs -lt 3600 ]; then echo "$((secs / 60)) min"
    elif [ $secs -lt 172800 ]; then echo "$((secs / 3600)) h"
    else echo "$((secs / 86400)) days"; fi
}

echo "== service"
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    state="$(systemctl is-active postfix-anomaly.service 2>/dev/null)"
    since="$(systemctl show -p ActiveEnterTimestamp --value postfix-anomaly.service 2>/dev/null)"
    echo "postfix-anomaly.service: ${state:-unknown}${since:+ since $since}"
else
    echo "systemd not running here; service state unknown"
fi

echo "== model"
models_dir="$(setting paths.models_dir)"
if current="$("$bin/pf-models" "${config[@]}" current 2>/dev/null)" && [ -f "$current" ]; then
    echo "current: $(basename "$current") ($(age "$(stat -c %Y "$current")") old)"
    "$bin/pf-models" "${config[@]}" list 2>/dev/null | grep '^\*' | sed 's/^\* */  /'
else
    echo "no current model in $models_dir"
fi

echo "== last retraining"
log="$(setting paths.logs_dir)/retraining.log"
if [ -r "$log" ] && last="$(grep -E 'retrain.sh: (done|FAILED)' "$log" | tail -n 1)" && [ -n "$last" ]; then
    echo "$last"
else
    echo "none logged in $log"
fi

echo "== last hour"
stats="$(setting paths.state_dir)/detector-stats.json"
if [ -r "$stats" ]; then
    text="$(cat "$stats")"
    updated="$(grep -o '"updated":[0-9]*' <<< "$text" | cut -d: -f2)"
    hour="$(grep -o '"last_hour":{"records":[0-9]*,"anomalies":[0-9]*}' <<< "$text")"
    records="$(sed 's/.*"records":\([0-9]*\).*/\1/' <<< "$hour")"
    anomalies="$(sed 's/.*"anomalies":\([0-9]*\).*/\1/' <<< "$hour")"
    echo "records: ${records:-0}, anomalies: ${anomalies:-0} (counters updated $(age "${updated:-0}") ago)"
else
    echo "no activity recorded yet ($stats)"
fi

echo "== output files"
out="$(setting paths.output_dir)"
if ls "$out"/*.json* >/dev/null 2>&1; then
    du -h "$out"/*.json* | sort -k2
else
    echo "none yet in $out"
fi

echo "== consumer lag"
broker="$(setting kafka.broker)"
if [ -z "$broker" ]; then
    echo "no broker configured"
else
    timeout 20 "$bin/kafka-tail" "${config[@]}" --lag 2>&1 || echo "lag not available (broker $broker unreachable?)"
fi
