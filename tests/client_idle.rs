//! `client_idle_timeout_ms` against a real PostgreSQL: a session that sends nothing for
//! that long outside a transaction is ended with PostgreSQL's 57P05; one that keeps
//! working, or sits in an open transaction (the role's idle-in-transaction limit governs
//! that), is not; an ended session's place under `pool.max_tenant_clients` comes back.

use crate::common;

use common::client::{app, eventually, one, LIMIT};
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::time::Duration;
use tokio_postgres::NoTls;

const IDLE_MS: u64 = 1_000;

/// Logs in as `app` with the connection's end kept: its error, if the proxy sent one.
async fn watched_session(
    proxy: &ProxyProcess,
) -> (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Option<String>>,
) {
    let (client, connection) = tokio_postgres::connect(&proxy.conn_string("app", "apppw"), NoTls)
        .await
        .expect("app logs in");
    let end = tokio::spawn(async move {
        connection.await.err().and_then(|e| {
            e.as_db_error()
                .map(|d| format!("{} {}", d.code().code(), d.message()))
        })
    });
    (client, end)
}

/// Waits for the session watched by `end` to be ended by the idle timeout.
async fn ended_idle(end: tokio::task::JoinHandle<Option<String>>) {
    let ended = tokio::time::timeout(LIMIT, end)
        .await
        .expect("the idle session was never ended")
        .unwrap();
    assert_eq!(
        ended.as_deref(),
        Some("57P05 terminating connection due to idle-session timeout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_ended_and_a_working_one_is_not() {
    let pg = PgServer::start();
    let config =
        proxy_config(&pg, "min_pool_size: 0") + &format!("client_idle_timeout_ms: {IDLE_MS}\n");
    let proxy = ProxyProcess::start(&config, USERS_YAML);

    let (idle, idle_end) = watched_session(&proxy).await;
    assert_eq!(one(&idle, "SELECT 'first'").await, "first");
    let working = app(&proxy).await;
    let in_transaction = app(&proxy).await;
    in_transaction.client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&in_transaction.client, "SELECT 'open'").await, "open");

    // Three times the limit, the working session querying every fifth of it.
    for _ in 0..15 {
        assert_eq!(one(&working.client, "SELECT 'busy'").await, "busy");
        tokio::time::sleep(Duration::from_millis(IDLE_MS / 5)).await;
    }
    ended_idle(idle_end).await;
    assert!(idle.is_closed());
    assert_eq!(one(&working.client, "SELECT 'still'").await, "still");
    assert_eq!(
        one(&in_transaction.client, "SELECT 'still open'").await,
        "still open"
    );
    in_transaction.client.batch_execute("COMMIT").await.unwrap();
    // After the transaction the same rule applies to it.
    let closed = eventually(LIMIT, || in_transaction.client.is_closed()).await;
    assert!(closed, "the session idle after its transaction stayed open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_idle_session_gives_its_tenants_place_back() {
    const TENANT: &str = "01JBXTENANTA000000000000AA";
    const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
    let pg = PgServer::start();
    let config = proxy_config(&pg, "min_pool_size: 0\nmax_tenant_clients: 1")
        + &format!("client_idle_timeout_ms: {IDLE_MS}\n")
        + &format!("tenant: {{ signing_key: \"{KEY}\", check_status: false }}\n");
    let users = format!(
        "users:\n  app: {{ password: \"apppw\", role: write }}\n  \
         t: {{ password: \"pw\", role: write, tenant: \"{TENANT}\", server_user: app }}\n"
    );
    let proxy = ProxyProcess::start(&config, &users);
    let leaked = common::client::connect(&proxy, "t", "pw").await.unwrap();
    assert_eq!(
        one(&leaked.client, "SELECT current_setting('app.tenant_id')").await,
        TENANT
    );
    let refused = common::client::connect(&proxy, "t", "pw").await.err();
    assert!(
        refused.is_some(),
        "a second session of the tenant is over its cap"
    );

    let mut again = None;
    for _ in 0..((LIMIT.as_millis() / 100) as usize) {
        if let Ok(c) = common::client::connect(&proxy, "t", "pw").await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = again.expect("the leaked session never gave its place back");
    assert!(leaked.client.is_closed());
    assert_eq!(
        one(&again.client, "SELECT current_setting('app.tenant_id')").await,
        TENANT
    );
}

/// Session mode: a session idle between transactions holds its server connection, and is
/// ended all the same; the connection goes back to the pool (the next session gets the same
/// backend) rather than being closed. A session in an open transaction is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_an_idle_session_is_ended_and_its_connection_goes_back() {
    let pg = PgServer::start();
    let config = proxy_config(
        &pg,
        "mode: session\nmin_pool_size: 0\ndefault_pool_size: 2\nreserve_pool_size: 0",
    ) + &format!("client_idle_timeout_ms: {IDLE_MS}\n");
    let proxy = ProxyProcess::start(&config, USERS_YAML);

    let (idle, idle_end) = watched_session(&proxy).await;
    let backend = one(&idle, "SELECT pg_backend_pid()::text").await;
    let in_transaction = app(&proxy).await;
    in_transaction.client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(one(&in_transaction.client, "SELECT 'open'").await, "open");

    ended_idle(idle_end).await;
    assert_eq!(
        one(&in_transaction.client, "SELECT 'still open'").await,
        "still open"
    );
    let next = app(&proxy).await;
    assert_eq!(
        one(&next.client, "SELECT pg_backend_pid()::text").await,
        backend,
        "the ended session's connection was not given back"
    );
    in_transaction.client.batch_execute("COMMIT").await.unwrap();
    let closed = eventually(LIMIT, || in_transaction.client.is_closed()).await;
    assert!(closed, "the session idle after its transaction stayed open");
}
