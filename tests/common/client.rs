//! tokio-postgres helpers for tests that run SQL through the proxy with the simple
//! protocol (transaction pooling hands out no named statements) and must never hang.

use super::{PgServer, ProxyProcess};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Error, NoTls, SimpleQueryMessage};

/// Upper bound for anything that must not hang.
pub const LIMIT: Duration = Duration::from_secs(30);

/// The pid of a backend that `condition` (SQL on `pg_stat_activity`) picks, once there is
/// one; panics after LIMIT.
pub async fn backend_pid(pg: &PgServer, condition: &str) -> String {
    let sql =
        format!("SELECT coalesce(min(pid)::text, '') FROM pg_stat_activity WHERE {condition}");
    let mut pid = String::new();
    let found = eventually(LIMIT, || {
        pid = pg.psql("postgres", &sql);
        !pid.is_empty()
    })
    .await;
    assert!(found, "no backend where {condition}");
    pid
}

/// A client whose connection task can be awaited (e.g. for an unsolicited FATAL) or aborted
/// (closing the socket at once, without a Terminate message).
pub struct Conn {
    pub client: Client,
    pub task: JoinHandle<Result<(), Error>>,
}

pub async fn connect(proxy: &ProxyProcess, user: &str, password: &str) -> Result<Conn, Error> {
    let (client, connection) =
        tokio_postgres::connect(&proxy.conn_string(user, password), NoTls).await?;
    Ok(Conn {
        client,
        task: tokio::spawn(connection),
    })
}

/// The write role's user of `USERS_YAML`.
pub async fn app(proxy: &ProxyProcess) -> Conn {
    connect(proxy, "app", "apppw").await.expect("app logs in")
}

/// Runs `sql`; the first column of every row. Fails the test if it hangs.
pub async fn try_col(c: &Client, sql: &str) -> Result<Vec<String>, Error> {
    let msgs = tokio::time::timeout(LIMIT, c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql:?} hangs"))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .collect())
}

/// The first column of the first row of `sql`, which must succeed.
pub async fn one(c: &Client, sql: &str) -> String {
    let rows = try_col(c, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e:?}"));
    rows.into_iter().next().unwrap_or_default()
}

/// Runs blocking test code (psql, process signals) from a multi-threaded tokio test.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// Polls `f` every 100 ms until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if blocking(&mut f) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    blocking(f)
}

/// Runs psql (`-X -A -t`, stopping at the first error) against the proxy on `port`;
/// `conninfo` follows `dbname=launch` and may override it.
pub fn psql(port: u16, conninfo: &str, password: &str, sql: &str) -> std::process::Output {
    let conninfo = format!("host=127.0.0.1 port={port} dbname=launch {conninfo}");
    let mut cmd = std::process::Command::new(super::psql_bin());
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(&conninfo)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20");
    for v in ["PGSSLMODE", "PGUSER", "PGOPTIONS", "PGSERVICE"] {
        cmd.env_remove(v);
    }
    cmd.output().expect("run psql")
}
