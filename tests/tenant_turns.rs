//! Tenants take turns in a pool's queue, against a real PostgreSQL: a tenant whose clients
//! queued many statements does not put them all ahead of another tenant's one, whether
//! the clients wait at the `max_active` gate or for a busy pool's connection; clients of
//! one tenant keep their arrival order.

use crate::common;

use common::client::{connect, eventually, one, Conn, LIMIT};
use common::{app_clients_reach, proxy_config, PgServer, ProxyProcess};
use tokio::task::JoinHandle;

const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const BUSY: &str = "01JBXTENANTA000000000000AA";
const QUIET: &str = "01JBXTENANTB000000000000BB";

/// `busy1`…`busy6` of tenant BUSY and `quiet` of tenant QUIET, all on the `app` pool (the
/// `app` entry holds the server login's password).
fn users() -> String {
    let mut u = String::from("users:\n  app: { password: \"apppw\", role: write }\n");
    for i in 1..=6 {
        u += &format!(
            "  busy{i}: {{ password: \"pw\", role: write, tenant: \"{BUSY}\", server_user: app }}\n"
        );
    }
    u += &format!(
        "  quiet: {{ password: \"pw\", role: write, tenant: \"{QUIET}\", server_user: app }}\n"
    );
    u
}

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE SEQUENCE public.turn; GRANT USAGE ON SEQUENCE public.turn TO app;",
    );
    let config = proxy_config(&pg, pool)
        + &format!("tenant: {{ signing_key: \"{KEY}\", check_status: false }}\n");
    let proxy = ProxyProcess::start(&config, &users());
    (pg, proxy)
}

/// Runs a statement that takes its place in the order (`nextval`) as it starts, then
/// sleeps `secs`; returns the place.
fn run(c: Conn, secs: f64) -> JoinHandle<i64> {
    tokio::spawn(async move {
        let sql = format!("SELECT nextval('public.turn')::text || ':' || pg_sleep({secs})::text");
        let place = one(&c.client, &sql).await;
        place.split(':').next().unwrap().parse().unwrap()
    })
}

/// `busy1` holds the only place; `busy2`…`busy6` queue, then `quiet` queues last. Returns
/// the places of `busy2`…`busy6` and of `quiet`.
async fn queue_behind_a_busy_tenant(pg: &PgServer, proxy: &ProxyProcess) -> (Vec<i64>, i64) {
    let mut conns = Vec::new();
    for i in 1..=6 {
        conns.push(connect(proxy, &format!("busy{i}"), "pw").await.unwrap());
    }
    let quiet = connect(proxy, "quiet", "pw").await.unwrap();
    let mut conns = conns.into_iter();
    let first = run(conns.next().unwrap(), 1.5);
    let running = "SELECT count(*) FROM pg_stat_activity \
                   WHERE state = 'active' AND query LIKE '%pg_sleep(1.5)%' AND usename = 'app'";
    let started = eventually(LIMIT, || pg.psql("launch", running) == "1").await;
    assert!(started, "busy1's statement never ran");
    let mut busy = Vec::new();
    // One at a time, each seen queued before the next comes: the arrival order is known.
    for (n, c) in conns.enumerate() {
        busy.push(run(c, 0.05));
        let queued = (n + 1) as f64;
        let seen = app_clients_reach(proxy, "waiting", queued).await;
        assert!(seen, "busy{} never queued", n + 2);
    }
    let quiet = run(quiet, 0.05);
    assert!(app_clients_reach(proxy, "waiting", 6.0).await);
    assert_eq!(first.await.unwrap(), 1);
    let mut places = Vec::new();
    for b in busy {
        places.push(b.await.unwrap());
    }
    (places, quiet.await.unwrap())
}

/// Runs [`queue_behind_a_busy_tenant`] on a pool with `pool` settings: the quiet tenant's
/// statement runs right after the busy tenant's first queued one, not after all five
/// (arrival order would make it seventh).
async fn quiet_goes_third(pool: &str) {
    let (pg, proxy) = start(pool);
    let (busy, quiet) = queue_behind_a_busy_tenant(&pg, &proxy).await;
    assert_eq!(quiet, 3, "quiet ran at {quiet}; busy at {busy:?}");
    assert_eq!(
        busy,
        [2, 4, 5, 6, 7],
        "one tenant's clients keep their order"
    );
}

/// Clients held at the gate (`max_active: 1`, idle connections to spare).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenant_is_not_queued_behind_a_busy_one_at_the_gate() {
    quiet_goes_third(
        "default_pool_size: 4\nmin_pool_size: 0\nmax_active: 1\nactive_stall_ms: 60000",
    )
    .await;
}

/// Clients waiting for a connection of a busy pool (one connection, no gate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tenant_is_not_queued_behind_a_busy_one_for_a_connection() {
    quiet_goes_third("default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0")
        .await;
}
