//! A client's cancel that comes while the proxy runs its own statements on the client's
//! server connection, ahead of the client's (the tenant status lookup, the tenant switch
//! as a Query of its own), waits for them: it cannot fail them (a failed switch ends the
//! session with FATAL), and it is then sent to the client's statement.

use crate::common;

use common::client::{blocking, eventually, LIMIT};
use common::raw::*;
use common::{proxy_config, PgServer, ProxyProcess};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const T1: &str = "01JBXTENANT1000000000000T1";
const LOCK_WAITS: &str = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'";

/// PostgreSQL with the schema and tenant T1; the proxy with one server connection, the
/// tenant's status looked up before every transaction, and `extra` top-level lines.
fn start(extra: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::with_tenant(KEY, T1);
    let pool = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0";
    let config = proxy_config(&pg, pool)
        + extra
        + &format!(
            "tenant: {{ signing_key: \"{KEY}\", check_status: true, status_cache_ms: 0 }}\n"
        );
    let users = format!(
        "{MD5_USERS}  t1m: {{ password: \"t1mpw\", role: write, tenant: \"{T1}\", server_user: app, auth: md5 }}\n"
    );
    let proxy = ProxyProcess::start(&config, &users);
    (pg, proxy)
}

/// Sends `statement` while the tenants table is locked (the proxy's lookup waits), sends
/// a cancel, checks the lookup still waits, unlocks, and returns the statement's reply.
async fn cancel_during_the_lookup(
    pg: &PgServer,
    proxy: &ProxyProcess,
    c: &mut Raw,
    statement: &[u8],
) -> String {
    hold_a_cancel(pg, proxy, c, statement).await;
    sum(&blocking(|| c.until(b'Z')))
}

/// [`cancel_during_the_lookup`] up to the unlock: the cancel is held, then the lookup runs.
async fn hold_a_cancel(pg: &PgServer, proxy: &ProxyProcess, c: &mut Raw, statement: &[u8]) {
    let su = pg.superuser("launch").await;
    su.batch_execute("BEGIN; LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    c.send(statement);
    let waiting = eventually(LIMIT, || pg.psql("launch", LOCK_WAITS) == "1").await;
    assert!(waiting, "the lookup never waited for the lock");
    blocking(|| send_cancel(proxy.port, c.key.0, c.key.1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pg.psql("launch", LOCK_WAITS),
        "1",
        "the lookup was cancelled"
    );
    su.batch_execute("ROLLBACK").await.unwrap();
}

/// The held cancel reached the client's statement: PostgreSQL ignores one that lands
/// while it still reads the statement (the moment the hold ends), so it goes again until
/// the statement's reply begins.
fn cancelled(reply: &str) -> bool {
    reply.ends_with("E[57014]Zi")
}

/// The connection carries the tenant already (a simple Query before): the lookup alone
/// runs first, the held cancel then reaches the client's sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_the_tenant_lookup_reaches_the_clients_statement() {
    let (pg, proxy) = start("");
    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    assert_eq!(c.col0("SELECT 'warm'"), ["warm"]);
    let reply =
        cancel_during_the_lookup(&pg, &proxy, &mut c, &q("SELECT 'mine', pg_sleep(3)")).await;
    assert!(cancelled(&reply), "the statement got {reply}");
    assert_eq!(c.col0("SELECT 'after'"), ["after"]);
}

/// The connection does not carry the tenant and the statement cannot carry the switch
/// (extended protocol): lookup, then the switch as a Query of its own, which holds cancels
/// too. The cancel held during the lookup stays held through the switch (the switch's hold
/// replaced it, and it was never sent): neither the lookup nor the switch fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_held_by_the_lookup_survives_the_switch_that_follows() {
    let (pg, proxy) = start("");
    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    let batch = [pbe("SELECT pg_sleep(3)", &[]), sync()].concat();
    let reply = cancel_during_the_lookup(&pg, &proxy, &mut c, &batch).await;
    assert!(cancelled(&reply), "the statement got {reply}");
    assert_eq!(c.col0("SELECT 'after'"), ["after"]);
}

/// The hold ends while PostgreSQL waits for more of the client's messages (a Parse and
/// Bind came, their Execute not yet): the cancel sent then is ignored, as any cancel of a
/// backend between statements. It goes again until a reply begins, and the sleep the
/// Execute starts is cancelled (before, it ran its 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_cancel_goes_again_until_the_statement_runs() {
    let (pg, proxy) = start("");
    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    let batch = pbe("SELECT pg_sleep(3)", &[]);
    let (parse_bind, execute) = batch.split_at(batch.len() - 10);
    hold_a_cancel(&pg, &proxy, &mut c, parse_bind).await;
    // The lookup and the switch ran, the held cancel went, and the backend waits for
    // the Execute.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.send(&[execute, &sync()].concat());
    let reply = sum(&blocking(|| c.until(b'Z')));
    assert!(cancelled(&reply), "the statement got {reply}");
    assert_eq!(c.col0("SELECT 'after'"), ["after"]);
}

/// Two runtime threads, a lookup of 20 ms and a stream of cancels: a cancel that checked
/// the hold just before the relay set it is waited for before the lookup is sent, and a
/// lookup that a cancel of the previous statement still reaches runs again, so no session
/// ends with FATAL (before: 3 in about 90 transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_the_hold_never_end_the_session() {
    let (pg, proxy) = start("workers: 2\n");
    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    pg.psql(
        "launch",
        "CREATE OR REPLACE FUNCTION launch.tenant_status(id text) RETURNS text \
         LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS \
         $$ SELECT pg_sleep(0.02); SELECT t.status::text FROM public.tenants t WHERE t.id = $1 $$",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let key = Arc::new(Mutex::new(c.key));
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let (stop, key, port) = (stop.clone(), key.clone(), proxy.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (pid, secret) = *key.lock().unwrap();
                    send_cancel(port, pid, secret);
                }
            })
        })
        .collect();
    let mut ended = Vec::new();
    let (mut done, until) = (0, Instant::now() + Duration::from_secs(6));
    while Instant::now() < until && ended.len() < 3 {
        c.send(&q("SELECT 1"));
        let mut got = Vec::new();
        let closed = loop {
            match c.recv() {
                Some((b'Z', _)) => break false,
                Some(m) => got.push(m),
                None => break true,
            }
        };
        done += 1;
        if closed {
            ended.push(sum(&got));
            c = Raw::login(proxy.port, "t1m", "t1mpw");
            *key.lock().unwrap() = c.key;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.join().unwrap();
    }
    assert!(done > 20, "only {done} transactions");
    assert!(ended.is_empty(), "sessions ended by a cancel: {ended:?}");
}
