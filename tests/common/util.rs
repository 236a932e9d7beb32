//! Process, port and directory helpers shared by the PostgreSQL and proxy harnesses.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago. Ports are never handed out twice
/// within one test process, so concurrently starting servers cannot collide with
/// each other (a collision with an unrelated process is handled by retrying callers).
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("could not find a free TCP port on 127.0.0.1");
}

/// Polls a TCP connect to 127.0.0.1:`port` until it succeeds or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_ok_and(|s| !is_self_connection(&s))
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Whether `stream` is connected to itself: with nothing listening on a port of the
/// ephemeral range, a loopback connect can pick that same port as its source and connect
/// to itself (TCP simultaneous open), which looks like a listener that accepts.
pub fn is_self_connection(stream: &TcpStream) -> bool {
    matches!((stream.local_addr(), stream.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

/// True when this process runs with effective uid 0.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// uid and gid of the `postgres` OS user, read from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == "postgres")
            .map(|f| {
                (
                    f[2].parse().expect("postgres uid"),
                    f[3].parse().expect("postgres gid"),
                )
            })
            .expect(
                "running as root but there is no `postgres` OS user to run PostgreSQL as; \
                 run ./scripts/pg-install (or apt-get install postgresql-15) first",
            )
    })
}

/// A command that runs as the OS user owning the PostgreSQL clusters: `postgres` via
/// `setpriv` when we are root (keeps our rlimits), the current user otherwise.
pub fn pg_user_command(program: &Path) -> Command {
    let mut cmd = if is_root() {
        postgres_ids();
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    };
    // Never let a developer's PG* environment redirect a harness command.
    for var in [
        "PGDATA",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGPASSWORD",
        "PGSERVICE",
        "PGOPTIONS",
        "PGSSLMODE",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Makes `path` owned by the PostgreSQL OS user (no-op unless we are root).
pub fn give_to_pg_user(path: &Path) {
    if is_root() {
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Sends `signal` (a name such as "TERM" or "KILL") to `target`, a pid or `-pgid`.
/// Returns whether `kill` reported success.
pub fn send_signal(target: &str, signal: &str) -> bool {
    Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// True while `pid` names a live (non-zombie) process.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Field 3 (after the parenthesised command name) is the state.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The root every harness directory lives under: `$LP_TEST_ROOT`, else
/// `/dev/shm/launch-proxy-tests` when /dev/shm is a writable directory (a tmpfs: copying
/// a cluster there is an order of magnitude faster than on a disk file system), else
/// `$TMPDIR/launch-proxy-tests`.
pub fn test_root() -> PathBuf {
    if let Some(p) = std::env::var_os("LP_TEST_ROOT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let shm = Path::new("/dev/shm");
    let shm_ok = fs::metadata(shm).is_ok_and(|m| m.is_dir() && !m.permissions().readonly());
    if shm_ok {
        shm.join("launch-proxy-tests")
    } else {
        std::env::temp_dir().join("launch-proxy-tests")
    }
}

/// This test process's directory (`<root>/run-<pid>`), created on first use after
/// cleaning up directories of test processes that are gone.
pub fn test_run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = test_root();
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
        // World-traversable so the postgres OS user can reach its own directories.
        let _ = fs::set_permissions(&root, fs::Permissions::from_mode(0o755));
        clean_stale_runs(&root);
        let dir = root.join(format!("run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod run dir");
        give_to_pg_user(&dir);
        dir
    })
}

/// A new, empty directory `<run dir>/<prefix>-<n>`.
pub fn unique_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = test_run_dir().join(format!("{prefix}-{n}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Whether directories should be left behind for inspection.
pub fn keep_dirs() -> bool {
    std::env::var("LP_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Removes `<root>/run-<pid>` directories whose process no longer exists, stopping any
/// PostgreSQL still running from them first.
fn clean_stale_runs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        let dir = entry.path();
        for (postmaster, data_dir) in postmaster_pids_under(&dir, 3) {
            stop_orphan_postmaster(postmaster, &data_dir);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

/// Pids from `postmaster.pid` files at most `depth` levels below `dir`, each with its data
/// directory.
fn postmaster_pids_under(dir: &Path, depth: usize) -> Vec<(u32, PathBuf)> {
    let mut pids = Vec::new();
    if let Some(pid) = read_postmaster_pid(&dir.join("postmaster.pid")) {
        pids.push((pid, dir.to_path_buf()));
    }
    if depth > 0 {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    pids.extend(postmaster_pids_under(&e.path(), depth - 1));
                }
            }
        }
    }
    pids
}

/// The postmaster pid recorded in a `postmaster.pid` file, if the file exists.
pub fn read_postmaster_pid(pid_file: &Path) -> Option<u32> {
    fs::read_to_string(pid_file)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Immediate shutdown of a postmaster nobody owns any more, then SIGKILL. Only a process
/// started on `data_dir` is signalled: pids are reused quickly (pid_max is 32768 on the
/// test hosts), and a stale pid file's number may belong to another test's PostgreSQL
/// backend by now, whose death would reset every connection of that cluster.
fn stop_orphan_postmaster(pid: u32, data_dir: &Path) {
    let ours = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("postgres") && c.contains(&*data_dir.to_string_lossy())
        })
        .unwrap_or(false);
    if !ours || !pid_alive(pid) {
        return;
    }
    send_signal(&pid.to_string(), "QUIT");
    if !wait_until(Duration::from_secs(5), || !pid_alive(pid)) {
        send_signal(&format!("-{pid}"), "KILL");
        send_signal(&pid.to_string(), "KILL");
    }
}

/// Polls `done` every 20 ms until it returns true (-> true) or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of a text file ("" if it cannot be read).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quotes a libpq/tokio-postgres connection-string value when it needs it.
pub fn conn_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_string();
    }
    let escaped = v.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// A single-quoted SQL string literal.
pub fn sql_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}
