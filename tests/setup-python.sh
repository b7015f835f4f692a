#!/usr/bin/env bash
# Creates .venv with the Python packages the tests compare against
# (scikit-learn, shap; tests/python/requirements.txt) and prints the path of
# its python. Idempotent: a venv that already has the pinned versions is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
req=tests/python/requirements.txt
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$PWD/$venv/bin/python"
