#!/usr/bin/env bash
# Schedules the retraining job (pipelines/retrain.sh) with cron.
#
#   pipelines/setup-cron.sh daily|weekly|monthly [--user NAME] [--max-lines N] [--cron-file FILE]
#   pipelines/setup-cron.sh remove [--cron-file FILE]
#   pipelines/setup-cron.sh show [--cron-file FILE]
#
# daily: every day at 02:00; weekly (the usual choice): Sunday 02:00;
# monthly: the 1st at 02:00. Writes one file, /etc/cron.d/postfix-anomaly
# (or --cron-file), atomically; running it again replaces the schedule.
# The job runs as --user (default: postfix-anomaly if that user exists,
# else the user running this script), logs to logs/retraining.log, and
# prints the log's last lines (which cron mails) only when it fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cron_file=/etc/cron.d/postfix-anomaly
user=""
max_lines=""
action="${1:-}"
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
    case "$1" in
        --cron-file) cron_file="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --max-lines) max_lines="$2"; shift 2 ;;
        *) echo "setup-cron.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$action" in
    daily) when="0 2 * * *" ;;
    weekly) when="0 2 * * 0" ;;
    monthly) when="0 2 1 * *" ;;
    remove)
        if [ -f "$cron_file" ]; then
            rm -f "$cron_file"
            echo "setup-cron.sh: removed $cron_file" >&2
        else
            echo "setup-cron.sh: no schedule at $cron_file; nothing to remove" >&2
        fi
        exit 0 ;;
    show)
        if [ -f "$cron_file" ]; then cat "$cron_file"; else echo "setup-cron.sh: no schedule at $cron_file" >&2; exit 1; fi
        exit 0 ;;
    -h|--help|"") sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; [ -n "$action" ]; exit $? ;;
    *) echo "setup-cron.sh: unknown schedule '$action': use daily, weekly, monthly, remove or show" >&2; exit 2 ;;
esac
if [ -n "$max_lines" ] && ! [[ "$max_lines" =~ ^[0-9]+$ ]]; then
    echo "setup-cron.sh: --max-lines must be a number of lines, got '$max_lines'" >&2
    exit 2
fi
if [ -z "$user" ]; then
    if id postfix-anomaly >/dev/null 2>&1; then user=postfix-anomaly; else user="$(id -un)"; fi
fi
case "$root" in *[[:space:]]*) echo "setup-cron.sh: the install path '$root' contains spaces, which cron cannot run" >&2; exit 2 ;; esac

mkdir -p "$(dirname "$cron_file")"
tmp="$(mktemp "$(dirname "$cron_file")/.postfix-anomaly.XXXXXX")"
cat > "$tmp" <<EOF
# postfix-anomaly: retrain the model ($action). Managed by $root/pipelines/setup-cron.sh;
# change it with that script, not by hand.
SHELL=/bin/bash
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$when $user cd $root && pipelines/retrain.sh $max_lines >/dev/null 2>&1 || { echo "postfix-anomaly retraining failed; last lines of the log:"; tail -n 20 logs/retraining.log; }
EOF
chmod 0644 "$tmp"
mv "$tmp" "$cron_file"
echo "setup-cron.sh: $action retraining as $user ($when) in $cron_file" >&2
