//! The per-tenant caps against a real PostgreSQL.
//!
//! `pool.max_tenant_connections`: a tenant whose sessions hold their share of a pool's
//! server connections queues its next transaction behind its own, while other tenants'
//! sessions run on the connections left; the queued one starts when one of its tenant's
//! connections comes back (its transaction ends, or its backend dies), and ends with a
//! 53300 that names the cap if none does within `acquire_timeout_ms`.
//!
//! `pool.max_tenant_clients`: a tenant's login beyond its number of sessions gets 53300,
//! and other tenants and tenant-less logins still log in.
//!
//! Both give every place back however a session ends: a kill, a withdrawn wait, the idle
//! reaper, a client that vanishes mid-statement.

use crate::common;

use common::client::{connect, one, Conn, LIMIT};
use common::{app_clients_reach, metric, proxy_config, PgServer, ProxyProcess};
use std::time::Duration;
use tokio_postgres::error::SqlState;

const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const BUSY: &str = "01JBXTENANTA000000000000AA";
const QUIET: &str = "01JBXTENANTB000000000000BB";

/// `busy1`…`busy3` of tenant BUSY, `quiet` of tenant QUIET and the tenant-less `app`, all
/// on the `app` pool.
fn users() -> String {
    let mut u = String::from("users:\n  app: { password: \"apppw\", role: write }\n");
    for i in 1..=3 {
        u += &format!(
            "  busy{i}: {{ password: \"pw\", role: write, tenant: \"{BUSY}\", server_user: app }}\n"
        );
    }
    u += &format!(
        "  quiet: {{ password: \"pw\", role: write, tenant: \"{QUIET}\", server_user: app }}\n"
    );
    u
}

/// Four connections, no gate, at most two per tenant.
fn start(acquire_timeout_ms: u64) -> (PgServer, ProxyProcess) {
    start_with(&format!(
        "default_pool_size: 4\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
         max_tenant_connections: 2\nacquire_timeout_ms: {acquire_timeout_ms}"
    ))
}

fn start_with(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let config = proxy_config(&pg, pool)
        + &format!("tenant: {{ signing_key: \"{KEY}\", check_status: false }}\n");
    let proxy = ProxyProcess::start(&config, &users());
    (pg, proxy)
}

/// Opens a transaction that holds a server connection.
async fn hold(c: &Conn) {
    let open = async {
        c.client.batch_execute("BEGIN").await.unwrap();
        one(&c.client, "SELECT current_setting('app.tenant_id')").await
    };
    let tenant = tokio::time::timeout(LIMIT, open).await;
    assert_eq!(tenant.expect("no connection within the limit"), BUSY);
}

fn cap_waits(proxy: &ProxyProcess) -> f64 {
    metric(
        &proxy.metrics(),
        "launch_proxy_tenant_cap_waits_total",
        &[("pool", "app")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_cap_waits_for_its_own_connections_while_others_run() {
    let (pg, proxy) = start(30_000);
    let busy1 = connect(&proxy, "busy1", "pw").await.unwrap();
    let busy2 = connect(&proxy, "busy2", "pw").await.unwrap();
    let busy3 = connect(&proxy, "busy3", "pw").await.unwrap();
    let quiet = connect(&proxy, "quiet", "pw").await.unwrap();
    let app = connect(&proxy, "app", "apppw").await.unwrap();
    hold(&busy1).await;
    hold(&busy2).await;

    let third = tokio::spawn(async move {
        let tenant = one(&busy3.client, "SELECT current_setting('app.tenant_id')").await;
        (busy3, tenant)
    });
    assert!(
        app_clients_reach(&proxy, "waiting", 1.0).await,
        "busy3 never queued"
    );
    assert_eq!(cap_waits(&proxy), 1.0);
    // The pool has room for two more, and nothing opens one for a client its cap holds
    // back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pg.server_backend_count("app"), 2);

    // Another tenant, and a session without one, run meanwhile.
    let q = one(&quiet.client, "SELECT current_setting('app.tenant_id')").await;
    assert_eq!(q, QUIET);
    let a = one(&app.client, "SELECT 'no tenant'").await;
    assert_eq!(a, "no tenant");
    assert!(!third.is_finished(), "busy3 ran past its tenant's cap");
    assert_eq!(
        metric(
            &proxy.metrics(),
            "launch_proxy_client_connections",
            &[("pool", "app"), ("state", "waiting")]
        ),
        1.0
    );

    // busy1's transaction ends: its connection goes to busy3.
    busy1.client.batch_execute("COMMIT").await.unwrap();
    let (busy3, tenant) = tokio::time::timeout(LIMIT, third).await.unwrap().unwrap();
    assert_eq!(tenant, BUSY);

    // busy2's backend dies under its open transaction: the connection it held counts
    // against its tenant no more once the proxy drops it.
    let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE usename = 'app' AND state = 'idle in transaction'";
    assert_eq!(pg.psql("launch", terminate), "1");
    assert!(busy2.client.simple_query("SELECT 1").await.is_err());

    // So the tenant may hold two again, and a third waits again.
    let busy2 = connect(&proxy, "busy2", "pw").await.unwrap();
    hold(&busy1).await;
    hold(&busy3).await;
    let again =
        tokio::spawn(
            async move { one(&busy2.client, "SELECT current_setting('app.tenant_id')").await },
        );
    assert!(app_clients_reach(&proxy, "waiting", 1.0).await);
    assert_eq!(cap_waits(&proxy), 2.0);
    busy3.client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, again).await.unwrap().unwrap(),
        BUSY
    );
    busy1.client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_at_the_cap_ends_with_an_error_that_names_it() {
    let (_pg, proxy) = start(1_000);
    let busy1 = connect(&proxy, "busy1", "pw").await.unwrap();
    let busy2 = connect(&proxy, "busy2", "pw").await.unwrap();
    let busy3 = connect(&proxy, "busy3", "pw").await.unwrap();
    let quiet = connect(&proxy, "quiet", "pw").await.unwrap();
    hold(&busy1).await;
    hold(&busy2).await;

    let err = busy3.client.simple_query("SELECT 1").await.unwrap_err();
    let db = err.as_db_error().expect("a PostgreSQL error");
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS);
    assert!(
        db.message().contains("acquire_timeout_ms"),
        "{}",
        db.message()
    );
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("max_tenant_connections"), "{detail}");
    assert!(detail.contains('2'), "{detail}");

    // The tenant's open transactions, and the other tenant, are untouched.
    assert_eq!(
        one(&quiet.client, "SELECT current_setting('app.tenant_id')").await,
        QUIET
    );
    for c in [&busy1, &busy2] {
        assert_eq!(one(&c.client, "SELECT 'still open'").await, "still open");
        c.client.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_session_cap_cannot_log_in_and_others_still_can() {
    let (_pg, proxy) = start_with("min_pool_size: 0\nmax_tenant_clients: 2");
    let busy1 = connect(&proxy, "busy1", "pw").await.unwrap();
    let busy2 = connect(&proxy, "busy2", "pw").await.unwrap();
    for user in ["busy3", "busy1"] {
        let err = connect(&proxy, user, "pw")
            .await
            .err()
            .expect("over the cap");
        let db = err.as_db_error().expect("a PostgreSQL error");
        assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS, "{user}");
        assert_eq!(
            db.message(),
            format!("too many connections for tenant \"{BUSY}\"")
        );
        assert!(db
            .detail()
            .unwrap_or_default()
            .contains("max_tenant_clients"));
    }
    // Other tenants, and logins without a tenant, are not counted against it.
    let quiet = connect(&proxy, "quiet", "pw").await.unwrap();
    let app = connect(&proxy, "app", "apppw").await.unwrap();
    assert_eq!(
        one(&quiet.client, "SELECT current_setting('app.tenant_id')").await,
        QUIET
    );
    assert_eq!(one(&app.client, "SELECT 'no tenant'").await, "no tenant");
    assert_eq!(
        one(&busy2.client, "SELECT current_setting('app.tenant_id')").await,
        BUSY
    );

    // A session that ends gives its place back.
    drop(busy1);
    let mut again = None;
    for _ in 0..300 {
        if let Ok(c) = connect(&proxy, "busy3", "pw").await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let busy3 = again.expect("busy3 never logged in after busy1 left");
    assert_eq!(
        one(&busy3.client, "SELECT current_setting('app.tenant_id')").await,
        BUSY
    );
}

/// The console's rows of `show` whose column `key` is `value`: the column `want` of each.
async fn console_rows(
    console: &tokio_postgres::Client,
    show: &str,
    key: &str,
    value: &str,
    want: &str,
) -> Vec<String> {
    let rows = console.simple_query(show).await.expect(show);
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(key) == Some(value) => {
                r.get(want).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

/// Every way a session ends gives its tenant's places back, under both caps: a kill in an
/// open transaction, a queued statement withdrawn by its cancel key, the idle reaper, a
/// client that vanishes while its statement runs. Afterwards the tenant has its two
/// sessions and its one connection again, and the console lists none of its sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_session_ends_gives_its_tenants_places_back() {
    let pg = PgServer::start();
    let pool = "default_pool_size: 4\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
                max_tenant_connections: 1\nmax_tenant_clients: 2\nacquire_timeout_ms: 30000";
    let config = proxy_config(&pg, pool)
        + &format!("tenant: {{ signing_key: \"{KEY}\", check_status: false }}\n")
        + "client_idle_timeout_ms: 1000\nadmin: { users: [ops] }\n";
    let users = users() + "  ops: { password: \"opspw\", role: write, server_user: app }\n";
    let proxy = ProxyProcess::start(&config, &users);
    let (console, _console_task) = {
        let conn = format!(
            "host=127.0.0.1 port={} user=ops password=opspw dbname=pgbouncer",
            proxy.port
        );
        let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("console");
        (c, tokio::spawn(connection))
    };

    // A session in an open transaction holds the tenant's one connection; a second one's
    // statement queues behind it, and its cancel key withdraws it.
    let holder = connect(&proxy, "busy1", "pw").await.unwrap();
    hold(&holder).await;
    let queued = connect(&proxy, "busy2", "pw").await.unwrap();
    let before = cap_waits(&proxy);
    let cancel_once_queued = async {
        queued_at_the_cap(&proxy, before).await;
        let token = queued.client.cancel_token();
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    };
    let (withdrawn, ()) = tokio::join!(
        queued.client.simple_query("SELECT 'queued'"),
        cancel_once_queued
    );
    let withdrawn = withdrawn.expect_err("the queued statement failed");
    assert_eq!(withdrawn.code(), Some(&SqlState::QUERY_CANCELED));

    // The console ends the holder; the idle reaper ends the other.
    let pid = console_rows(&console, "SHOW CLIENTS", "user", "busy1", "pid").await;
    assert_eq!(pid.len(), 1);
    console
        .simple_query(&format!("KILL_CLIENT {}", pid[0]))
        .await
        .expect("KILL_CLIENT");
    let reaped = common::client::eventually(LIMIT, || {
        holder.client.is_closed() && queued.client.is_closed()
    })
    .await;
    assert!(reaped, "the killed or the idle session stayed open");

    // A client that vanishes while its statement runs on the tenant's connection.
    let Conn { client, task } = connect(&proxy, "busy3", "pw").await.unwrap();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let running = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' \
                   AND state = 'active' AND pid <> pg_backend_pid()";
    let su = pg.superuser("launch").await;
    let until = std::time::Instant::now() + LIMIT;
    while one(&su, running).await != "1" {
        assert!(std::time::Instant::now() < until, "the sleep never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    sleeping.abort();

    // Every place is back: no session of the tenant is listed, two log in, and one holds
    // the tenant's connection while the other's statement waits for it, then runs.
    let until = std::time::Instant::now() + LIMIT;
    while !console_rows(&console, "SHOW TENANTS", "tenant", BUSY, "clients")
        .await
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < until,
            "the tenant's sessions are still listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = connect(&proxy, "busy1", "pw")
        .await
        .expect("a session's place came back");
    let second = connect(&proxy, "busy2", "pw")
        .await
        .expect("both places came back");
    hold(&first).await;
    let before = cap_waits(&proxy);
    let commit_once_queued = async {
        queued_at_the_cap(&proxy, before).await;
        first.client.batch_execute("COMMIT").await.unwrap();
    };
    let next = async {
        let tenant = one(&second.client, "SELECT current_setting('app.tenant_id')");
        tokio::time::timeout(LIMIT, tenant).await
    };
    let (tenant, ()) = tokio::join!(next, commit_once_queued);
    assert_eq!(tenant.expect("the connection never came back"), BUSY);
}

/// Waits until a statement has queued at the tenant cap since `cap_waits` read `before`.
async fn queued_at_the_cap(proxy: &ProxyProcess, before: f64) {
    let until = std::time::Instant::now() + LIMIT;
    while cap_waits(proxy) <= before {
        assert!(
            std::time::Instant::now() < until,
            "no statement queued at the cap"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
