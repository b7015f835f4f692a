#!/usr/bin/env bash
# fail2ban (Debian's package, unpacked, not installed: no service is
# started) for the test of contrib/fail2ban's filter against pf-sink's real
# incidents.log. Prints the unpacked root; cached in target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/tools/fail2ban"
if [ ! -x "$root/usr/bin/fail2ban-regex" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download fail2ban >&2) || {
        echo "tests/setup-fail2ban.sh: cannot download Debian's fail2ban package (apt-get download fail2ban)" >&2
        exit 2
    }
    rm -rf "$root"
    mkdir -p "$root"
    dpkg-deb -x "$tmp"/fail2ban_*.deb "$root"
fi
echo "$root"
