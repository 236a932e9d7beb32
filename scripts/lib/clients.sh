# shellcheck shell=bash
# Client drivers for the client-compatibility tests (tests/clients.rs).
#
#   lp_clients_setup   installs what is missing (idempotent, quick when done) and
#                      exports the paths the tests read:
#       LP_PYTHON        python of a venv with psycopg[binary] 3 and asyncpg
#       LP_NODE          node;  LP_NODE_MODULES: a node_modules dir with `pg`
#       LP_JAVA/LP_JAVAC Java 17+;  LP_JDBC_JAR: the PostgreSQL JDBC driver
#                        (Debian's libpostgresql-jdbc-java)
#       LP_PGBENCH       pgbench (Debian's postgresql-15 ships it)
#
# A client that cannot be installed is reported and its variable left unset:
# the tests then fail, or skip where LP_CLIENTS_OPTIONAL=1. Never fails itself.
# Versions are pinned so that every machine tests the same drivers.

if [[ -n ${_LP_CLIENTS_SH:-} ]]; then
    return 0
fi
_LP_CLIENTS_SH=1

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LP_CLIENTS_PY_REQS=("psycopg[binary]==3.3.9" "asyncpg==0.32.0")
LP_CLIENTS_NPM_PG=pg@8.23.1
LP_CLIENTS_JDBC_JAR=/usr/share/java/postgresql.jar

# Like pg.sh: outside /root so that any user can read it, else the user's cache.
if [[ -z ${LP_CLIENTS_PREFIX:-} ]]; then
    LP_CLIENTS_PREFIX=/var/cache/launch-proxy/clients
    if ! lp_is_root && ! mkdir -p "$LP_CLIENTS_PREFIX" 2>/dev/null; then
        LP_CLIENTS_PREFIX=${XDG_CACHE_HOME:-$HOME/.cache}/launch-proxy/clients
    fi
fi

# Python venv with the pinned drivers; a stamp holding the requirements makes the
# second run a file comparison.
lp_clients_python() {
    local venv=$LP_CLIENTS_PREFIX/venv stamp want
    stamp=$venv/.lp-requirements
    want=${LP_CLIENTS_PY_REQS[*]}
    if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]] &&
        "$venv/bin/python" -c 'import psycopg, asyncpg' 2>/dev/null; then
        LP_PYTHON=$venv/bin/python
        export LP_PYTHON
        return 0
    fi
    local py
    py=$(command -v python3 || true)
    if [[ -z $py ]] || ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
        lp_apt_install python3 python3-venv || return 1
        py=/usr/bin/python3
    fi
    lp_log "installing Python drivers (${LP_CLIENTS_PY_REQS[*]}) into $venv"
    rm -rf "$venv"
    mkdir -p "$LP_CLIENTS_PREFIX" || return 1
    "$py" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-input \
        "${LP_CLIENTS_PY_REQS[@]}" >&2 || return 1
    "$venv/bin/python" -c 'import psycopg, asyncpg' || return 1
    printf '%s' "$want" >"$stamp"
    chmod -R a+rX "$venv"
    LP_PYTHON=$venv/bin/python
    export LP_PYTHON
}

# npm `pg` (node-postgres) in its own prefix.
lp_clients_node() {
    local dir=$LP_CLIENTS_PREFIX/node node
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        lp_apt_install nodejs npm || return 1
    fi
    node=$(command -v node)
    local want=${LP_CLIENTS_NPM_PG#pg@} have=""
    if [[ -f $dir/node_modules/pg/package.json ]]; then
        have=$("$node" -p "require('$dir/node_modules/pg/package.json').version" 2>/dev/null || true)
    fi
    if [[ $have != "$want" ]]; then
        lp_log "installing node-postgres ($LP_CLIENTS_NPM_PG) into $dir"
        mkdir -p "$dir" || return 1
        npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error \
            "$LP_CLIENTS_NPM_PG" >&2 || return 1
        chmod -R a+rX "$dir"
    fi
    LP_NODE=$node
    LP_NODE_MODULES=$dir/node_modules
    export LP_NODE LP_NODE_MODULES
}

# Java 17+ (java and javac) and Debian's PostgreSQL JDBC driver.
lp_clients_java() {
    local javac major
    javac=$(command -v javac || true)
    if [[ -z $javac ]]; then
        lp_apt_install openjdk-17-jdk-headless || return 1
        javac=$(command -v javac) || return 1
    fi
    major=$("$javac" -version 2>&1 | sed -n 's/^javac \([0-9]*\).*/\1/p')
    if [[ -z $major ]] || ((major < 17)); then
        lp_warn "javac ${major:-?} is older than 17"
        return 1
    fi
    if [[ ! -f $LP_CLIENTS_JDBC_JAR ]]; then
        lp_apt_install libpostgresql-jdbc-java || return 1
    fi
    [[ -f $LP_CLIENTS_JDBC_JAR ]] || return 1
    LP_JAVAC=$javac
    LP_JAVA=$(dirname "$(readlink -f "$javac")")/java
    [[ -x $LP_JAVA ]] || LP_JAVA=$(command -v java) || return 1
    LP_JDBC_JAR=$LP_CLIENTS_JDBC_JAR
    export LP_JAVA LP_JAVAC LP_JDBC_JAR
}

# pgbench: beside psql if there is one, else the newest /usr/lib/postgresql/*/bin.
lp_clients_pgbench() {
    local candidate
    for candidate in ${LP_PSQL:+"$(dirname "$LP_PSQL")/pgbench"} \
        $(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -t/ -k5,5nr); do
        if [[ -x $candidate ]]; then
            LP_PGBENCH=$candidate
            export LP_PGBENCH
            return 0
        fi
    done
    lp_apt_install postgresql-15 || return 1
    LP_PGBENCH=/usr/lib/postgresql/15/bin/pgbench
    [[ -x $LP_PGBENCH ]] || return 1
    export LP_PGBENCH
}

lp_clients_setup() {
    local part missing=()
    for part in python node java pgbench; do
        if ! "lp_clients_$part"; then
            missing+=("$part")
        fi
    done
    if ((${#missing[@]} > 0)); then
        lp_warn "client drivers not installed: ${missing[*]} (tests/clients.rs fails for them" \
            "unless LP_CLIENTS_OPTIONAL=1)"
    else
        lp_log "client drivers: python $LP_PYTHON, node $LP_NODE_MODULES, java $LP_JAVA" \
            "with $LP_JDBC_JAR, pgbench $LP_PGBENCH"
    fi
    return 0
}
