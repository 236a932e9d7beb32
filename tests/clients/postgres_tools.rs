//! psql and pgbench, the client programs that ship with PostgreSQL: a psql session script
//! (transactions, savepoints, `\copy`, notices, `\gset`) and pgbench's TPC-B-like load in
//! each query mode. Both are libpq programs run as child processes with the connection
//! variables of `proxy_env`, and both check the server's data afterwards with `count`.

use super::{
    assert_within_pool, clients_dir, count, installed, proxy_env, run, scratch, start, POOL2,
};
use crate::common::{psql_bin, PgServer, ProxyProcess};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

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
