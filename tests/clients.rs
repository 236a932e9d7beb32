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
//! | tokio-postgres         | in this file                                              |
//! | sqlx (PgPool)          | in this file                                              |
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

mod common;

use common::{proxy_config, psql_bin, test_run_dir, PgServer, ProxyProcess, USERS_YAML};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

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

// ------------------------------------------------------------------------------ psql

/// psql: a multi-command session with BEGIN/SAVEPOINT/COMMIT, \copy in (from the script,
/// text and CSV) and out (to a file and to stdout), DO blocks raising notices, \gset.
#[test]
fn psql_session() {
    let (pg, proxy) = start(POOL2);
    let dir = scratch("psql");
    let mut cmd = Command::new(psql_bin());
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(clients_dir().join("psql_session.sql"));
    proxy_env(&mut cmd, &proxy);
    let done = run("psql", cmd, &dir);
    done.assert_ok("lp-psql-done");

    for want in [
        "lp-copy-out\t1\tone",
        "lp-copy-out\t5\tfive, with a comma",
        "lp-copied=6",
        "lp-same=0",
        "lp-rows=6,210",
    ] {
        assert!(done.stdout.contains(want), "no {want:?}: {}", done.report());
    }
    for want in [
        "NOTICE:  lp-notice: 6 items",
        "NOTICE:  lp-notice: total qty 210",
        "NOTICE:  lp-caught: 23505",
    ] {
        assert!(done.stderr.contains(want), "no {want:?}: {}", done.report());
    }
    let csv = fs::read_to_string(dir.join("items_out.csv")).expect("\\copy wrote items_out.csv");
    assert_eq!(
        csv,
        "id,name,qty\n1,one,10\n2,two,20\n3,three,30\n4,four,40\n\
         5,\"five, with a comma\",50\n6,six,60\n"
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM psql_items_copy"), 6);
    assert_within_pool(&pg, 2);
}

// --------------------------------------------------------------------------- pgbench

fn pgbench_cmd(pgbench: &Path, proxy: &ProxyProcess, args: &[&str]) -> Command {
    let mut cmd = Command::new(pgbench);
    cmd.args(args);
    proxy_env(&mut cmd, proxy);
    cmd
}

/// pgbench -i -s 1 through the proxy (a fresh PostgreSQL and a proxy with two server
/// connections); None when pgbench is missing and may be skipped.
fn pgbench_setup() -> Option<(PathBuf, PgServer, ProxyProcess, PathBuf)> {
    let beside_psql = psql_bin().with_file_name("pgbench");
    let pgbench = installed("LP_PGBENCH", "pgbench", Some(beside_psql))?;
    let (pg, proxy) = start(POOL2);
    let dir = scratch("pgbench");
    let init = run(
        "pgbench -i",
        pgbench_cmd(&pgbench, &proxy, &["-i", "-s", "1", "-q"]),
        &dir,
    );
    assert!(init.status.success(), "{}", init.report());
    assert_eq!(count(&pg, "SELECT count(*) FROM pgbench_accounts"), 100_000);
    Some((pgbench, pg, proxy, dir))
}

/// One TPC-B-like run of 8 clients for 3 s on `threads` threads: no failed transaction,
/// and one pgbench_history row per transaction. `-n` (no vacuum, no truncation of the
/// history) lets the history accumulate over runs: `before` is its row count so far.
/// Returns the new row count.
fn pgbench_run(
    pgbench: &Path,
    pg: &PgServer,
    proxy: &ProxyProcess,
    dir: &Path,
    mode: &str,
    threads: &str,
    before: i64,
) -> i64 {
    let args = ["-n", "-M", mode, "-c", "8", "-j", threads, "-T", "3"];
    let done = run(
        &format!("pgbench -M {mode} -j {threads}"),
        pgbench_cmd(pgbench, proxy, &args),
        dir,
    );
    assert!(done.status.success(), "{}", done.report());
    assert!(
        done.stdout.contains("number of failed transactions: 0 "),
        "{}",
        done.report()
    );
    let processed: i64 = done
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count: {}", done.report()));
    assert!(processed > 0, "{}", done.report());
    let total = before + processed;
    assert_eq!(
        count(pg, "SELECT count(*) FROM pgbench_history"),
        total,
        "{}",
        done.report()
    );
    let tps = done
        .stdout
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or_default();
    eprintln!("pgbench -M {mode} -j {threads}: {processed} transactions, {tps}");
    total
}

/// The balances of accounts, tellers and branches agree with the history.
fn assert_pgbench_balanced(pg: &PgServer) {
    let balanced = "SELECT ((SELECT sum(abalance) FROM pgbench_accounts) = h.d \
        AND (SELECT sum(bbalance) FROM pgbench_branches) = h.d \
        AND (SELECT sum(tbalance) FROM pgbench_tellers) = h.d)::int \
        FROM (SELECT sum(delta) AS d FROM pgbench_history) h";
    assert_eq!(
        count(pg, balanced),
        1,
        "balances disagree with pgbench_history"
    );
}

/// pgbench -i -s 1 through the proxy, then the TPC-B-like script with 8 clients (one
/// thread each) for 3 s in each query mode (-M prepared: named statements P_0.. in every
/// client) over two server connections.
#[test]
fn pgbench_query_modes() {
    let Some((pgbench, pg, proxy, dir)) = pgbench_setup() else {
        return;
    };
    let mut total = 0;
    for mode in ["simple", "extended", "prepared"] {
        total = pgbench_run(&pgbench, &pg, &proxy, &dir, mode, "8", total);
    }
    assert_pgbench_balanced(&pg);
    assert_within_pool(&pg, 2);
}

/// pgbench -M prepared with 8 clients on 2 threads over 2 server connections.
///
/// pgbench prepares each statement with a synchronous PQprepare (Parse + Sync) the first
/// time a client runs it, blocking its whole thread while other clients of that thread may
/// hold both server connections in open transactions. The proxy answers such a Parse
/// itself once a server has accepted the same statement (relay::local); before it did,
/// nothing moved until acquire_timeout_ms failed the clients.
/// (pgbench_query_modes runs one thread per client.)
#[test]
fn pgbench_prepared_clients_sharing_threads() {
    let Some((pgbench, pg, proxy, dir)) = pgbench_setup() else {
        return;
    };
    pgbench_run(&pgbench, &pg, &proxy, &dir, "prepared", "2", 0);
    assert_pgbench_balanced(&pg);
}

// -------------------------------------------------------------------- tokio-postgres

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{e}: {} {} ({:?})",
            db.code().code(),
            db.message(),
            db.detail()
        ),
        None => format!("{e:?}"),
    }
}

async fn tp_connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// One tokio-postgres client: three statements prepared once and used 40 times each,
/// every other round inside a transaction.
async fn tp_worker(conn: String, c: i32, rounds: i32) -> Result<i32, String> {
    let mut client = tp_connect(&conn).await;
    let e = |what: &str, i: i32| {
        let what = what.to_owned();
        move |err: tokio_postgres::Error| format!("client {c} {what} #{i}: {}", describe(&err))
    };
    let sel = client
        .prepare("SELECT $1::int4 * 2, $2::text || '!'")
        .await
        .map_err(e("prepare select", 0))?;
    let ins = client
        .prepare("INSERT INTO tp_items (client, i, v) VALUES ($1, $2, $3)")
        .await
        .map_err(e("prepare insert", 0))?;
    let cnt = client
        .prepare_typed(
            "SELECT count(*) FROM tp_items WHERE client = $1",
            &[Type::INT4],
        )
        .await
        .map_err(e("prepare count", 0))?;
    for i in 0..rounds {
        let label = format!("c{c}-{i}");
        let (row, n) = if i % 2 == 0 {
            let tx = client.transaction().await.map_err(e("begin", i))?;
            let row = tx
                .query_one(&sel, &[&i, &label])
                .await
                .map_err(e("select", i))?;
            tx.execute(&ins, &[&c, &i, &label])
                .await
                .map_err(e("insert", i))?;
            let n: i64 = tx
                .query_one(&cnt, &[&c])
                .await
                .map_err(e("count", i))?
                .get(0);
            tx.commit().await.map_err(e("commit", i))?;
            (row, n)
        } else {
            let row = client
                .query_one(&sel, &[&i, &label])
                .await
                .map_err(e("select", i))?;
            client
                .execute(&ins, &[&c, &i, &label])
                .await
                .map_err(e("insert", i))?;
            let n: i64 = client
                .query_one(&cnt, &[&c])
                .await
                .map_err(e("count", i))?
                .get(0);
            (row, n)
        };
        let (doubled, text): (i32, String) = (row.get(0), row.get(1));
        if doubled != i * 2 || text != format!("{label}!") || n != i64::from(i) + 1 {
            return Err(format!(
                "client {c} round {i}: got ({doubled}, {text:?}, count {n})"
            ));
        }
        tokio::task::yield_now().await;
    }
    Ok(c)
}

/// tokio-postgres: six clients, each preparing its statements once (client.prepare) and
/// running them across 40 transactions and autocommit statements, over two server
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_prepared_statements() {
    let (pg, proxy) = start_logged(POOL2);
    let conn = proxy.conn_string(USER, PASSWORD);
    let setup = tp_connect(&conn).await;
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS tp_items; \
             CREATE TABLE tp_items (client int, i int, v text, PRIMARY KEY (client, i))",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", describe(&e)));
    let tasks: Vec<_> = (0..6)
        .map(|c| tokio::spawn(tp_worker(conn.clone(), c, 40)))
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await.expect("client task panicked") {
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "tokio-postgres clients failed:\n{}",
        errors.join("\n")
    );
    assert_eq!(count(&pg, "SELECT count(*) FROM tp_items"), 6 * 40);
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

/// tokio-postgres: a statement prepared once, then used after other clients churned the
/// pool: server connections are replaced every 3 transactions (server_max_uses) and keep
/// only 4 statements (prepared_statement_cache_size), while the others prepare and close
/// many statements of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_statement_survives_pool_churn() {
    let pool = format!("{POOL2}\nserver_max_uses: 3\nprepared_statement_cache_size: 4");
    let (pg, proxy) = start_logged(&pool);
    let conn = proxy.conn_string(USER, PASSWORD);
    let mut keeper = tp_connect(&conn).await;
    let stmt = keeper
        .prepare("SELECT $1::int8 + 1000, $2::text")
        .await
        .unwrap_or_else(|e| panic!("prepare: {}", describe(&e)));
    let row = keeper
        .query_one(&stmt, &[&1i64, &"first"])
        .await
        .unwrap_or_else(|e| panic!("first use: {}", describe(&e)));
    assert_eq!(row.get::<_, i64>(0), 1001);
    let logins_before = server_logins(&pg);

    // Churn: 4 clients x 15 rounds, each round a new statement text (query() prepares
    // and closes a named statement every time) and a transaction.
    let churners: Vec<_> = (0..4)
        .map(|c| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut client = tp_connect(&conn).await;
                for i in 0..15 {
                    let sql = format!("SELECT {c} * 100 + $1::int4 AS v_{c}_{i}");
                    let v: i32 = client
                        .query_one(sql.as_str(), &[&i])
                        .await
                        .map_err(|e| format!("churner {c} #{i}: {}", describe(&e)))?
                        .get(0);
                    if v != c * 100 + i {
                        return Err(format!("churner {c} #{i}: got {v}"));
                    }
                    let tx = client.transaction().await.map_err(|e| describe(&e))?;
                    tx.query_one("SELECT txid_current()", &[])
                        .await
                        .map_err(|e| format!("churner {c} tx #{i}: {}", describe(&e)))?;
                    tx.commit().await.map_err(|e| describe(&e))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for t in churners {
        t.await
            .expect("churner panicked")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let replaced = server_logins(&pg) - logins_before;
    assert!(
        replaced >= 4,
        "only {replaced} new server connections during the churn"
    );

    // The statement still works, alone and inside a transaction.
    for i in 0..10i64 {
        let row = keeper
            .query_one(&stmt, &[&i, &format!("after-{i}")])
            .await
            .unwrap_or_else(|e| panic!("use #{i} after the churn: {}", describe(&e)));
        assert_eq!(row.get::<_, i64>(0), 1000 + i);
        assert_eq!(row.get::<_, String>(1), format!("after-{i}"));
    }
    let tx = keeper.transaction().await.expect("begin");
    for i in 0..5i64 {
        let row = tx
            .query_one(&stmt, &[&i, &"in-tx"])
            .await
            .unwrap_or_else(|e| panic!("use #{i} in a transaction: {}", describe(&e)));
        assert_eq!(row.get::<_, i64>(0), 1000 + i);
    }
    tx.commit().await.expect("commit");
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

// ------------------------------------------------------------------------------ sqlx

/// sqlx: a PgPool with its defaults (statement cache of 100 per connection) shared by 8
/// tasks, each running the same bound queries 15 times, inside and outside transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_pool_with_statement_cache() {
    let (pg, proxy) = start_logged(POOL2);
    let url = format!(
        "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}",
        proxy.port
    );
    let pool = sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("sqlx connect: {e}"));
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS sqlx_items; \
         CREATE TABLE sqlx_items (task int, i int, label text, PRIMARY KEY (task, i))",
    )
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("setup: {e}"));

    const TASKS: i32 = 8;
    const ROUNDS: i32 = 15;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    let err = |what: &str| {
                        let what = what.to_owned();
                        move |e: sqlx::Error| format!("task {t} {what} #{i}: {e}")
                    };
                    let (sum, text): (i32, String) =
                        sqlx::query_as("SELECT $1::int4 + $2::int4, $3::text || '?'")
                            .bind(i)
                            .bind(t)
                            .bind(format!("t{t}"))
                            .fetch_one(&pool)
                            .await
                            .map_err(err("select"))?;
                    if sum != i + t || text != format!("t{t}?") {
                        return Err(format!("task {t} #{i}: got ({sum}, {text:?})"));
                    }
                    sqlx::query("INSERT INTO sqlx_items (task, i, label) VALUES ($1, $2, $3)")
                        .bind(t)
                        .bind(i)
                        .bind(format!("l{i}"))
                        .execute(&pool)
                        .await
                        .map_err(err("insert"))?;
                    let mut tx = pool.begin().await.map_err(err("begin"))?;
                    let n: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM sqlx_items WHERE task = $1")
                            .bind(t)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err("count"))?;
                    if n != i64::from(i) + 1 {
                        return Err(format!("task {t} #{i}: count {n}"));
                    }
                    let updated =
                        sqlx::query("UPDATE sqlx_items SET label = $1 WHERE task = $2 AND i = $3")
                            .bind(format!("u{i}"))
                            .bind(t)
                            .bind(i)
                            .execute(&mut *tx)
                            .await
                            .map_err(err("update"))?;
                    if updated.rows_affected() != 1 {
                        return Err(format!("task {t} #{i}: updated {updated:?}"));
                    }
                    tx.commit().await.map_err(err("commit"))?;
                }
                Ok::<_, String>(t)
            })
        })
        .collect();
    let mut errors = Vec::new();
    for task in tasks {
        if let Err(e) = task.await.expect("sqlx task panicked") {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "sqlx tasks failed:\n{}",
        errors.join("\n")
    );
    pool.close().await;
    assert_eq!(
        count(&pg, "SELECT count(*) FROM sqlx_items WHERE label LIKE 'u%'"),
        i64::from(TASKS * ROUNDS)
    );
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

// --------------------------------------------------------------------------- Python

fn python() -> Option<PathBuf> {
    installed("LP_PYTHON", "Python with psycopg 3 and asyncpg", None)
}

/// psycopg 3: four processes at once, each running the same parametrized queries 20
/// times with autocommit off and on (psycopg prepares them from the fifth execution),
/// a failed transaction, a transaction block and executemany.
#[test]
fn psycopg3_prepared_statements() {
    let Some(python) = python() else { return };
    let (pg, proxy) = start_logged(POOL2);
    let dir = scratch("psycopg");
    let script = clients_dir().join("psycopg_client.py");
    let clients = (0..4)
        .map(|w| {
            let mut cmd = Command::new(&python);
            cmd.arg(&script).arg(w.to_string());
            proxy_env(&mut cmd, &proxy);
            (format!("psycopg worker {w}"), cmd)
        })
        .collect();
    for done in run_all(clients, &dir) {
        done.assert_ok(": OK");
    }
    for w in 0..4 {
        assert_eq!(
            count(&pg, &format!("SELECT count(*) FROM psycopg_w{w}")),
            100
        );
    }
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

/// asyncpg: four connections at once with the statement cache on (fetch, fetchrow,
/// fetchval, executemany, transaction blocks, an enum type it introspects).
///
/// asyncpg sends the startup parameter `client_encoding='utf-8'` (quotes included); the
/// proxy, like PostgreSQL, ignores the punctuation of encoding names.
#[test]
fn asyncpg_connections() {
    let Some(python) = python() else { return };
    let (pg, proxy) = start_logged(POOL2);
    let dir = scratch("asyncpg");
    let mut cmd = Command::new(&python);
    cmd.arg(clients_dir().join("asyncpg_client.py"))
        .arg("connections");
    proxy_env(&mut cmd, &proxy);
    run("asyncpg connections", cmd, &dir).assert_ok("asyncpg connections: OK");
    for w in 0..4 {
        assert_eq!(
            count(&pg, &format!("SELECT count(*) FROM asyncpg_w{w}")),
            60
        );
    }
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

/// asyncpg: asyncpg.create_pool with its defaults (a connection is reset when released).
///
/// Every release sends the pool's reset query `SELECT pg_advisory_unlock_all(); CLOSE ALL;
/// UNLISTEN *; RESET ALL;`, which the statement guard lets through (RESET ALL fails closed)
/// and after which the proxy applies the tenant and the client's settings again.
#[test]
fn asyncpg_pool() {
    let Some(python) = python() else { return };
    let (pg, proxy) = start_logged(POOL2);
    let dir = scratch("asyncpg-pool");
    let mut cmd = Command::new(&python);
    cmd.arg(clients_dir().join("asyncpg_client.py")).arg("pool");
    proxy_env(&mut cmd, &proxy);
    run("asyncpg pool", cmd, &dir).assert_ok("asyncpg pool: OK");
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

// ---------------------------------------------------------------------- node-postgres

/// node-postgres: four clients at once running named statements ({ name, text, values })
/// 25 times each, in and out of transactions (some rolled back), a failing named
/// statement, and a pg.Pool of three.
#[test]
fn node_postgres_named_statements() {
    let Some(modules) = installed("LP_NODE_MODULES", "node-postgres (npm pg)", None) else {
        return;
    };
    let node = std::env::var_os("LP_NODE")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let (pg, proxy) = start_logged(POOL2);
    let dir = scratch("node-pg");
    let mut cmd = Command::new(node);
    cmd.arg(clients_dir().join("pg_client.js"))
        .env("NODE_PATH", &modules);
    proxy_env(&mut cmd, &proxy);
    run("node-postgres", cmd, &dir).assert_ok("node-postgres: OK");
    for w in 0..4 {
        assert_eq!(count(&pg, &format!("SELECT count(*) FROM nodepg_w{w}")), 25);
    }
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}

// ---------------------------------------------------------------------------- pgjdbc

/// pgjdbc: three connections at once; PreparedStatements executed 20 times with
/// autocommit on and 20 with it off (server-prepared from the fifth execution), a
/// rolled-back transaction and a batch insert of 50.
#[test]
fn jdbc_prepared_statements() {
    let Some(jar) = installed("LP_JDBC_JAR", "the PostgreSQL JDBC driver", None) else {
        return;
    };
    let Some(javac) = installed("LP_JAVAC", "javac", None) else {
        return;
    };
    let Some(java) = installed("LP_JAVA", "java", None) else {
        return;
    };
    let (pg, proxy) = start_logged(POOL2);
    let dir = scratch("jdbc");
    let classes = dir.join("classes");
    let mut compile = Command::new(javac);
    compile
        .arg("-d")
        .arg(&classes)
        .arg("-cp")
        .arg(&jar)
        .arg(clients_dir().join("JdbcClient.java"));
    let built = run("javac", compile, &dir);
    assert!(built.status.success(), "{}", built.report());

    let mut cmd = Command::new(java);
    let classpath = format!("{}:{}", jar.display(), classes.display());
    let port = proxy.port.to_string();
    cmd.args(["-XX:TieredStopAtLevel=1", "-cp", &classpath])
        .args([
            "JdbcClient",
            "127.0.0.1",
            &port,
            USER,
            PASSWORD,
            DATABASE,
            "3",
        ]);
    proxy_env(&mut cmd, &proxy);
    run("pgjdbc", cmd, &dir).assert_ok(": OK");
    for w in 0..3 {
        assert_eq!(count(&pg, &format!("SELECT count(*) FROM jdbc_w{w}")), 90);
    }
    assert_proxy_statements_used(&pg);
    assert_within_pool(&pg, 2);
}
