# shellcheck shell=bash
# Rust toolchain checks for scripts/*.
#
#   lp_rust_setup   cargo on PATH, at least the crate's rust-version, with
#                   rustfmt and clippy (added through rustup when missing)
#
# Debian's own rustc is far older than the crate's rust-version, so the
# toolchain comes from rustup; we never install rustup itself.

if [[ -n ${_LP_RUST_SH:-} ]]; then
    return 0
fi
_LP_RUST_SH=1

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# True if version $1 >= version $2 (dotted numbers).
lp_version_ge() {
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1) == "$2" ]]
}

lp_rust_setup() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
        PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        lp_die "cargo not found: install a Rust toolchain with rustup (https://rustup.rs)"

    local need have
    need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$LP_REPO_ROOT/Cargo.toml" | head -n 1)
    have=$(rustc --version | awk '{print $2}')
    if [[ -n $need ]] && ! lp_version_ge "${have%%-*}" "$need"; then
        lp_die "rustc $have is older than the crate's rust-version $need (rustup update stable)"
    fi

    local tool component
    for tool in fmt clippy; do
        if ! cargo "$tool" --version >/dev/null 2>&1; then
            component=$([[ $tool == fmt ]] && echo rustfmt || echo clippy)
            lp_log "adding the $component component"
            if ! command -v rustup >/dev/null 2>&1 || ! rustup component add "$component"; then
                lp_die "cargo $tool is missing and could not be installed"
            fi
        fi
    done
}
