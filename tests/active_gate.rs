//! `pool.max_active` against a real PostgreSQL: at most that many statements run at once on
//! a pool's connections; a client idle in its transaction does not count; a transaction
//! that has started never waits at the gate again (so a lock holder cannot be queued
//! behind the statements waiting for its lock); statements past `active_stall_ms` stop
//! counting; a pool whose statements mostly run long opens its gate, and short statements
//! close it again; a client held at the gate past `acquire_timeout_ms` gets 53300 naming it.

use crate::common;

use common::client::{app, blocking, eventually, one, try_col, Conn, LIMIT};
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    (pg, proxy)
}

/// Statements of `app` that PostgreSQL reports running (`state = 'active'`), optionally
/// only those waiting for a lock.
fn running(pg: &PgServer, lock_waits_only: bool) -> i64 {
    let filter = if lock_waits_only {
        " AND wait_event_type = 'Lock'"
    } else {
        ""
    };
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'active'{filter}"
    );
    pg.psql("launch", &sql).trim().parse().unwrap_or(-1)
}

/// Runs `sql` on its own client, in the background.
async fn spawn_query(proxy: &ProxyProcess, sql: &'static str) -> JoinHandle<String> {
    let c: Conn = app(proxy).await;
    tokio::spawn(async move { one(&c.client, sql).await })
}

async fn finished<T>(task: JoinHandle<T>) -> T {
    timeout(LIMIT, task)
        .await
        .expect("hangs")
        .expect("panicked")
}

/// True if the task is still running after a second.
async fn still_waiting<T>(task: &mut JoinHandle<T>) -> bool {
    timeout(Duration::from_secs(1), task).await.is_err()
}

/// Eight clients sleep at once through a gate of 2 (with 10 connections allowed): the
/// server never runs more than 2 of their statements, and every client finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_active_caps_running_statements() {
    let (pg, proxy) =
        start("default_pool_size: 10\nmin_pool_size: 0\nmax_active: 2\nactive_stall_ms: 60000");
    let su = pg.superuser("launch").await;
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sql = "SELECT count(*) FROM pg_stat_activity \
                           WHERE usename = 'app' AND state = 'active'";
                let n: i64 = su.query_one(sql, &[]).await.unwrap().get(0);
                peak.fetch_max(n, Ordering::Relaxed);
                sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(spawn_query(&proxy, "SELECT pg_sleep(0.3)::text").await);
    }
    for task in clients {
        finished(task).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(
        peak.load(Ordering::Relaxed),
        2,
        "statements running at once"
    );
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("launch_proxy_pool_running_statements{pool=\"app\"} 0"),
        "{metrics}"
    );
}

/// With a gate of 1: a transaction idle after an UPDATE leaves room for another client; a
/// statement blocked on that UPDATE's row lock fills the gate and holds a new client back;
/// the lock holder's COMMIT still goes through at once, after which both others finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_holder_is_never_queued_behind_its_waiters() {
    let (pg, proxy) =
        start("default_pool_size: 5\nmin_pool_size: 0\nmax_active: 1\nactive_stall_ms: 60000");
    pg.psql(
        "launch",
        "CREATE TABLE gate_t (id int PRIMARY KEY, v int NOT NULL); \
         INSERT INTO gate_t VALUES (1, 0); GRANT SELECT, UPDATE ON gate_t TO app",
    );
    let holder = app(&proxy).await;
    one(&holder.client, "BEGIN").await;
    one(
        &holder.client,
        "UPDATE gate_t SET v = v + 1 WHERE id = 1 RETURNING v",
    )
    .await;

    // Idle in its transaction, the holder does not count.
    let other = app(&proxy).await;
    assert_eq!(one(&other.client, "SELECT 'passed'").await, "passed");

    // A statement waiting for the holder's lock is running: it fills the gate.
    let blocked_task = spawn_query(
        &proxy,
        "UPDATE gate_t SET v = v + 10 WHERE id = 1 RETURNING v::text",
    )
    .await;
    assert!(
        eventually(LIMIT, || running(&pg, true) == 1).await,
        "the second UPDATE never waited for the row lock"
    );
    let mut queued_task = spawn_query(&proxy, "SELECT 'queued'").await;
    assert!(
        still_waiting(&mut queued_task).await,
        "a new transaction started while max_active statements were running"
    );

    // The holder's next statement does not wait at the gate.
    one(&holder.client, "COMMIT").await;
    assert_eq!(finished(blocked_task).await, "11");
    assert_eq!(finished(queued_task).await, "queued");
    assert_eq!(pg.psql("launch", "SELECT v FROM gate_t").trim(), "11");
}

/// With a gate of 1 and a stall time of 100 ms, a long statement stops counting: a short
/// one runs while it is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_statements_stop_counting() {
    let (pg, proxy) =
        start("default_pool_size: 5\nmin_pool_size: 0\nmax_active: 1\nactive_stall_ms: 100");
    let long_task = spawn_query(&proxy, "SELECT pg_sleep(5)::text").await;
    assert!(eventually(LIMIT, || running(&pg, false) == 1).await);
    let short = app(&proxy).await;
    assert_eq!(one(&short.client, "SELECT 'short'").await, "short");
    assert!(
        !long_task.is_finished(),
        "the short statement waited for the long one"
    );
    finished(long_task).await;
}

/// Statements that mostly run past the stall time open the gate. Counted for their first
/// 50 ms, 30 clients sleeping 0.3 s four times each would start 20 statements a second
/// through a gate of 1, and each would wait 1.5 s for its turn, past the 1 s acquire
/// timeout. Open, they run side by side on the 30 warm connections. Short statements then
/// close the gate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_statements_open_the_gate_and_short_ones_close_it() {
    let (pg, proxy) = start(
        "default_pool_size: 30\nmin_pool_size: 30\nmax_active: 1\nactive_stall_ms: 50\n\
         acquire_timeout_ms: 1000\nreserve_pool_timeout_ms: 900",
    );
    let warm = || {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'";
        pg.psql("launch", sql).trim() == "30"
    };
    assert!(
        eventually(LIMIT, warm).await,
        "the warm minimum never opened"
    );
    let mut clients = Vec::new();
    for _ in 0..30 {
        let c: Conn = app(&proxy).await;
        clients.push(tokio::spawn(async move {
            for _ in 0..4 {
                try_col(&c.client, "SELECT pg_sleep(0.3)::text").await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    let mut peak = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        peak = peak.max(blocking(|| running(&pg, false)));
        sleep(Duration::from_millis(20)).await;
    }
    for task in clients {
        if let Err(e) = finished(task).await {
            panic!("a client of long statements failed: {e:?}");
        }
    }
    assert!(peak > 1, "the gate never opened: peak {peak}");
    let gate_open = "launch_proxy_pool_gate_open{pool=\"app\"}";
    let metrics = proxy.metrics();
    assert!(metrics.contains(&format!("{gate_open} 1")), "{metrics}");

    let short = app(&proxy).await;
    for _ in 0..40 {
        assert_eq!(one(&short.client, "SELECT 'short'").await, "short");
    }
    let metrics = proxy.metrics();
    assert!(metrics.contains(&format!("{gate_open} 0")), "{metrics}");
}

/// A client held at the gate until `acquire_timeout_ms` gets 53300 naming max_active; the
/// running statement is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_wait_ends_at_acquire_timeout() {
    let (pg, proxy) = start(
        "default_pool_size: 5\nmin_pool_size: 0\nmax_active: 1\nactive_stall_ms: 60000\n\
         acquire_timeout_ms: 500\nreserve_pool_timeout_ms: 400",
    );
    let long_task = spawn_query(&proxy, "SELECT pg_sleep(2)::text").await;
    assert!(eventually(LIMIT, || running(&pg, false) == 1).await);
    let late = app(&proxy).await;
    let err = try_col(&late.client, "SELECT 1")
        .await
        .expect_err("a client past the gate's wait got a server");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(
        db.detail().is_some_and(|d| d.contains("max_active")),
        "{db:?}"
    );
    assert_eq!(finished(long_task).await, "");
}

/// Session mode: a session between its transactions does not count, so a second session
/// starts while the first stays connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_does_not_count() {
    let (_pg, proxy) = start(
        "mode: session\ndefault_pool_size: 5\nmin_pool_size: 0\nmax_active: 1\n\
         active_stall_ms: 60000",
    );
    let first = app(&proxy).await;
    assert_eq!(one(&first.client, "SELECT 'first'").await, "first");
    let second = app(&proxy).await;
    assert_eq!(one(&second.client, "SELECT 'second'").await, "second");
    assert_eq!(one(&first.client, "SELECT 'again'").await, "again");
}

/// A place at the gate that frees (here: a transaction now waiting for its client) goes to
/// the queued client with a live connection, never with an idle one the server closed
/// meanwhile (pg_terminate_backend, a restart): the client's statement runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_hands_out_no_connection_the_server_closed() {
    let (pg, proxy) =
        start("default_pool_size: 5\nmin_pool_size: 3\nmax_active: 1\nactive_stall_ms: 60000");
    let su = pg.superuser("launch").await;
    su.batch_execute("SELECT pg_advisory_lock(7)")
        .await
        .unwrap();
    let idle = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'";
    assert!(eventually(LIMIT, || pg.psql("launch", idle).trim() == "3").await);
    // The holder's statement waits for the lock, counted at the gate, inside a transaction.
    let holder = app(&proxy).await;
    let locked = tokio::spawn(async move {
        holder.client.batch_execute("BEGIN").await.unwrap();
        holder
            .client
            .batch_execute("SELECT pg_advisory_xact_lock(7)")
            .await
            .unwrap();
        holder
    });
    assert!(eventually(LIMIT, || running(&pg, true) == 1).await);
    let mut queued = spawn_query(&proxy, "SELECT 42::text").await;
    assert!(still_waiting(&mut queued).await, "held at the gate");
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE usename = 'app' AND state = 'idle'";
    su.batch_execute(kill).await.unwrap();
    sleep(Duration::from_millis(100)).await;
    // The lock is granted: the holder's transaction now waits for its client.
    su.batch_execute("SELECT pg_advisory_unlock(7)")
        .await
        .unwrap();
    assert_eq!(finished(queued).await, "42");
    let holder = finished(locked).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
}
