//! Client-compatibility matrix: mainstream PostgreSQL clients, each with its DEFAULT
//! settings (nothing changed to accommodate a pooler), against a real PostgreSQL through
//! the proxy in transaction mode, mostly over a pool of two server connections so that
//! every client's transactions, and its named prepared statements, land on different
//! server connections.
//!
//! | client                 | how                                                       |
//! |------------------------|-----------------------------------------------------------|
//! | psql                   | tests/clients/psql_session.sql                            |
//! | pgbench                | -i, then -M simple / extended / prepared, 8 clients       |
//! | tokio-postgres         | in-process (tests/clients/rust_drivers.rs)                |
//! | sqlx (PgPool)          | in-process (tests/clients/rust_drivers.rs)                |
//! | psycopg 3              | tests/clients/psycopg_client.py, 4 processes at once      |
//! | asyncpg                | tests/clients/asyncpg_client.py (connections; pool)       |
//! | node-postgres (`pg`)   | tests/clients/pg_client.js                                |
//! | pgjdbc                 | tests/clients/JdbcClient.java, compiled at test time      |
//!
//! The external clients come from scripts/lib/clients.sh (`lp_clients_setup`, which
//! scripts/test runs), through LP_PYTHON, LP_NODE / LP_NODE_MODULES, LP_JAVA / LP_JAVAC /
//! LP_JDBC_JAR and LP_PGBENCH. A missing client fails its test, unless
//! LP_CLIENTS_OPTIONAL=1: then the test prints "SKIPPED: <reason>" and passes.
//! Every script exits non-zero with a message on any error or wrong result and prints a
//! success line; the test checks both, then checks the data it left with a direct
//! superuser connection to PostgreSQL.
//!
//! This file holds what every client test shares (the proxy setup, running a client
//! process, checking the server); the tests themselves are grouped in modules under
//! tests/clients/, compiled into this one test binary:
//! - `postgres_tools` (postgres_tools.rs): psql and pgbench;
//! - `rust_drivers` (rust_drivers.rs): tokio-postgres and sqlx, in-process;
//! - `external_drivers` (external_drivers.rs): psycopg 3, asyncpg, node-postgres, pgjdbc.

use crate::common;
#[path = "clients/external_drivers.rs"]
mod external_drivers;
#[path = "clients/postgres_tools.rs"]
mod postgres_tools;
#[path = "clients/rust_drivers.rs"]
mod rust_drivers;

use common::{proxy_config, test_run_dir, PgServer, ProxyProcess, USERS_YAML};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Two server connections, none kept warm: clients share and churn them.
const POOL2: &str = "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0";
const USER: &str = "app";
const PASSWORD: &str = "apppw";
const DATABASE: &str = "launch";
/// Generous: up to three JVMs, Pythons or pgbenches may share the machine's two cores.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    (pg, proxy)
}

/// Like [`start`], with PostgreSQL logging every statement and connection, so that a test
/// can check that the client's named statements ran as the proxy's own (`lp_<id>`).
fn start_logged(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start_with("log_statement = 'all'\nlog_connections = on");
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    (pg, proxy)
}

/// The server ran statements the proxy prepared under its own names: the client's named
/// statements really went through the proxy's statement tracking.
fn assert_proxy_statements_used(pg: &PgServer) {
    let log = pg.log();
    let executed = log.matches("execute lp_").count();
    assert!(
        executed > 0,
        "PostgreSQL executed no proxy-named statement (execute lp_..); log tail:\n{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

/// Server connections the proxy opened for `app` so far (needs `log_connections`).
fn server_logins(pg: &PgServer) -> usize {
    pg.log()
        .matches("connection authorized: user=app database=launch")
        .count()
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A fresh scratch directory for one test's files (client output, compiled classes).
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = test_run_dir().join(format!("clients-{name}-{n}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Whether tests may skip clients the installer could not provide.
fn clients_optional() -> bool {
    std::env::var("LP_CLIENTS_OPTIONAL").is_ok_and(|v| v == "1")
}

/// The client program or file named by `$var` (exported by scripts/lib/clients.sh), or
/// `fallback` when the variable is unset. Missing: prints "SKIPPED: .." and returns None
/// under LP_CLIENTS_OPTIONAL=1, else panics.
fn installed(var: &str, what: &str, fallback: Option<PathBuf>) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or(fallback);
    match path {
        Some(p) if p.exists() => Some(p),
        other => {
            let reason = match other {
                Some(p) => format!("{what} is not installed ({var}: {} does not exist)", p.display()),
                None => format!(
                    "{what} is not installed ({var} is not set: run `source scripts/lib/clients.sh; \
                     lp_clients_setup`, as scripts/test does)"
                ),
            };
            if clients_optional() {
                println!("SKIPPED: {reason}");
                None
            } else {
                panic!("{reason}; LP_CLIENTS_OPTIONAL=1 skips tests whose client is missing");
            }
        }
    }
}

/// Sets the libpq-style connection variables for the proxy (the scripts read them) and
/// removes the ones that would change what the client does.
fn proxy_env(cmd: &mut Command, proxy: &ProxyProcess) {
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGAPPNAME",
        "PGPASSFILE",
        "PGCLIENTENCODING",
        "PGTZ",
        "PGDATESTYLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", proxy.port.to_string())
        .env("PGUSER", USER)
        .env("PGPASSWORD", PASSWORD)
        .env("PGDATABASE", DATABASE)
        .env("PGCONNECT_TIMEOUT", "10");
}

/// A client process whose output goes to files in a scratch directory.
struct Running {
    what: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

struct Finished {
    what: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn report(&self) -> String {
        format!(
            "{} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }

    /// Panics with the client's output unless it exited 0 and printed `success`.
    fn assert_ok(&self, success: &str) {
        assert!(self.status.success(), "client failed: {}", self.report());
        assert!(
            self.stdout.contains(success),
            "client printed no {success:?} line: {}",
            self.report()
        );
        eprintln!("{}: {}", self.what, self.stdout.trim_end());
    }
}

fn spawn(what: &str, mut cmd: Command, dir: &Path) -> Running {
    let slug: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let stdout = dir.join(format!("{slug}.stdout"));
    let stderr = dir.join(format!("{slug}.stderr"));
    let out = File::create(&stdout).expect("create client stdout file");
    let err = File::create(&stderr).expect("create client stderr file");
    let child = cmd
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what} ({cmd:?}): {e}"));
    Running {
        what: what.to_owned(),
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Waits until the process exits; kills it and panics with its output after `deadline`.
    fn wait(mut self, deadline: Instant) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for client") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish within {CLIENT_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    read_lossy(&self.stdout),
                    read_lossy(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Finished {
            what: self.what,
            status,
            stdout: read_lossy(&self.stdout),
            stderr: read_lossy(&self.stderr),
        }
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
}

/// Runs one client to completion.
fn run(what: &str, cmd: Command, dir: &Path) -> Finished {
    spawn(what, cmd, dir).wait(Instant::now() + CLIENT_TIMEOUT)
}

/// Runs several clients at once and waits for all of them.
fn run_all(clients: Vec<(String, Command)>, dir: &Path) -> Vec<Finished> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let running: Vec<Running> = clients
        .into_iter()
        .map(|(what, cmd)| spawn(&what, cmd, dir))
        .collect();
    running.into_iter().map(|r| r.wait(deadline)).collect()
}

/// An integer the superuser reads directly from PostgreSQL (not through the proxy).
fn count(pg: &PgServer, sql: &str) -> i64 {
    let out = pg.psql(DATABASE, sql);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: unexpected output {out:?}: {e}"))
}

/// The server backends of `app` never exceed the pool.
fn assert_within_pool(pg: &PgServer, size: i64) {
    let n = pg.server_backend_count(USER);
    assert!(
        n <= size,
        "{n} server connections for {USER}, pool size {size}"
    );
}
