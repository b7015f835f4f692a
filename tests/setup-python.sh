#!/usr/bin/env bash
# Creates .venv with the Python packages the tests compare against
# (scikit-learn, shap; tests/python/requirements.txt) and prints the path of
# its python. Idempotent: a venv that already has the pinned versions is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
req=tests/python/requirements.txt
stamp="$venv/.requirements"
# A venv without pip is a half-made one (an interrupted run): make it anew.
if [[ ! -x "$venv/bin/python" || ! -x "$venv/bin/pip" ]]; then
    rm -f "$stamp"
    python3 -m venv --clear "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$PWD/$venv/bin/python"
