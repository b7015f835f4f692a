#!/usr/bin/env bash
# Backs up and restores what cannot be rebuilt: the config, the models and
# the training metrics.
#
#   pipelines/backup.sh [create] [DEST_DIR]     # -> DEST_DIR/postfix-anomaly-<UTC>.tar.gz (default backups/)
#   pipelines/backup.sh list [DEST_DIR]
#   pipelines/backup.sh restore FILE
#
# restore checks the archive before touching anything: only config/,
# models/ and metrics/ entries, no absolute paths or '..', every model file
# loads (pf-models check) and CURRENT names one of them. It then moves what
# it replaces to backups/before-restore-<UTC>/ and swaps each part in with
# a rename; if a step fails, the parts already swapped are put back, so the
# installation is either as before or as in the archive. Restart the service (or wait: pf-score
# picks up a changed CURRENT) afterwards.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=pipelines/lib.sh
. "$root/pipelines/lib.sh"
find_bin "$root" pf-models

action="${1:-create}"
[ $# -gt 0 ] && shift
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
say() { echo "backup.sh: $*" >&2; }
fail() { say "$*"; exit 1; }

setting() { "$bin/pf-models" --print-config | sed -n "s/^$1=//p"; }
config_file="${PF_CONFIG:-config/config.yaml}"
models_dir="$(setting paths.models_dir)"
metrics="$(setting paths.metrics)"

case "$action" in
    create)
        dest="${1:-backups}"
        mkdir -p "$dest"
        archive="$dest/postfix-anomaly-$stamp.tar.gz"
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        mkdir -p "$work/config" "$work/models" "$work/metrics"
        [ -f "$config_file" ] && cp -p "$config_file" "$work/config/config.yaml"
        [ -d "$models_dir" ] && cp -p "$models_dir"/model-*.json "$models_dir"/CURRENT "$work/models/" 2>/dev/null || true
        [ -f "$metrics" ] && cp -p "$metrics" "$work/metrics/"
        tar -czf "$archive.tmp" -C "$work" config models metrics
        mv "$archive.tmp" "$archive"
        say "wrote $archive ($(du -h "$archive" | cut -f1))"
        echo "$archive"
        ;;
    list)
        dest="${1:-backups}"
        found=0
        for f in "$dest"/postfix-anomaly-*.tar.gz; do
            [ -f "$f" ] || continue
            found=1
            printf '%s\t%s\t%s models\n' "$f" "$(du -h "$f" | cut -f1)" \
                "$(tar -tzf "$f" | grep -c '^models/model-.*\.json$' || true)"
        done
        [ $found -eq 1 ] || say "no backups in $dest"
        ;;
    restore)
        archive="${1:-}"
        [ -n "$archive" ] || fail "restore needs the archive: backup.sh restore FILE"
        [ -f "$archive" ] || fail "$archive: no such file"
        entries="$(tar -tzf "$archive" 2>/dev/null)" || fail "$archive is not a readable .tar.gz; nothing was changed"
        while IFS= read -r e; do
            case "$e" in
                /*|*..*) fail "$archive holds a path outside the installation ($e); refusing it, nothing was changed" ;;
                config|config/|config/*|models|models/|models/*|metrics|metrics/|metrics/*) ;;
                *) fail "$archive holds an unexpected entry ($e); refusing it, nothing was changed" ;;
            esac
        done <<< "$entries"
        work="$(mktemp -d "$root/.restore-XXXXXX")"
        trap 'rm -rf "$work"' EXIT
        tar -xzf "$archive" -C "$work" --no-same-owner
        if [ -d "$work/models" ] && [ -n "$(ls -A "$work/models")" ]; then
            "$bin/pf-models" --models-dir "$work/models" check \
                || fail "$archive: its models do not load (see above); nothing was changed"
        fi
        if [ -f "$work/config/config.yaml" ]; then
            "$bin/pf-models" --config "$work/config/config.yaml" --print-config > /dev/null \
                || fail "$archive: its config/config.yaml is invalid (see above); nothing was changed"
        fi
        safety="backups/before-restore-$stamp"
        mkdir -p "$safety"
        # Each part is swapped in with renames (old -> safety copy, new ->
        # place). If a step fails, the parts already swapped are put back,
        # so the installation ends as it was before or as in the archive.
        swapped=()
        undo() {
            local part
            for part in "${swapped[@]}"; do
                case "$part" in
                    models) rm -rf "$models_dir"; [ -d "$safety/models" ] && mv "$safety/models" "$models_dir" ;;
                    config) [ -f "$safety/config.yaml" ] && cp -p "$safety/config.yaml" "$config_file" ;;
                esac
            done
            fail "restore failed part-way; what had been swapped in was put back, nothing changed"
        }
        trap undo ERR
        if [ -d "$work/models" ] && [ -n "$(ls -A "$work/models")" ]; then
            if [ -d "$models_dir" ]; then mv "$models_dir" "$safety/models"; fi
            swapped+=(models)
            mkdir -p "$(dirname "$models_dir")"
            mv "$work/models" "$models_dir"
        fi
        if [ -f "$work/config/config.yaml" ]; then
            mkdir -p "$(dirname "$config_file")"
            [ -f "$config_file" ] && cp -p "$config_file" "$safety/config.yaml"
            swapped+=(config)
            mv "$work/config/config.yaml" "$config_file.restore"
            mv "$config_file.restore" "$config_file"
        fi
        if [ -f "$work/metrics/$(basename "$metrics")" ]; then
            mkdir -p "$(dirname "$metrics")"
            [ -f "$metrics" ] && cp -p "$metrics" "$safety/"
            mv "$work/metrics/$(basename "$metrics")" "$metrics"
        fi
        trap - ERR
        say "restored $archive; what it replaced is in $safety"
        ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) fail "unknown action '$action': use create, list or restore" ;;
esac
