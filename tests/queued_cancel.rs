//! A CancelRequest for a statement that still waits for a server connection (the pool is
//! busy, or `max_active` statements run) withdraws it: the client gets 57014 at once, as
//! for a running statement, PostgreSQL never sees the statement, and the session goes on.
//! A cancel never reaches another client's wait, nor a later wait of the same client.

use crate::common;

use common::client::{blocking, eventually, LIMIT};
use common::raw::*;
use common::{error_field as field, metric, proxy_config, PgServer, ProxyProcess};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// One server connection, no gate: a client holding it in an open transaction keeps every
/// other client queued until it commits.
const POOL_OF_ONE: &str = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                           max_active: 0\nacquire_timeout_ms: 30000";

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE withdrawn (v int); GRANT ALL ON withdrawn TO app",
    );
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), MD5_USERS);
    (pg, proxy)
}

/// Waits until `n` clients of the `app` pool are queued.
async fn queued(proxy: &ProxyProcess, n: f64) {
    let labels = [("pool", "app"), ("state", "waiting")];
    let reached = eventually(LIMIT, || {
        metric(&proxy.metrics(), "launch_proxy_client_connections", &labels) == n
    })
    .await;
    assert!(reached, "never {n} queued:\n{}", proxy.metrics());
}

fn cancelled_waits(proxy: &ProxyProcess) -> f64 {
    let m = proxy.metrics();
    metric(&m, "launch_proxy_waits_cancelled_total", &[("pool", "app")])
}

/// Logs in a raw client that opens a transaction on the only connection and keeps it.
fn holder(proxy: &ProxyProcess) -> Raw {
    let mut h = Raw::login(proxy.port, "app", "apppw");
    assert_eq!(h.sum(&q("BEGIN")), "C[BEGIN]Zt");
    h
}

fn rows_of(pg: &PgServer) -> String {
    pg.psql(
        "launch",
        "SELECT coalesce(string_agg(v::text, ',' ORDER BY v), '') FROM withdrawn",
    )
}

/// Simple protocol: the queued INSERT is answered 57014 + ReadyForQuery while the holder
/// still holds the connection, never runs, and the same client's next statements (and a
/// second queued statement pipelined behind the cancelled one) run as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_withdraws_a_queued_query() {
    let (pg, proxy) = start(POOL_OF_ONE);
    let mut h = holder(&proxy);
    let mut c = Raw::login(proxy.port, "app", "apppw");
    c.send(
        &[
            q("INSERT INTO withdrawn VALUES (1)"),
            q("INSERT INTO withdrawn VALUES (2)"),
        ]
        .concat(),
    );
    queued(&proxy, 1.0).await;
    let (pid, secret) = c.key;
    blocking(|| send_cancel(proxy.port, pid, secret));
    let first = blocking(|| c.until(b'Z'));
    assert_eq!(
        sum(&first),
        "E[57014]Zi",
        "the first statement is withdrawn"
    );
    assert_eq!(
        field(&first[0].1, b'M').as_deref(),
        Some("canceling statement due to user request")
    );
    assert_eq!(cancelled_waits(&proxy), 1.0);
    // The second statement queues in its turn and runs once the holder commits.
    queued(&proxy, 1.0).await;
    assert_eq!(h.sum(&q("COMMIT")), "C[COMMIT]Zi");
    assert_eq!(blocking(|| c.sum(&[])), "C[INSERT 0 1]Zi");
    assert_eq!(rows_of(&pg), "2", "the withdrawn INSERT ran");
    assert_eq!(c.col0("SELECT 'still here'"), ["still here"]);
}

/// Extended protocol: the 57014 comes before the client's Sync (a client that flushed
/// and waits for its result is answered), the rest of the batch up to Sync is skipped,
/// and the Sync gets ReadyForQuery; a named statement in the withdrawn batch was never
/// created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_withdraws_a_queued_extended_batch() {
    let (pg, proxy) = start(POOL_OF_ONE);
    let mut h = holder(&proxy);
    let mut c = Raw::login(proxy.port, "app", "apppw");
    let named = frame(b'P', &[z("s1"), z("SELECT 41 + 1"), vec![0, 0]].concat());
    let flush = frame(b'H', &[]);
    c.send(
        &[
            named,
            pbe("INSERT INTO withdrawn VALUES ($1)", &["3"]),
            flush,
        ]
        .concat(),
    );
    queued(&proxy, 1.0).await;
    blocking(|| send_cancel(proxy.port, c.key.0, c.key.1));
    assert_eq!(
        sum(&blocking(|| c.until(b'E'))),
        "E[57014]",
        "no error before the Sync"
    );
    assert_eq!(blocking(|| c.sum(&sync())), "Zi");
    assert_eq!(h.sum(&q("COMMIT")), "C[COMMIT]Zi");
    assert_eq!(rows_of(&pg), "", "the withdrawn INSERT ran");
    // The same client goes on; the statement named in the withdrawn batch does not exist.
    let bind = frame(b'B', &[z(""), z("s1"), vec![0, 0, 0, 0, 0, 0]].concat());
    let execute = frame(b'E', &[0, 0, 0, 0, 0]);
    let reply = blocking(|| c.sum(&[bind, execute, sync()].concat()));
    assert_eq!(
        reply, "E[26000]Zi",
        "the withdrawn Parse created its statement"
    );
    assert_eq!(c.col0("SELECT 'still here'"), ["still here"]);
}

/// A cancel reaches only the wait it was sent for: not another client's (its key differs),
/// not the same client's later wait (one sent while it was idle has nothing to cancel), and
/// a wrong secret withdraws nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_withdraws_only_its_own_current_wait() {
    let (pg, proxy) = start(POOL_OF_ONE);
    let mut h = holder(&proxy);
    let mut a = Raw::login(proxy.port, "app", "apppw");
    let mut b = Raw::login(proxy.port, "app", "apppw");
    // A idles; its cancel has nothing to withdraw, now or later.
    blocking(|| send_cancel(proxy.port, a.key.0, a.key.1));
    b.send(&q("INSERT INTO withdrawn VALUES (4)"));
    queued(&proxy, 1.0).await;
    blocking(|| send_cancel(proxy.port, a.key.0, a.key.1));
    blocking(|| send_cancel(proxy.port, b.key.0, b.key.1 ^ 0x5a5a));
    a.send(&q("INSERT INTO withdrawn VALUES (5)"));
    queued(&proxy, 2.0).await;
    assert_eq!(cancelled_waits(&proxy), 0.0, "a wait was withdrawn");
    assert_eq!(h.sum(&q("COMMIT")), "C[COMMIT]Zi");
    assert_eq!(blocking(|| b.sum(&[])), "C[INSERT 0 1]Zi");
    assert_eq!(blocking(|| a.sum(&[])), "C[INSERT 0 1]Zi");
    assert_eq!(rows_of(&pg), "4,5");
}

/// tokio-postgres's cancel_query for a statement held back by `max_active` (one statement
/// at a time, another client's pg_sleep running): the INSERT fails with 57014 long before
/// the sleep ends and never runs; the client's connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_cancel_withdraws_a_statement_held_at_the_gate() {
    let (pg, proxy) = start(
        "default_pool_size: 4\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 1\n\
         active_stall_ms: 60000\nacquire_timeout_ms: 30000",
    );
    let sleeper = proxy.connect("app", "apppw").await.unwrap();
    let sleeping = tokio::spawn(async move {
        sleeper
            .simple_query("SELECT pg_sleep(20)")
            .await
            .map(|_| ())
    });
    let c = proxy.connect("app", "apppw").await.unwrap();
    let su = pg.superuser("postgres").await;
    let running = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'";
    let started = tokio::time::timeout(LIMIT, async {
        while su.query_one(running, &[]).await.unwrap().get::<_, i64>(0) != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    assert!(started, "the sleep never started");
    let token = c.cancel_token();
    let c = std::sync::Arc::new(c);
    let insert = {
        let c = c.clone();
        tokio::spawn(async move { c.execute("INSERT INTO withdrawn VALUES (6)", &[]).await })
    };
    queued(&proxy, 1.0).await;
    token.cancel_query(NoTls).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), insert)
        .await
        .expect("the cancel did not end the wait")
        .unwrap();
    assert_eq!(r.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert!(!sleeping.is_finished(), "the gate's holder ended first");
    su.batch_execute(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
    )
    .await
    .unwrap();
    let _ = tokio::time::timeout(LIMIT, sleeping).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM withdrawn", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the withdrawn INSERT ran");
}

/// A lone Sync that waited for a connection had nothing to cancel: it gets ReadyForQuery
/// alone, as from PostgreSQL, and the client goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_lone_sync_gets_only_ready_for_query() {
    let (_pg, proxy) = start(POOL_OF_ONE);
    let mut h = holder(&proxy);
    let mut c = Raw::login(proxy.port, "app", "apppw");
    c.send(&sync());
    queued(&proxy, 1.0).await;
    blocking(|| send_cancel(proxy.port, c.key.0, c.key.1));
    assert_eq!(sum(&blocking(|| c.until(b'Z'))), "Zi");
    assert_eq!(h.sum(&q("COMMIT")), "C[COMMIT]Zi");
    assert_eq!(c.col0("SELECT 'still here'"), ["still here"]);
}
