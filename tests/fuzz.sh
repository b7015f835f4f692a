#!/usr/bin/env bash
# Coverage-guided fuzzing (AFL++ through cargo-afl, on the stable toolchain)
# of what reads untrusted bytes: the log line parser, the NDJSON readers of
# the stages (features, error wording, pseudonymisation, acknowledgements),
# the config loader and the model loader. The targets are tests/fuzz/src.
#
#   tests/fuzz.sh [--seconds N] [TARGET...]
#
# TARGET is line_parser, ndjson_stages, config or model (default: all), each
# fuzzed for N seconds (default 20; tests/run.sh uses the default, a long
# campaign is e.g. --seconds 3600 line_parser). cargo-afl is installed into
# target/tools on first use. Corpora are seeded from the public logs in
# $PF_SHARED_DIR/conformance (default ../shared) and from tests/fuzz/seeds;
# the findings stay in target/fuzz/<target>/ (crashes/, hangs/, queue/).
# Exit status 1 if any target crashed or hung; the offending inputs are
# listed, and `tests/fuzz/target/release/<target> < FILE` replays one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=20
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(line_parser ndjson_stages config model)
shared="${PF_SHARED_DIR:-$root/../shared}"

tools="$root/target/tools"
export PATH="$tools/bin:$PATH"
if ! cargo afl --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-afl into $tools (once)" >&2
    cargo install --quiet cargo-afl --version 0.18.2 --root "$tools"
fi
# Builds AFL++ itself (into ~/.local/share/afl.rs) unless it is there already.
cargo afl config --build >/dev/null 2>&1 || true
(cd tests/fuzz && cargo afl build --release --quiet)

work="$root/target/fuzz"
mkdir -p "$work"

seed_line_parser() {
    local dir=$1 n=0 log
    for log in "$shared"/conformance/real/*.log "$shared"/conformance/exporter/*.log \
               pipelines/sample/mail.log pipelines/sample/roundcube.log; do
        [ -f "$log" ] || continue
        # Ten-line pieces from all over each log: every kind of line, small inputs.
        local total step
        total=$(wc -l < "$log")
        step=$(( total / 20 + 1 ))
        for start in $(seq 1 "$step" "$total"); do
            sed -n "${start},$((start + 9))p" "$log" > "$dir/$(basename "$log").$start"
            n=$((n + 1))
        done
    done
    printf '%s\n' '{"topic":"postfix","partition":0,"offset":7,"timestamp":1764097200000,"key":null,"value":"Nov 25 19:00:00 mx postfix/smtpd[1]: connect from unknown[192.0.2.1]","more_lines":true}' > "$dir/envelope"
    printf '%s\n' '{"__REALTIME_TIMESTAMP":"1677744903123456","_HOSTNAME":"mx1","SYSLOG_IDENTIFIER":"postfix/smtpd","_PID":"12","MESSAGE":"disconnect from unknown[192.0.2.1] ehlo=1 auth=0/1 quit=1 commands=2/3"}' > "$dir/journald"
    [ "$n" -gt 0 ] || { echo "fuzz.sh: no logs found to seed from (set PF_SHARED_DIR)" >&2; exit 2; }
}

seed() {
    local target=$1 dir=$2
    case "$target" in
        line_parser) seed_line_parser "$dir" ;;
        ndjson_stages)
            cp tests/fuzz/seeds/ndjson/* "$dir/"
            if [ -x target/release/pf-parse ]; then
                target/release/pf-parse --timezone UTC pipelines/sample/roundcube.log | head -5 > "$dir/records.jsonl"
            fi ;;
        config) cp tests/fuzz/seeds/config/* "$dir/" ;;
        model) cp tests/fuzz/seeds/model/* "$dir/" ;;
        *) echo "fuzz.sh: unknown target $target (line_parser, ndjson_stages, config, model)" >&2; exit 2 ;;
    esac
}

failed=0
printf '%-14s %8s %12s %10s %8s %8s %6s\n' target seconds executions "execs/s" corpus crashes hangs
for target in "${targets[@]}"; do
    dir="$work/$target"
    rm -rf "$dir"
    mkdir -p "$dir/in"
    seed "$target" "$dir/in"
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 AFL_SUPPRESS_BANNER=1 \
        cargo afl fuzz -i "$dir/in" -o "$dir/out" -V "$seconds" -t 2000 \
        "tests/fuzz/target/release/$target" > "$dir/afl.log" 2>&1 || {
            echo "fuzz.sh: afl-fuzz failed on $target; its output:" >&2
            tail -30 "$dir/afl.log" >&2
            exit 1
        }
    stats="$dir/out/default/fuzzer_stats"
    stat() { sed -n "s/^$1 *: *//p" "$stats"; }
    crashes=$(find "$dir/out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
    hangs=$(find "$dir/out/default/hangs" -name 'id:*' 2>/dev/null | wc -l)
    printf '%-14s %8s %12s %10s %8s %8s %6s\n' "$target" "$(stat run_time)" "$(stat execs_done)" \
        "$(stat execs_per_sec)" "$(stat corpus_count)" "$crashes" "$hangs"
    if [ "$crashes" -gt 0 ] || [ "$hangs" -gt 0 ]; then
        failed=1
        find "$dir/out/default/crashes" "$dir/out/default/hangs" -name 'id:*' | sed 's/^/  finding: /' >&2
    fi
done
if [ $failed -ne 0 ]; then
    echo "fuzz.sh: findings above; replay one with tests/fuzz/target/release/TARGET < FILE" >&2
    exit 1
fi
