#!/usr/bin/env bash
# Rebuilds the default model shipped in models/ from the bundled sample, so
# that pipelines/run.sh shows the detector working before any training on
# the admin's own logs. Run after changing the sample or the features:
#
#   pipelines/sample/build-default-model.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release -q -p pf-parse -p pf-features -p pf-train
bin="$root/target/release"
rm -f models/model-*.json models/CURRENT
# Trained on the normal traffic: everything before the last evening, which
# holds the sample's attacks (see generate.py), so the replay shows them as
# a detector trained on a clean week would.
{ grep -v '^2026-03-03T2[23]' pipelines/sample/mail.log
  grep -v '^\[03-Mar-2026 2[23]:' pipelines/sample/roundcube.log; } \
    | "$bin/pf-parse" --config config/config.yaml \
    | "$bin/pf-features" --config config/config.yaml \
    | "$bin/pf-train" --config config/config.yaml --models-dir models --seed 20260302 --metrics -
ls -l models/
