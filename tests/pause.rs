//! SIGUSR1 pauses every pool and SIGUSR2 resumes them, against a real PostgreSQL: no
//! transaction starts while paused, running ones finish, server connections close, and
//! PostgreSQL can restart under connected clients, whose waiting statements then run.

use crate::common;

use common::client::{app, blocking, eventually, one, try_col, LIMIT};
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::time::Duration;
use tokio::time::timeout;
use tokio_postgres::error::SqlState;

fn paused(proxy: &ProxyProcess) -> bool {
    let line = "launch_proxy_pool_paused{pool=\"app\"} 1";
    proxy.metrics().lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarts_under_paused_clients() {
    let mut pg = PgServer::start();
    let pool = "min_pool_size: 2\nacquire_timeout_ms: 60000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let (idle, in_tx) = (app(&proxy).await, app(&proxy).await);
    assert_eq!(one(&idle.client, "SELECT 'idle'").await, "idle");
    try_col(&in_tx.client, "BEGIN").await.expect("BEGIN");
    assert_eq!(one(&in_tx.client, "SELECT 'in'").await, "in");

    blocking(|| proxy.signal("USR1"));
    assert!(eventually(LIMIT, || paused(&proxy)).await);
    let late = app(&proxy).await;
    let mut waiting = tokio::spawn(async move { one(&late.client, "SELECT 'resumed'").await });
    let started = timeout(Duration::from_secs(1), &mut waiting).await;
    assert!(started.is_err(), "a transaction started while paused");
    assert_eq!(one(&in_tx.client, "SELECT 'still in'").await, "still in");
    try_col(&in_tx.client, "COMMIT")
        .await
        .expect("the open transaction finishes");
    let closed = eventually(LIMIT, || pg.server_backend_count("app") == 0).await;
    assert!(closed, "server connections stayed open while paused");

    blocking(|| pg.restart());
    blocking(|| proxy.signal("USR2"));
    let resumed = timeout(LIMIT, waiting)
        .await
        .expect("still waiting after SIGUSR2");
    assert_eq!(resumed.unwrap(), "resumed");
    assert_eq!(one(&idle.client, "SELECT 'idle again'").await, "idle again");
    assert_eq!(one(&in_tx.client, "SELECT 'after'").await, "after");
    assert!(!blocking(|| paused(&proxy)));
}

/// A pool left paused past acquire_timeout_ms ends the wait with 57P03 naming the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_paused_pool_ends_at_the_acquire_timeout() {
    let pg = PgServer::start();
    let pool = "min_pool_size: 1\nacquire_timeout_ms: 1000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let c = app(&proxy).await;
    blocking(|| proxy.signal("USR1"));
    assert!(eventually(LIMIT, || paused(&proxy)).await);
    let err = try_col(&c.client, "SELECT 1")
        .await
        .expect_err("ran while paused");
    assert_eq!(err.code(), Some(&SqlState::CANNOT_CONNECT_NOW), "{err:?}");
    assert!(format!("{err:?}").contains("paused"), "{err:?}");
}
