//! Drivers in other languages, run as child processes on the scripts beside this file:
//! psycopg 3 and asyncpg (Python), node-postgres and pgjdbc (Java, compiled at test time).
//! Each comes from scripts/lib/clients.sh through `installed` (skippable with
//! LP_CLIENTS_OPTIONAL=1), must print its success line, and leaves data that the test
//! checks directly in PostgreSQL.

use super::{
    assert_proxy_statements_used, assert_within_pool, clients_dir, count, installed, proxy_env,
    run, run_all, scratch, start_logged, DATABASE, PASSWORD, POOL2, USER,
};
use std::path::PathBuf;
use std::process::Command;

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
