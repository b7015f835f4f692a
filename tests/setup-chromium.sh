#!/usr/bin/env bash
# Debian's Chromium, for the test that renders report.html headless and
# checks the screenshot. Installs the package when it is missing (as root,
# or through sudo without a password); prints the browser's path.
set -euo pipefail
for name in chromium chromium-browser; do
    if path="$(command -v "$name")"; then
        echo "$path"
        exit 0
    fi
done
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo -n)
if ! { "${as_root[@]}" apt-get install -y --no-install-recommends chromium >&2 \
       || { "${as_root[@]}" apt-get update >&2 && "${as_root[@]}" apt-get install -y --no-install-recommends chromium >&2; }; }; then
    echo "tests/setup-chromium.sh: cannot install Debian's chromium (apt-get install chromium, as root)" >&2
    exit 2
fi
command -v chromium
