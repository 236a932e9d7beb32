# shellcheck shell=bash
# Pieces of scripts/bench-compare: a throwaway PostgreSQL cluster with the launch schema and
# the benchmark data, PgBouncer and launch-proxy processes, pgbench runs and what we measure
# around them. Source it after common.sh and pg.sh; it only defines functions.
#
# State lives in these globals (set by the caller unless noted):
#   LP_BENCH_WORK   private working directory (cluster, configs, logs)
#   LP_BENCH_PG_PORT / LP_BENCH_PGDATA                     set by lp_bench_pg_start
#   LP_BENCH_POOLER_PID / LP_BENCH_POOLER_PORT             set by lp_bench_*_start

# shellcheck disable=SC2034  # LP_BENCH_POOLER_PORT and the pool settings are read by the caller

if [[ -n ${_LP_BENCH_SH:-} ]]; then
    return 0
fi
_LP_BENCH_SH=1

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The application role's password in the benchmark cluster, and the password of the
# per-tenant proxy users (bench_0001 ...). Throwaway values for a cluster on 127.0.0.1.
LP_BENCH_APP_PASSWORD=apppw
LP_BENCH_TENANT_PASSWORD=benchpw

# The pool settings every pooler gets (seed: PgBouncer 1.18 block; max_client_conn raised
# from 2000 to 5000 for the benchmark).
LP_BENCH_MAX_CLIENT_CONN=5000
LP_BENCH_POOL_SIZE=100
LP_BENCH_MIN_POOL=10
LP_BENCH_RESERVE_POOL=50
LP_BENCH_MAX_DB_CONN=100
LP_BENCH_MAX_USER_CONN=100

# A free TCP port, starting from a random point so that concurrent runs do not collide, and
# below the kernel's ephemeral range (32768 and up by default): the clients' own sockets take
# ports from there, and a listener cannot bind the local port of a connection (2000 clients
# and 150 server connections made a bench run fail on "Address already in use").
lp_bench_free_port() {
    local low
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((low > 11000)) || low=32768
    lp_first_free_port $((10000 + RANDOM % (low - 11000)))
}

# The newest pgbench binary; installs Debian's PostgreSQL 15 (which ships it) if none.
lp_bench_pgbench() {
    local candidate
    for candidate in $(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -t/ -k5,5nr); do
        if [[ -x $candidate ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    lp_apt_install postgresql-15 >&2 || lp_die "cannot install pgbench (Debian package postgresql-15)"
    printf '%s\n' /usr/lib/postgresql/15/bin/pgbench
}

# Memory settings: the seed's fractions of RAM (shared_buffers 1GB and effective_cache_size
# 3GB of the 4 GiB db.t4g.medium), capped at 2 GiB / 6 GiB: the data set is < 1 GB and the
# machine is shared. CPU settings follow the seed for its 2 vCPUs, scaled by nproc / 2.
lp_bench_pg_conf() {
    local port=$1 socket_dir=$2 max_conn=$3
    local mem_kib cpus sb_mb ecs_mb workers
    mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    cpus=$(nproc)
    sb_mb=$((mem_kib / 4 / 1024))
    ((sb_mb > 2048)) && sb_mb=2048
    ecs_mb=$((mem_kib * 3 / 4 / 1024))
    ((ecs_mb > 6144)) && ecs_mb=6144
    workers=$((cpus * 2))
    ((workers < 4)) && workers=4
    cat <<EOF
# ---- scripts/bench-compare ----
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$socket_dir'
max_connections = $max_conn
password_encryption = 'scram-sha-256'
# The seed's parameter group (launch-pg-main), memory scaled to this machine:
shared_buffers = ${sb_mb}MB
effective_cache_size = ${ecs_mb}MB
maintenance_work_mem = 128MB
checkpoint_completion_target = 0.9
wal_buffers = 16MB
default_statistics_target = 100
random_page_cost = 1.1
effective_io_concurrency = 200
work_mem = 4MB
min_wal_size = 1GB
max_wal_size = 4GB
max_worker_processes = $workers
max_parallel_workers_per_gather = $((workers / 2))
max_parallel_workers = $workers
max_parallel_maintenance_workers = $((workers / 2))
# Not the seed's: commits do not wait for the WAL flush, so that this machine's disk does
# not hide the poolers' differences (RDS gp3 fsync latency is not reproducible here).
synchronous_commit = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
lc_messages = 'C'
timezone = 'UTC'
EOF
}

# initdb + configuration + start, as the postgres OS user. Sets LP_BENCH_PG_PORT and
# LP_BENCH_PGDATA. $1 = max_connections.
lp_bench_pg_start() {
    local max_conn=$1 dir=$LP_BENCH_WORK/pg attempt
    LP_BENCH_PGDATA=$dir/data
    mkdir -p "$dir"
    chown "$(lp_pg_owner)": "$dir" 2>/dev/null || true
    (cd "$dir" && lp_as_pg_owner "$LP_PG_BIN/initdb" -D "$LP_BENCH_PGDATA" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1) ||
        lp_die "initdb failed: $(tail -n 20 "$dir/initdb.log")"
    lp_as_pg_owner tee "$LP_BENCH_PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER      ADDRESS         METHOD
local   all       all                       trust
host    all       postgres  127.0.0.1/32    trust
host    all       all       127.0.0.1/32    scram-sha-256
EOF
    for attempt in 1 2 3; do
        LP_BENCH_PG_PORT=$(lp_bench_free_port)
        lp_bench_pg_conf "$LP_BENCH_PG_PORT" "$dir" "$max_conn" |
            lp_as_pg_owner tee "$LP_BENCH_PGDATA/bench.conf" >/dev/null
        grep -q "^include 'bench.conf'" "$LP_BENCH_PGDATA/postgresql.conf" ||
            echo "include 'bench.conf'" | lp_as_pg_owner tee -a "$LP_BENCH_PGDATA/postgresql.conf" >/dev/null
        if (cd "$dir" && lp_as_pg_owner "$LP_PG_BIN/pg_ctl" -D "$LP_BENCH_PGDATA" \
            -l "$dir/postgresql.log" -w -t 120 -s start); then
            export LP_BENCH_PG_PORT LP_BENCH_PGDATA
            return 0
        fi
        grep -q "Address already in use" "$dir/postgresql.log" 2>/dev/null || break
        lp_warn "port $LP_BENCH_PG_PORT was taken; retrying ($attempt)"
    done
    lp_die "PostgreSQL did not start: $(tail -n 20 "$dir/postgresql.log" 2>/dev/null)"
}

lp_bench_pg_stop() {
    [[ -n ${LP_BENCH_PGDATA:-} && -f $LP_BENCH_PGDATA/postmaster.pid ]] || return 0
    (cd "$LP_BENCH_WORK/pg" && lp_as_pg_owner "$LP_PG_BIN/pg_ctl" -D "$LP_BENCH_PGDATA" \
        -m fast -w -t 30 -s stop) >/dev/null 2>&1 || true
}

# psql as the superuser into database $1 (default launch); extra arguments follow.
lp_bench_psql() {
    local db=${1:-launch}
    shift || true
    "$LP_PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$LP_BENCH_PG_PORT" -U postgres -d "$db" "$@"
}

# Applies migrations/*.sql, sets the app password and the signing key, loads $1 tenants with
# $2 base_entity rows each (ids: src/bin/launch_load/ids.rs) and pgbench's tables at scale $3.
lp_bench_load() {
    local tenants=$1 rows=$2 scale=$3 key=$4 pgbench=$5 f
    lp_bench_psql postgres -c "CREATE DATABASE launch"
    for f in "$LP_REPO_ROOT"/migrations/*.sql; do
        lp_log "applying $(basename "$f")"
        lp_bench_psql launch -1 -f "$f" >/dev/null
    done
    lp_log "loading $tenants tenants x $rows base_entity rows"
    lp_bench_psql launch <<EOF
\o /dev/null
SET client_min_messages = warning;
SET password_encryption = 'scram-sha-256';
ALTER ROLE app PASSWORD '$LP_BENCH_APP_PASSWORD';
SELECT launch.set_signing_key('$key', false);
INSERT INTO tenants (id, name, domain, status, created_by, updated_by)
SELECT '01JBENCHT' || lpad(t::text, 17, '0'), 'bench tenant ' || t, 't' || t || '.bench.invalid',
       'active', '01JBENCHA' || lpad(t::text, 17, '0'), '01JBENCHA' || lpad(t::text, 17, '0')
FROM generate_series(1, $tenants) AS t
ON CONFLICT DO NOTHING;
INSERT INTO base_entity (id, tenant_id, created_by, updated_by)
SELECT '01JBENCHE' || lpad(t::text, 6, '0') || lpad(r::text, 11, '0'),
       '01JBENCHT' || lpad(t::text, 17, '0'),
       '01JBENCHA' || lpad(t::text, 17, '0'), '01JBENCHA' || lpad(t::text, 17, '0')
FROM generate_series(1, $tenants) AS t, generate_series(1, $rows) AS r
ON CONFLICT DO NOTHING;
EOF
    lp_log "initialising pgbench tables (scale $scale)"
    "$pgbench" -i -q -s "$scale" -h 127.0.0.1 -p "$LP_BENCH_PG_PORT" -U postgres launch \
        >"$LP_BENCH_WORK/pgbench-init.log" 2>&1 ||
        lp_die "pgbench -i failed: $(tail -n 20 "$LP_BENCH_WORK/pgbench-init.log")"
    lp_bench_psql launch <<'EOF'
GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO app;
GRANT SELECT, INSERT ON pgbench_history TO app;
GRANT SELECT, UPDATE ON pgbench_accounts, pgbench_branches, pgbench_tellers TO app;
VACUUM ANALYZE;
CHECKPOINT;
EOF
}

# The `"user" "SCRAM-SHA-256$..."` line of PgBouncer's auth_file for role $1.
lp_bench_userlist_line() {
    lp_bench_psql launch -At -c \
        "SELECT format('\"%s\" \"%s\"', rolname, rolpassword) FROM pg_authid WHERE rolname = '$1'"
}

# The SCRAM verifier of role $1 (for launch-proxy's users file, like PgBouncer's userlist).
lp_bench_verifier() {
    lp_bench_psql launch -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$1'"
}

# The open-files limit given to the poolers: 65536, or the hard limit if that is lower (a
# container may forbid raising it even to root).
lp_bench_nofile() {
    local hard
    hard=$(ulimit -Hn)
    if [[ $hard == unlimited ]] || ((hard > 65536)); then
        echo 65536
    else
        echo "$hard"
    fi
}

# Runs "$@" in the background from directory $1 with a 65536 open-files limit and sets
# LP_BENCH_SPAWNED to its pid (the command is exec'd, so the pid is the program's; it is a
# child of this shell). $2 = log file.
lp_bench_spawn() {
    local dir=$1 log=$2
    shift 2
    (
        cd "$dir" || exit 1
        n=$(lp_bench_nofile)
        # In a session of its own, as systemd starts a service: with the kernel's autogroup
        # scheduling (on by default) a session is one scheduling group, and a pooler left
        # in the harness's session would share its CPU share with the load generator and
        # be preempted by it (PgBouncer's CPU per seed transaction is a quarter to a third
        # lower on its own; docs/benchmarks.md, "Session of 2026-12-07 (3)"). setsid execs
        # in place: the subshell is not a process group leader, so $! stays the pooler's pid.
        if lp_is_root; then
            exec setsid prlimit --nofile="$n:$n" "$@"
        else
            ulimit -n "$n"
            exec setsid "$@"
        fi
    ) >>"$log" 2>&1 </dev/null &
    LP_BENCH_SPAWNED=$!
}

lp_bench_pgbouncer_write_config() {
    local dir=$LP_BENCH_WORK/pgbouncer
    mkdir -p "$dir"
    lp_bench_userlist_line app >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
;; scripts/bench-compare: the seed's PgBouncer settings, max_client_conn raised for the bench.
[databases]
launch = host=127.0.0.1 port=$LP_BENCH_PG_PORT dbname=launch

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = @PORT@
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = $LP_BENCH_MAX_CLIENT_CONN
default_pool_size = $LP_BENCH_POOL_SIZE
min_pool_size = $LP_BENCH_MIN_POOL
reserve_pool_size = $LP_BENCH_RESERVE_POOL
reserve_pool_timeout = 5
max_db_connections = $LP_BENCH_MAX_DB_CONN
max_user_connections = $LP_BENCH_MAX_USER_CONN
server_idle_timeout = 60
server_lifetime = 7200
server_connect_timeout = 5
query_wait_timeout = 5
log_connections = 0
log_disconnections = 0
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
EOF
    chmod 600 "$dir/userlist.txt"
    chown -R "$(lp_pg_owner)": "$dir" 2>/dev/null || true
}

# Starts PgBouncer as the postgres user; sets LP_BENCH_POOLER_PID and LP_BENCH_POOLER_PORT.
lp_bench_pgbouncer_start() {
    local dir=$LP_BENCH_WORK/pgbouncer attempt port
    for attempt in 1 2 3; do
        port=$(lp_bench_free_port)
        sed "s/@PORT@/$port/" "$dir/pgbouncer.ini" | lp_as_pg_owner tee "$dir/run.ini" >/dev/null
        rm -f "$dir/pgbouncer.pid"
        if lp_is_root; then
            lp_bench_spawn "$dir" "$dir/stderr.log" \
                setpriv --reuid=postgres --regid=postgres --init-groups -- \
                "$LP_PGBOUNCER" "$dir/run.ini"
        else
            lp_bench_spawn "$dir" "$dir/stderr.log" "$LP_PGBOUNCER" "$dir/run.ini"
        fi
        LP_BENCH_POOLER_PID=$LP_BENCH_SPAWNED
        if lp_wait_port "$port" 20 "$LP_BENCH_POOLER_PID"; then
            LP_BENCH_POOLER_PORT=$port
            return 0
        fi
        lp_bench_pooler_stop
        grep -q "Address already in use" "$dir/pgbouncer.log" "$dir/stderr.log" 2>/dev/null || break
    done
    lp_die "PgBouncer did not start: $(tail -n 20 "$dir/pgbouncer.log" "$dir/stderr.log" 2>/dev/null)"
}

# $1 = "native" (tenant users in the users file) or "generator" (only app; the load
# generator sets the tenant). $2 = signing key, $3 = tenants.
lp_bench_proxy_write_config() {
    local mode=$1 key=$2 tenants=$3 dir=$LP_BENCH_WORK/proxy t verifier
    mkdir -p "$dir"
    verifier=$(lp_bench_verifier app)
    {
        echo "# scripts/bench-compare: the seed's pool settings, max_client_conn raised for the bench."
        echo "listen: \"127.0.0.1:6432\""
        echo "metrics_listen: \"\""
        # As the PgBouncer config (log_connections = 0, log_disconnections = 0).
        echo "log_connections: false"
        echo "log_disconnections: false"
        echo "server: { host: 127.0.0.1, port: $LP_BENCH_PG_PORT, database: launch }"
        echo "users_file: users.yaml"
        echo "pool:"
        echo "  mode: transaction"
        echo "  max_client_conn: $LP_BENCH_MAX_CLIENT_CONN"
        echo "  default_pool_size: $LP_BENCH_POOL_SIZE"
        echo "  min_pool_size: $LP_BENCH_MIN_POOL"
        echo "  reserve_pool_size: $LP_BENCH_RESERVE_POOL"
        echo "  reserve_pool_timeout_ms: 5000"
        echo "  max_db_connections: $LP_BENCH_MAX_DB_CONN"
        echo "  max_user_connections: $LP_BENCH_MAX_USER_CONN"
        echo "  acquire_timeout_ms: 5000"
        echo "  connect_timeout_ms: 5000"
        echo "  idle_timeout_ms: 60000"
        echo "  server_lifetime_ms: 7200000"
        echo "roles:"
        echo "  read:  { command_timeout_ms: 10000, statement_timeout_ms: 30000, idle_in_transaction_timeout_ms: 60000 }"
        echo "  write: { command_timeout_ms: 30000, statement_timeout_ms: 60000, idle_in_transaction_timeout_ms: 60000 }"
        if [[ $mode == native ]]; then
            echo "tenant:"
            echo "  signing_key: \"$key\""
        fi
    } >"$dir/launch-proxy.yaml"
    {
        echo "users:"
        # Clients are checked against the SCRAM verifier from pg_authid, as in PgBouncer's
        # userlist; the proxy's own PostgreSQL login needs the password itself, since the
        # tenant users' transactions run on app's pool (server_user) without app's keys.
        echo "  app: { password: \"$verifier\", server_password: \"$LP_BENCH_APP_PASSWORD\", role: write }"
        if [[ $mode == native ]]; then
            for ((t = 1; t <= tenants; t++)); do
                printf '  bench_%04d: { password: "%s", role: write, tenant: "01JBENCHT%017d", server_user: app }\n' \
                    "$t" "$LP_BENCH_TENANT_PASSWORD" "$t"
            done
        fi
    } >"$dir/users.yaml"
    chmod 600 "$dir/users.yaml" "$dir/launch-proxy.yaml"
}

# True if the proxy binary $1 accepts the generated config.
lp_bench_proxy_check() {
    "$1" --check-config "$LP_BENCH_WORK/proxy/${2:-launch-proxy.yaml}" >"$LP_BENCH_WORK/proxy/check.log" 2>&1
}

# The `proxy-plain` target's config: the native one with the statement guard off (its
# clients log in as app and set the tenant themselves, so nothing is injected).
lp_bench_proxy_write_plain_config() {
    local dir=$LP_BENCH_WORK/proxy
    {
        cat "$dir/launch-proxy.yaml"
        echo "  statement_guard: false"
    } >"$dir/launch-proxy-plain.yaml"
    chmod 600 "$dir/launch-proxy-plain.yaml"
}

# The `proxy-variant` target's config: the one `proxy` runs with the YAML line $1 added, at
# the top level or, written `pool.KEY: VALUE`, in the pool section (serde rejects a key given
# twice, so a setting the base config has cannot be varied).
lp_bench_proxy_write_variant_config() {
    local dir=$LP_BENCH_WORK/proxy
    if [[ $1 =~ ^pool\.([a-z_]+):\ *(.*)$ ]]; then
        sed "/^pool:\$/a\\  ${BASH_REMATCH[1]}: ${BASH_REMATCH[2]}" "$dir/launch-proxy.yaml"
    else
        cat "$dir/launch-proxy.yaml"
        printf '%s\n' "$1"
    fi >"$dir/launch-proxy-variant.yaml"
    chmod 600 "$dir/launch-proxy-variant.yaml"
}

# Starts launch-proxy ($1) with config file $2 (default launch-proxy.yaml) of the work
# directory; sets LP_BENCH_POOLER_PID and LP_BENCH_POOLER_PORT.
lp_bench_proxy_start() {
    local bin=$1 config=${2:-launch-proxy.yaml} dir=$LP_BENCH_WORK/proxy attempt port
    for attempt in 1 2 3; do
        port=$(lp_bench_free_port)
        # Connection events at info level would be thousands of log lines per second with
        # connect-per-transaction clients; PgBouncer's are off too (log_connections = 0).
        lp_bench_spawn "$dir" "$dir/proxy.log" env "RUST_LOG=${LP_BENCH_PROXY_LOG:-warn}" \
            "$bin" --config "$dir/$config" --listen "127.0.0.1:$port" --metrics-listen ""
        LP_BENCH_POOLER_PID=$LP_BENCH_SPAWNED
        if lp_wait_port "$port" 30 "$LP_BENCH_POOLER_PID"; then
            LP_BENCH_POOLER_PORT=$port
            return 0
        fi
        lp_bench_pooler_stop
        grep -q "Address already in use" "$dir/proxy.log" 2>/dev/null || break
    done
    lp_die "launch-proxy did not start: $(tail -n 20 "$dir/proxy.log" 2>/dev/null)"
}

# Stops the pooler we started (SIGTERM, then SIGKILL after 15 s).
lp_bench_pooler_stop() {
    local pid=${LP_BENCH_POOLER_PID:-} i
    LP_BENCH_POOLER_PID=""
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# utime+stime ticks of process $1, or nothing if it is gone.
lp_bench_cpu_ticks() {
    local line rest
    local -a f
    read -r line <"/proc/$1/stat" 2>/dev/null || return 0
    rest=${line##*) }
    read -r -a f <<<"$rest"
    printf '%s\n' $((f[11] + f[12]))
}

# A `/proc/PID/status` value in KiB (VmHWM, VmRSS).
lp_bench_status_kib() {
    awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# Appends "epoch_seconds ticks sleeps" of process $1 to file $2 every 0.25 s until epoch $3.
lp_bench_cpu_sampler() {
    local pid=$1 out=$2 until=$3 ticks
    while ((EPOCHSECONDS < until)); do
        ticks=$(lp_bench_cpu_ticks "$pid")
        [[ -n $ticks ]] || break
        printf '%s %s %s\n' "$EPOCHREALTIME" "$ticks" "$(lp_bench_sleeps "$pid")" >>"$out"
        sleep 0.25
    done
}

# Voluntary context switches (sleeps: blocking with nothing to do) of all threads of $1,
# read without starting a program (the sampler runs this four times a second).
lp_bench_sleeps() {
    local f key value rest sum=0
    for f in /proc/"$1"/task/*/status; do
        while read -r key value rest; do
            if [[ $key == voluntary_ctxt_switches: ]]; then
                sum=$((sum + value))
            fi
        done <"$f" 2>/dev/null
    done
    echo "$sum"
}

# From pgbench's --progress-timestamp lines ($1, its stderr) and the CPU samples ($2):
# "cpu_seconds transactions sleeps" over the steady part of the run (the first progress interval
# with transactions and the last interval are left out: connection ramp and wind-down).
lp_bench_steady_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '
        FNR == NR { if ($1 == "progress:") { n++; ts[n] = $2; tps[n] = $4 } next }
        { m++; st[m] = $1; sc[m] = $2; sl[m] = $3 }
        function at(t, v,   i) {
            if (t <= st[1]) return v[1]
            for (i = 2; i <= m; i++)
                if (st[i] >= t) return v[i-1] + (v[i] - v[i-1]) * (t - st[i-1]) / (st[i] - st[i-1])
            return v[m]
        }
        END {
            a = 1
            while (a <= n && tps[a] + 0 == 0) a++
            a++
            b = n - 1
            if (b - a < 2 || m < 2) { print "nan nan nan"; exit }
            tx = 0
            for (i = a + 1; i <= b; i++) tx += tps[i] * (ts[i] - ts[i-1])
            printf "%.6f %.0f %.0f\n", (at(ts[b], sc) - at(ts[a], sc)) / hz, tx, at(ts[b], sl) - at(ts[a], sl)
        }' "$1" "$2"
}

# Latency percentiles from pgbench's per-transaction logs (files $1*): prints
# "count mean p50 p95 p99 p999 max" in milliseconds, or nothing without samples.
lp_bench_log_percentiles() {
    local prefix=$1
    local f
    for f in "$prefix".*; do
        [[ -f $f ]] && awk '$3 ~ /^[0-9]+$/ { print $3 }' "$f"
    done | sort -n |
        awk '{ v[NR] = $1; s += $1 }
            END {
                if (NR == 0) exit
                split("0.5 0.95 0.99 0.999", q, " ")
                printf "%d %.3f", NR, s / NR / 1000
                for (i = 1; i <= 4; i++) {
                    k = int(q[i] * NR); if (k < q[i] * NR) k++; if (k < 1) k = 1
                    printf " %.3f", v[k] / 1000
                }
                printf " %.3f\n", v[NR] / 1000
            }' || true
}

# A JSON string literal of $1.
lp_bench_json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    s=${s//$'\r'/ }
    s=${s//$'\n'/ }
    printf '"%s"' "$s"
}

# A JSON number, or null for an empty/non-numeric value.
lp_bench_json_num() {
    if [[ $1 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
        printf '%s' "$1"
    else
        printf 'null'
    fi
}

# The SQLSTATE of a libpq error message pgbench printed (pgbench shows no codes).
lp_bench_sqlstate_of() {
    case $1 in
    *"prepared statement"*"does not exist"*) echo 26000 ;;
    *"prepared statement"*"already exists"*) echo 42P05 ;;
    *"too many clients"* | *"no more connections"* | *"remaining connection slots"*) echo 53300 ;;
    *"password authentication failed"* | *"SASL authentication failed"*) echo 28P01 ;;
    *"query_wait_timeout"* | *"timeout"*) echo 57014 ;;
    *"server closed the connection"* | *"connection to server"*) echo 08006 ;;
    *) echo pgbench ;;
    esac
}
