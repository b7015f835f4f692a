#!/usr/bin/env bash
# The live detector: kafka-tail | pf-parse | pf-features | pf-score | pf-sink
#
#   pipelines/live-detector.sh [--config FILE] [--output-dir DIR] [--quiet] [-- KAFKA-TAIL OPTIONS]
#   pipelines/live-detector.sh [--config FILE] [--output-dir DIR] [--quiet] --replay LOG FILE...
#
# Writes under paths.output_dir (or --output-dir): postfix_logs.json and
# mail_login_logs.json (parsed records per topic), all_detections.jsonl,
# anomalies.jsonl and incidents.jsonl, report.html (pf-score's tuning report:
# score histogram with the thresholds, top anomalies), and prints one line
# per incident event (opened, escalated, closed; a replay: one per incident, closed).
# --replay feeds log files through the same stages instead of Kafka (no
# broker needed), interleaved by event time (pf-parse --merge); its
# incidents close at the end. On Kafka the behavioural features' memory and
# the open incidents are kept in paths.state_dir (features-state.json,
# incidents-state.json) across restarts.
#
# The stages run as one unit: if any of them stops, the others are stopped
# and the script exits with that stage's status (non-zero unless it was a
# clean end), so systemd's Restart=on-failure restarts the whole pipeline and
# Kafka redelivers whatever pf-sink had not written. SIGTERM/SIGINT stop kafka-tail
# first; the later stages drain what it wrote, and the exit status is 0.
#
# Binaries: $PF_BIN, else target/release of a checkout (built if missing),
# else bin/ of an installation, else $PATH (pipelines/lib.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

config=()
sink_args=()
output_dir=""
replay=()
mode=kafka
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config=(--config "$2"); shift 2 ;;
        --output-dir) sink_args+=(--output-dir "$2"); output_dir=$2; shift 2 ;;
        --quiet|-q) sink_args+=(--quiet); shift ;;
        --replay) mode=replay; shift; replay=("$@"); set --; break ;;
        --) shift; break ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "live-detector.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# shellcheck source=pipelines/lib.sh
. "$root/pipelines/lib.sh"
find_bin "$root" kafka-tail pf-parse pf-features pf-score pf-sink

if [ "$mode" = replay ] && [ ${#replay[@]} -eq 0 ]; then
    echo "live-detector.sh: --replay needs at least one log file" >&2
    exit 2
fi

# pf-score keeps the tuning report (score histogram, thresholds, top
# anomalies) in the output directory, rewritten every minute and at the end.
if [ -z "$output_dir" ]; then
    output_dir="$("$bin/pf-score" "${config[@]}" --print-config | sed -n 's/^paths.output_dir=//p')"
fi
mkdir -p -m 0750 "$output_dir"

# The live detector keeps the behavioural features' memory across restarts
# (paths.state_dir/features-state.json); a replay starts from nothing.
feature_args=()
if [ "$mode" = kafka ]; then
    state_dir="$("$bin/pf-features" "${config[@]}" --print-config | sed -n 's/^paths.state_dir=//p')"
    if [ -n "$state_dir" ]; then
        mkdir -p "$state_dir"
        feature_args=(--state "$state_dir/features-state.json")
        sink_args+=(--incident-state "$state_dir/incidents-state.json")
        # Each stage writes its counts here; pf-sink serves them at /metrics
        # (prometheus.listen). Not in a replay: it would overwrite the live ones.
        export PF_METRICS_DIR="${PF_METRICS_DIR:-$state_dir/metrics}"
        mkdir -p "$PF_METRICS_DIR"
    fi
else
    # A replay is a finished story: its incidents close at the end, and
    # each is printed once, as it ended.
    # Its incidents are history: they are not delivered (webhook, mail,
    # syslog) and it serves no /metrics, so a live detector beside it is
    # left alone.
    sink_args+=(--close-incidents --print closed --no-deliveries)
fi

fifos="$(mktemp -d "${TMPDIR:-/tmp}/live-detector.XXXXXX")"
mkfifo "$fifos/tail" "$fifos/parsed" "$fifos/features" "$fifos/scored"
cleanup() { rm -rf "$fifos"; }
trap cleanup EXIT

# On Kafka, pf-sink records what it has written (and synced) in an
# acknowledgement file, and kafka-tail commits no further: a message in
# flight between the stages when one of them dies is read again.
tail_args=()
if [ "$mode" = kafka ]; then
    tail_args=(--ack-file "$fifos/acks.json")
    sink_args+=(--ack-file "$fifos/acks.json")
fi

if [ "$mode" = kafka ]; then
    "$bin/kafka-tail" "${config[@]}" "${tail_args[@]}" "$@" > "$fifos/tail" &
    first=$!
    "$bin/pf-parse" "${config[@]}" < "$fifos/tail" > "$fifos/parsed" &
    parse=$!
else
    # Several logs (mail.log, Roundcube's errors.log) are interleaved by
    # event time, so the behavioural windows see the day as it happened.
    "$bin/pf-parse" "${config[@]}" --merge -- "${replay[@]}" > "$fifos/parsed" &
    first=$!
    parse=$first
fi
"$bin/pf-features" "${config[@]}" "${feature_args[@]}" < "$fifos/parsed" > "$fifos/features" &
features=$!
"$bin/pf-score" "${config[@]}" --report "$output_dir/report.html" < "$fifos/features" > "$fifos/scored" &
score=$!
"$bin/pf-sink" "${config[@]}" "${sink_args[@]}" < "$fifos/scored" &
sink=$!
stages=("$first" "$features" "$score" "$sink")
if [ "$parse" != "$first" ]; then stages+=("$parse"); fi

stopping=0
stop() { stopping=1; kill -TERM "$first" 2>/dev/null || true; }
trap stop TERM INT

# Wait for whichever stage ends first; one that fails stops the rest.
status=0
remaining=("${stages[@]}")
while [ ${#remaining[@]} -gt 0 ]; do
    ended=""
    set +e
    wait -n -p ended "${remaining[@]}"
    rc=$?
    set -e
    if [ -z "${ended:-}" ]; then
        # Either a trapped signal interrupted `wait`, or bash already
        # collected a stage that ended together with another ("no such
        # job"): drop the stages that are gone; their status is unknown.
        left=()
        for pid in "${remaining[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then left+=("$pid"); fi
        done
        if [ ${#left[@]} -lt ${#remaining[@]} ] && [ $status -eq 0 ] && [ $stopping -eq 0 ]; then
            status=1
            echo "live-detector.sh: a stage ended unexpectedly; stopping the pipeline" >&2
            kill -TERM "${left[@]}" 2>/dev/null || true
        fi
        remaining=("${left[@]+"${left[@]}"}")
        continue
    fi
    left=()
    for pid in "${remaining[@]}"; do [ "$pid" = "$ended" ] || left+=("$pid"); done
    remaining=("${left[@]+"${left[@]}"}")
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then
        status=$rc
        if [ $stopping -eq 0 ]; then
            echo "live-detector.sh: a stage (pid $ended) exited with status $rc; stopping the pipeline" >&2
        fi
        kill -TERM "${remaining[@]}" 2>/dev/null || true
    fi
done
exit "$status"
