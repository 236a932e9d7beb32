# shellcheck shell=bash
# Shared helpers for scripts/*: logging, privileges, Debian packages, ports,
# file-descriptor limits and cleaning up processes left in a directory.
# Source it; it defines functions and LP_REPO_ROOT and has no other effects.

if [[ -n ${_LP_COMMON_SH:-} ]]; then
    return 0
fi
_LP_COMMON_SH=1

LP_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LP_REPO_ROOT
: "${LP_SCRIPT_NAME:=$(basename "$0")}"

lp_log() { printf '%s: %s\n' "$LP_SCRIPT_NAME" "$*" >&2; }
lp_warn() { lp_log "warning: $*"; }
lp_die() {
    lp_log "error: $*"
    exit 1
}

# Prints the comment block at the top of script $1 (its usage text).
lp_usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$1"
}

lp_is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as root: directly when we are root, else through sudo.
lp_as_root() {
    if lp_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        lp_log "error: root privileges needed for: $*"
        return 1
    fi
}

# Installs Debian packages (refreshing the package lists once if the first
# attempt fails). Returns non-zero if they cannot be installed.
lp_apt_install() {
    lp_log "installing Debian packages: $*"
    local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if lp_as_root "${apt[@]}" install --no-install-recommends "$@"; then
        return 0
    fi
    lp_as_root "${apt[@]}" update &&
        lp_as_root "${apt[@]}" install --no-install-recommends "$@"
}

# PostgreSQL refuses to run as root, so as root every server-side command runs
# as the `postgres` OS user (setpriv keeps our rlimits, unlike su/runuser
# through PAM). As any other user it runs as that user.
lp_pg_owner() {
    if lp_is_root; then
        printf 'postgres\n'
    else
        id -un
    fi
}

lp_as_pg_owner() {
    if lp_is_root; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# Creates the `postgres` system user when running as root and it is missing
# (the npm PostgreSQL build, unlike the Debian packages, does not create it).
lp_ensure_pg_user() {
    lp_is_root || return 0
    if ! id postgres >/dev/null 2>&1; then
        lp_log "creating the postgres system user"
        useradd --system --user-group --home-dir /var/lib/postgresql \
            --no-create-home --shell /usr/sbin/nologin postgres
    fi
}

# True if something listens on TCP port $1 (any local address).
lp_port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        # Any socket on it, not only listeners: a connection's local port cannot be bound.
        [[ -n $(ss -Htan "sport = :$port" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# Prints the first port >= $1 that nothing listens on.
lp_first_free_port() {
    local port=$1
    while lp_port_in_use "$port"; do
        port=$((port + 1))
    done
    printf '%s\n' "$port"
}

# Waits until 127.0.0.1:$1 accepts a TCP connection; gives up after $2 seconds, or as soon
# as process $3 (optional: the server expected to listen) has exited.
lp_wait_port() {
    local port=$1 timeout=$2 pid=${3:-} deadline
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Raises the soft open-files limit of this shell (and its children) to $1, or
# as close as the hard limit allows.
lp_raise_nofile() {
    local want=$1 hard
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((hard < want)); then
        if ulimit -Hn "$want" 2>/dev/null; then
            hard=$want
        else
            lp_warn "hard open-files limit is $hard (< $want) and cannot be raised here; using $hard"
            want=$hard
        fi
    fi
    ulimit -Sn "$want"
}

# Kills every process that was started from inside directory $1: PostgreSQL
# postmasters get an immediate shutdown first, then anything whose working
# directory is still inside $1 (backends, proxies) gets SIGKILL.
lp_reap_dir() {
    local dir=$1 pid_file pid proc tries signalled=0
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    while IFS= read -r -d '' pid_file; do
        pid=$(head -n 1 "$pid_file" 2>/dev/null || true)
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if grep -qa postgres "/proc/$pid/cmdline" 2>/dev/null &&
            kill -QUIT "$pid" 2>/dev/null; then
            signalled=1
        fi
    done < <(find "$dir" -name postmaster.pid -print0 2>/dev/null)
    # Give signalled postmasters up to 5 s to take their backends down.
    for ((tries = 0; signalled && tries < 25; tries++)); do
        [[ -n $(lp_pids_under "$dir") ]] || break
        sleep 0.2
    done
    for proc in $(lp_pids_under "$dir"); do
        kill -KILL "$proc" 2>/dev/null || true
    done
}

# Prints the pids of processes whose working directory is inside $1.
lp_pids_under() {
    local dir=$1 link pid
    while IFS= read -r link; do
        pid=${link#/proc/}
        printf '%s\n' "${pid%/cwd}"
    done < <(find /proc -mindepth 2 -maxdepth 2 -name cwd \
        \( -lname "$dir" -o -lname "$dir/*" \) 2>/dev/null)
}
