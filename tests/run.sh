#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run runs it.
# Installs what the tests need (a Python venv with scikit-learn and shap, the
# references the model is checked against), then runs every crate's unit and
# integration tests. The conformance tests read the public corpora in ../shared
# (override with PF_SHARED_DIR) and print their pass rates, misses and kinds
# tables; the model tests print their parity and accuracy tables.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "tests/run.sh: cargo is required (https://rustup.rs)" >&2; exit 2; }
export PF_SHARED_DIR="${PF_SHARED_DIR:-$(cd .. && pwd)/shared}"
# Assigned on its own line so that a failed set-up stops the run (set -e).
PF_PYTHON="${PF_PYTHON:-}"
[ -n "$PF_PYTHON" ] || PF_PYTHON="$(tests/setup-python.sh)"
export PF_PYTHON
# The Kafka broker binary the kafka-tail tests start (one per test, on a free port).
PF_TANSU="${PF_TANSU:-}"
[ -n "$PF_TANSU" ] || PF_TANSU="$(tests/find-tansu.sh "$PF_PYTHON")"
export PF_TANSU
# fail2ban-regex, for the test of contrib/fail2ban against pf-sink's output.
PF_FAIL2BAN="${PF_FAIL2BAN:-}"
[ -n "$PF_FAIL2BAN" ] || PF_FAIL2BAN="$(tests/setup-fail2ban.sh)"
export PF_FAIL2BAN
# Headless Chromium, for the test that renders report.html.
PF_CHROMIUM="${PF_CHROMIUM:-}"
[ -n "$PF_CHROMIUM" ] || PF_CHROMIUM="$(tests/setup-chromium.sh)"
export PF_CHROMIUM
cargo fmt --all -- --check
# Every binary first: the pipeline tests run the other stages' binaries.
cargo build --workspace --release --bins
cargo test --workspace --release -- --nocapture
# The live pipeline on the local broker at 2,000 messages/s with memory
# sampled, every message accounted for (PF_SOAK_MINUTES=10 for the full soak
# that docs/hardening.md reports).
tests/soak.sh --minutes "${PF_SOAK_MINUTES:-1}" --rate 2000 --every 15
# A short coverage-guided fuzzing run of every parser of untrusted input
# (AFL++; installs cargo-afl into target/tools the first time).
tests/fuzz.sh --seconds "${PF_FUZZ_SECONDS:-20}"
