# Shared by the pipeline scripts (sourced, not run).

# Sets $bin to the directory holding the tools: $PF_BIN if set; in a
# source checkout target/release (built with cargo when a tool is missing);
# in an installation the bin/ beside pipelines/; else the one on $PATH.
#   find_bin ROOT TOOL...
find_bin() {
    local root="$1"; shift
    if [ -n "${PF_BIN:-}" ]; then
        bin="$PF_BIN"
    elif [ -f "$root/Cargo.toml" ]; then
        bin="$root/target/release"
        local tool packages=()
        for tool in "$@"; do packages+=(-p "$tool"); done
        for tool in "$@"; do
            if [ ! -x "$bin/$tool" ]; then
                cargo build --release -q --manifest-path "$root/Cargo.toml" "${packages[@]}"
                break
            fi
        done
    elif [ -x "$root/bin/$1" ]; then
        bin="$root/bin"
    elif command -v "$1" >/dev/null; then
        bin="$(dirname "$(command -v "$1")")"
    else
        echo "$(basename "$0"): cannot find $1 (set PF_BIN, or install with pipelines/install.sh)" >&2
        exit 2
    fi
}
