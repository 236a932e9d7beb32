# shellcheck shell=bash
# Rust toolchain checks for scripts/*.
#
#   lp_rust_setup   cargo on PATH, at least the crate's rust-version, with
#                   rustfmt and clippy (added through rustup when missing)
#   lp_rust_host    the target triple rustc builds for by default
#   lp_pgo_merge    raw profiles of an instrumented build into the profile
#                   rustc's -Cprofile-use reads (scripts/build-pgo)
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

# The target triple rustc builds for by default (e.g. x86_64-unknown-linux-gnu).
lp_rust_host() {
    rustc -vV | sed -n 's/^host: //p'
}

# The newest llvm-N package Debian's lists offer (nothing if none).
_lp_newest_llvm_package() {
    apt-cache search --names-only '^llvm-[0-9]+$' 2>/dev/null |
        awk '{ print $1 }' | sort -t- -k2,2nr | head -n 1
}

# Merges the raw profiles $2... of an instrumented build (-Cprofile-generate) into the
# indexed profile $1 that `-Cprofile-use` reads. The raw format follows rustc's LLVM, and an
# llvm-profdata older than the one that wrote it refuses it, so the candidates are tried
# newest first: rustup's llvm-tools component, then Debian's llvm-N packages; when none reads
# the profiles, the newest llvm-N Debian offers is installed and tried.
lp_pgo_merge() {
    local out=$1 candidate sysroot host newest attempt
    shift
    sysroot=$(rustc --print sysroot)
    host=$(lp_rust_host)
    for attempt in first after-install; do
        for candidate in "$sysroot/lib/rustlib/$host/bin/llvm-profdata" \
            $(printf '%s\n' /usr/lib/llvm-*/bin/llvm-profdata | sort -t- -k2,2nr); do
            [[ -x $candidate ]] || continue
            if "$candidate" merge -o "$out" "$@" 2>/dev/null; then
                lp_log "profiles merged by $candidate"
                return 0
            fi
        done
        [[ $attempt == first ]] || break
        newest=$(_lp_newest_llvm_package)
        if [[ -z $newest ]]; then
            lp_as_root apt-get update -q >/dev/null 2>&1 || true
            newest=$(_lp_newest_llvm_package)
        fi
        [[ -n $newest ]] || break
        lp_apt_install "$newest" || break
    done
    lp_log "error: no llvm-profdata here reads rustc $(rustc --version | awk '{ print $2 }')'s profiles" \
        "(LLVM $(rustc -vV | sed -n 's/^LLVM version: //p')); try 'rustup component add llvm-tools'"
    return 1
}
