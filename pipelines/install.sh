#!/usr/bin/env bash
# Installs (or removes) the detector as a self-contained tree with a systemd
# service. Idempotent: run it again after `git pull` to upgrade.
#
#   pipelines/install.sh [--prefix DIR] [--unit-dir DIR] [--user NAME] [--no-user]
#                        [--no-systemd] [--from BIN_DIR]
#   pipelines/install.sh --uninstall [--purge] [--prefix DIR] [--unit-dir DIR]
#
# Defaults: --prefix /opt/postfix-anomaly, --unit-dir /etc/systemd/system,
# --user postfix-anomaly (a system user created when running as root;
# --no-user leaves users and ownership alone). --from takes the binaries
# from BIN_DIR instead of building them with cargo.
# Layout under the prefix:
#   bin/          the release binaries
#   pipelines/    live-detector.sh, retrain.sh, setup-cron.sh, status.sh, backup.sh, ...
#   config/config.yaml   never overwritten: a changed shipped config is put
#                        beside it as config.yaml.dist
#   features/     feature lists
#   models/       model versions (the bundled default model when empty)
#   output/ logs/ state/ metrics/   written by the service (0750)
#   docs/
# The service runs live-detector.sh with WorkingDirectory=prefix, so the
# config's relative paths (models, output, ...) point into the prefix.
# --uninstall stops and removes the service, binaries and scripts and keeps
# config, models, output, logs and metrics unless --purge is given.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"

prefix=/opt/postfix-anomaly
unit_dir=/etc/systemd/system
user=postfix-anomaly
systemd=1
make_user=1
from=""
uninstall=0
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --unit-dir) unit_dir="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --no-systemd) systemd=0; shift ;;
        --no-user) make_user=0; shift ;;
        --from) from="$2"; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
unit="$unit_dir/postfix-anomaly.service"
root_user=0
[ "$(id -u)" -eq 0 ] && root_user=1
use_systemctl=0
if [ $systemd -eq 1 ] && [ $root_user -eq 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    use_systemctl=1
fi
tools=(kafka-tail pf-parse pf-features pf-score pf-sink pf-train pf-models)
scripts=(lib.sh live-detector.sh retrain.sh setup-cron.sh status.sh backup.sh import-sklearn.py)
writable=(output logs state metrics models)
say() { echo "install.sh: $*" >&2; }

if [ $uninstall -eq 1 ]; then
    if [ $use_systemctl -eq 1 ] && systemctl list-unit-files postfix-anomaly.service >/dev/null 2>&1; then
        systemctl disable --now postfix-anomaly.service 2>/dev/null || true
    fi
    rm -f "$unit"
    [ $use_systemctl -eq 1 ] && systemctl daemon-reload || true
    if [ -x "$prefix/pipelines/setup-cron.sh" ]; then
        "$prefix/pipelines/setup-cron.sh" remove >/dev/null 2>&1 || true
    fi
    for t in "${tools[@]}"; do rm -f "$prefix/bin/$t"; done
    for s in "${scripts[@]}"; do rm -f "$prefix/pipelines/$s"; done
    rm -rf "$prefix/pipelines/systemd" "$prefix/docs" "$prefix/features"
    rmdir "$prefix/bin" "$prefix/pipelines" 2>/dev/null || true
    if [ $purge -eq 1 ]; then
        rm -rf "$prefix/config" "${writable[@]/#/$prefix/}"
        rmdir "$prefix" 2>/dev/null || true
        say "removed $prefix entirely (--purge)"
    else
        say "removed the service, binaries and scripts; kept config, models, output, logs, metrics in $prefix (--purge removes them)"
    fi
    exit 0
fi

# Binaries: the release build of this checkout (built if missing or stale).
if [ -n "$from" ]; then
    built="$from"
elif [ -f "$src/Cargo.toml" ]; then
    packages=()
    for t in "${tools[@]}"; do packages+=(-p "$t"); done
    cargo build --release -q --manifest-path "$src/Cargo.toml" "${packages[@]}"
    built="$src/target/release"
else
    built="$src/bin"
fi
mkdir -p "$prefix/bin" "$prefix/pipelines/systemd" "$prefix/config" "$prefix/features" "$prefix/docs"
for t in "${tools[@]}"; do
    install -m 0755 "$built/$t" "$prefix/bin/$t"
done
for s in "${scripts[@]}"; do
    install -m 0755 "$src/pipelines/$s" "$prefix/pipelines/$s"
done
install -m 0644 "$src/pipelines/systemd/postfix-anomaly.service.in" "$prefix/pipelines/systemd/"
install -m 0644 "$src"/features/*.json "$prefix/features/"
install -m 0644 "$src"/docs/*.md "$prefix/docs/"

# The config: installed once, never overwritten.
config="$prefix/config/config.yaml"
if [ ! -f "$config" ]; then
    install -m 0640 "$src/config/config.yaml" "$config"
    say "installed $config (edit kafka.broker, then restart the service)"
elif ! cmp -s "$src/config/config.yaml" "$config"; then
    install -m 0640 "$src/config/config.yaml" "$config.dist"
    say "kept your $config; the shipped one is $config.dist"
fi

for d in "${writable[@]}"; do
    mkdir -p "$prefix/$d"
    chmod 0750 "$prefix/$d"
done
# A first installation starts with the bundled default model.
if [ ! -f "$prefix/models/CURRENT" ]; then
    cp "$src"/models/model-*.json "$prefix/models/"
    cp "$src/models/CURRENT" "$prefix/models/CURRENT"
    say "installed the default model $(cat "$prefix/models/CURRENT")"
fi

if [ $root_user -eq 1 ] && [ $make_user -eq 1 ]; then
    if ! id "$user" >/dev/null 2>&1; then
        useradd --system --home-dir "$prefix" --no-create-home --shell /usr/sbin/nologin "$user"
        say "created system user $user"
    fi
    for d in "${writable[@]}"; do chown -R "$user:$user" "$prefix/$d"; done
    chown "root:$user" "$config"
fi

mkdir -p "$unit_dir"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@USER@|$user|g" \
    "$src/pipelines/systemd/postfix-anomaly.service.in" > "$unit.tmp"
mv "$unit.tmp" "$unit"
if [ $use_systemctl -eq 1 ]; then
    systemctl daemon-reload
    say "installed $unit; start it with: systemctl enable --now postfix-anomaly"
else
    say "wrote $unit (systemctl not used)"
fi
say "installed into $prefix"
