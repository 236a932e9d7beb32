//! `pool.pipeline_queued` against a real PostgreSQL: a queued client's plain Query goes
//! down the busy connection behind the statement running there, and still gets its own
//! reply under its own tenant, whatever becomes of the statement ahead of it (its client
//! vanishing, its cancel) or of itself (its own cancel, its client vanishing). Under load
//! with cancels flying, a client that never cancels never sees an error and never runs a
//! statement twice, and every reply carries its own tenant.
//!
//! One server connection and no gate, so that the order is known: a holder keeps the
//! connection in an open transaction while `ta` and then `tb` queue; its COMMIT gives the
//! connection to `ta`, whose relay sends `tb`'s message right behind its own.

use crate::common;

use common::client::{connect, eventually, try_col, Conn, LIMIT};
use common::{app_clients_reach, metric, proxy_config, PgServer, ProxyProcess};
use std::time::Duration;
use tokio_postgres::error::SqlState;

const KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn tenant(i: usize) -> String {
    format!("01JBXQQQQ{i:017}")
}

/// `t0`…`t{n-1}`, each of its own tenant, and the tenant-less `app`, all on pool `app`.
fn users(n: usize) -> String {
    let mut u = String::from("users:\n  app: { password: \"apppw\", role: write }\n");
    for i in 0..n {
        let t = tenant(i);
        u += &format!(
            "  t{i}: {{ password: \"pw\", role: write, tenant: \"{t}\", server_user: app }}\n"
        );
    }
    u
}

fn start(pool_size: usize, tenants: usize) -> (PgServer, ProxyProcess) {
    start_with(pool_size, tenants, true)
}

fn start_with(pool_size: usize, tenants: usize, pipeline: bool) -> (PgServer, ProxyProcess) {
    start_on(PgServer::start(), pool_size, tenants, pipeline, false)
}

/// [`start_with`] on `pg`; `check_status`: the proxy looks each tenant's status up (`pg`
/// must then have the schema and the tenants).
fn start_on(
    pg: PgServer,
    pool_size: usize,
    tenants: usize,
    pipeline: bool,
    check_status: bool,
) -> (PgServer, ProxyProcess) {
    pg.psql(
        "launch",
        "CREATE TABLE seen (id bigserial, tenant text DEFAULT current_setting('app.tenant_id'), \
         who text); GRANT ALL ON seen, seen_id_seq TO app;",
    );
    let pool = format!(
        "default_pool_size: {pool_size}\nmin_pool_size: 0\nreserve_pool_size: 0\n\
         max_active: 0\npipeline_queued: {pipeline}\nacquire_timeout_ms: 20000"
    );
    let config = proxy_config(&pg, &pool)
        + &format!("tenant: {{ signing_key: \"{KEY}\", check_status: {check_status} }}\n")
        + "admin: { users: [app] }\n";
    let proxy = ProxyProcess::start(&config, &users(tenants));
    (pg, proxy)
}

/// Inserts a row for `who` after sleeping `secs`; the tenant the row got.
fn insert(who: &str, secs: f64) -> String {
    format!("INSERT INTO seen (who) SELECT '{who}' FROM pg_sleep({secs}) RETURNING tenant")
}

fn pipelined(proxy: &ProxyProcess) -> f64 {
    metric(
        &proxy.metrics(),
        "launch_proxy_pipelined_total",
        &[("pool", "app")],
    )
}

/// `app` holds the only connection in an open transaction while `ta`'s `a_sql` and then
/// `tb`'s `b_sql` queue; the handles of their statements and the holder, which has not
/// committed yet.
async fn queue_two(
    proxy: &ProxyProcess,
    a: (Conn, String),
    b: (Conn, String),
) -> (Conn, RunningStatement, RunningStatement) {
    let holder = connect(proxy, "app", "apppw").await.unwrap();
    queue_two_behind(proxy, holder, a, b).await
}

/// [`queue_two`] behind `holder`.
async fn queue_two_behind(
    proxy: &ProxyProcess,
    holder: Conn,
    (ta, a_sql): (Conn, String),
    (tb, b_sql): (Conn, String),
) -> (Conn, RunningStatement, RunningStatement) {
    holder
        .client
        .batch_execute("BEGIN; SELECT 1")
        .await
        .unwrap();
    let a = run(ta, a_sql);
    assert!(
        app_clients_reach(proxy, "waiting", 1.0).await,
        "ta never queued"
    );
    let b = run(tb, b_sql);
    assert!(
        app_clients_reach(proxy, "waiting", 2.0).await,
        "tb never queued"
    );
    (holder, a, b)
}

type RunningStatement = tokio::task::JoinHandle<(Conn, Result<Vec<String>, tokio_postgres::Error>)>;

fn run(c: Conn, sql: String) -> RunningStatement {
    tokio::spawn(async move {
        let r = try_col(&c.client, &sql).await;
        (c, r)
    })
}

async fn finish(s: RunningStatement) -> (Conn, Result<Vec<String>, tokio_postgres::Error>) {
    tokio::time::timeout(LIMIT, s)
        .await
        .expect("a statement hangs")
        .unwrap()
}

fn rows_of(pg: &PgServer, who: &str) -> String {
    pg.psql(
        "launch",
        &format!(
            "SELECT count(*) || ' ' || coalesce(min(tenant), '') FROM seen WHERE who = '{who}'"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_statement_runs_behind_the_running_one_under_its_own_tenant() {
    let (pg, proxy) = start(1, 2);
    let ta = connect(&proxy, "t0", "pw").await.unwrap();
    let tb = connect(&proxy, "t1", "pw").await.unwrap();
    let waits = || {
        metric(
            &proxy.metrics(),
            "launch_proxy_pool_wait_seconds_count",
            &[("pool", "app")],
        )
    };
    let waits_before = waits();
    let (holder, a, b) = queue_two(&proxy, (ta, insert("a", 0.3)), (tb, insert("b", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (ta, ra) = finish(a).await;
    let (tb, rb) = finish(b).await;
    assert_eq!(ra.unwrap(), [tenant(0)]);
    assert_eq!(rb.unwrap(), [tenant(1)]);
    assert_eq!(
        pipelined(&proxy),
        1.0,
        "tb's message did not go behind ta's"
    );
    // One checkout-wait sample per checkout (the holder's, ta's and tb's), the pipelined
    // one included.
    assert_eq!(waits() - waits_before, 3.0, "checkout waits recorded");
    assert_eq!(rows_of(&pg, "a"), format!("1 {}", tenant(0)));
    assert_eq!(rows_of(&pg, "b"), format!("1 {}", tenant(1)));
    // The connection is clean for whoever comes next, either tenant.
    for (c, i) in [(&tb, 1), (&ta, 0), (&holder, 9)] {
        let sql = "SELECT coalesce(current_setting('app.tenant_id', true), '')";
        let want = if i == 9 { String::new() } else { tenant(i) };
        assert_eq!(try_col(&c.client, sql).await.unwrap(), [want]);
    }
}

/// Sessions without a tenant pipeline too, their Query sent as it is, on a connection that
/// carries no tenant; a tenant's session queued behind them gets the whole switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_without_a_tenant_pipeline_their_queries_as_they_are() {
    let (pg, proxy) = start(1, 1);
    let pa = connect(&proxy, "app", "apppw").await.unwrap();
    let pb = connect(&proxy, "app", "apppw").await.unwrap();
    let (holder, a, b) = queue_two(&proxy, (pa, insert("pa", 0.3)), (pb, insert("pb", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (pa, ra) = finish(a).await;
    let (pb, rb) = finish(b).await;
    assert_eq!(ra.unwrap(), [""]);
    assert_eq!(rb.unwrap(), [""]);
    assert_eq!(pipelined(&proxy), 1.0, "pb's Query did not go behind pa's");
    assert_eq!(rows_of(&pg, "pb"), "1 ");

    // A tenant's session behind a tenant-less one: its message carries the switch.
    let t0 = connect(&proxy, "t0", "pw").await.unwrap();
    let (holder, a, b) = queue_two(&proxy, (pa, insert("pa2", 0.3)), (t0, insert("t", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(finish(a).await.1.unwrap(), [""]);
    assert_eq!(finish(b).await.1.unwrap(), [tenant(0)]);
    assert_eq!(pipelined(&proxy), 2.0);
    // And the tenant's setting does not follow the connection to the next tenant-less one.
    let sql = "SELECT coalesce(current_setting('app.tenant_id', true), '')";
    assert_eq!(try_col(&pb.client, sql).await.unwrap(), [""]);

    // Sessions with a parameter of their own pipeline behind one with the same value, as
    // they are; one with another value does not, and each keeps its own.
    let named = |digits: &str| {
        let conn = format!(
            "{} options='-c extra_float_digits={digits}'",
            proxy.conn_string("app", "apppw")
        );
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            Conn {
                client,
                task: tokio::spawn(connection),
            }
        }
    };
    let (x1, x2) = (named("2").await, named("2").await);
    let holder = named("2").await;
    let (holder, a, b) = queue_two_behind(
        &proxy,
        holder,
        (x1, insert("x1", 0.3)),
        (x2, insert("x2", 0.0)),
    )
    .await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (x1, _) = finish(a).await;
    let (x2, _) = finish(b).await;
    assert_eq!(
        pipelined(&proxy),
        3.0,
        "the same parameters did not pipeline"
    );
    let (y, _) = finish(run(named("1").await, String::new())).await;
    let holder = named("2").await;
    let (holder, a, b) = queue_two_behind(
        &proxy,
        holder,
        (x1, insert("x3", 0.3)),
        (y, insert("y", 0.0)),
    )
    .await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (x1, _) = finish(a).await;
    let (y, _) = finish(b).await;
    assert_eq!(pipelined(&proxy), 3.0, "other parameters went as they were");
    for (c, want) in [(&x1, "2"), (&x2, "2"), (&y, "1")] {
        let got = try_col(&c.client, "SHOW extra_float_digits").await.unwrap();
        assert_eq!(got, [want]);
    }
    assert_eq!(rows_of(&pg, "y"), "1 ");
}

/// With tenant statuses looked up: a session without a tenant has no status to be fresh
/// and pipelines (before, its message was never prepared: pgbench never pipelined), and a
/// tenant's session pipelines once its status is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_statuses_checked_sessions_pipeline_once_fresh() {
    let (pg, proxy) = start_on(PgServer::with_tenant(KEY, &tenant(0)), 1, 1, true, true);
    let pa = connect(&proxy, "app", "apppw").await.unwrap();
    let pb = connect(&proxy, "app", "apppw").await.unwrap();
    let (holder, a, b) = queue_two(&proxy, (pa, insert("pa", 0.3)), (pb, insert("pb", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (pa, ra) = finish(a).await;
    assert_eq!(ra.unwrap(), [""]);
    assert_eq!(finish(b).await.1.unwrap(), [""]);
    assert_eq!(pipelined(&proxy), 1.0, "pb's Query did not go behind pa's");

    let t0 = connect(&proxy, "t0", "pw").await.unwrap();
    assert_eq!(
        try_col(&t0.client, "SELECT 'fresh'").await.unwrap(),
        ["fresh"]
    );
    let (holder, a, b) = queue_two(&proxy, (pa, insert("pa2", 0.3)), (t0, insert("t", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(finish(a).await.1.unwrap(), [""]);
    assert_eq!(finish(b).await.1.unwrap(), [tenant(0)]);
    assert_eq!(
        pipelined(&proxy),
        2.0,
        "the tenant's Query did not go behind pa's"
    );
    assert_eq!(rows_of(&pg, "t"), format!("1 {}", tenant(0)));
}

/// Behind a transaction of its own tenant that needed no switch, a client's Query goes as
/// it is: no switch runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_its_own_tenant_a_query_goes_without_the_switch() {
    let (pg, proxy) = start(1, 1);
    let holder = connect(&proxy, "t0", "pw").await.unwrap();
    let a = connect(&proxy, "t0", "pw").await.unwrap();
    let b = connect(&proxy, "t0", "pw").await.unwrap();
    let switches = || {
        metric(
            &proxy.metrics(),
            "launch_proxy_tenant_switches_total",
            &[("pool", "app")],
        )
    };
    // The connection carries t0 from here on.
    assert_eq!(try_col(&holder.client, "SELECT 1").await.unwrap(), ["1"]);
    let before = switches();
    let (holder, a, b) =
        queue_two_behind(&proxy, holder, (a, insert("a", 0.3)), (b, insert("b", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(finish(a).await.1.unwrap(), [tenant(0)]);
    assert_eq!(finish(b).await.1.unwrap(), [tenant(0)]);
    assert_eq!(pipelined(&proxy), 1.0);
    assert_eq!(switches(), before, "a switch ran for the same tenant");
    assert_eq!(rows_of(&pg, "b"), format!("1 {}", tenant(0)));
}

/// The client ahead vanishes while its statement runs: its reply runs out unread, and the
/// successor gets its own reply; the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ahead_vanishing_leaves_the_successor_its_reply() {
    let (pg, proxy) = start(1, 2);
    let ta = connect(&proxy, "t0", "pw").await.unwrap();
    let tb = connect(&proxy, "t1", "pw").await.unwrap();
    let a_task = ta.task.abort_handle();
    let (holder, a, b) = queue_two(&proxy, (ta, insert("a", 0.6)), (tb, insert("b", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(eventually(LIMIT, || pipelined(&proxy) == 1.0).await);
    // ta's socket closes without a Terminate, mid-statement.
    a_task.abort();
    let (tb, rb) = finish(b).await;
    assert_eq!(rb.unwrap(), [tenant(1)]);
    assert!(finish(a).await.1.is_err(), "ta's client is gone");
    assert_eq!(rows_of(&pg, "b"), format!("1 {}", tenant(1)));
    let sql = insert("b2", 0.0);
    assert_eq!(try_col(&tb.client, &sql).await.unwrap(), [tenant(1)]);
    assert_eq!(
        try_col(&holder.client, "SELECT 'still one connection'")
            .await
            .unwrap(),
        ["still one connection"]
    );
    assert_eq!(
        pg.server_backend_count("app"),
        1,
        "the connection was not kept"
    );
}

/// The statement ahead is cancelled by its client: it gets 57014, the successor its row.
/// The successor cancels its own statement while it waits behind: it gets 57014 and
/// nothing of it stays; the statement ahead is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_reach_the_statement_of_the_client_that_sent_them() {
    let (pg, proxy) = start(1, 2);
    // The one ahead cancels.
    let ta = connect(&proxy, "t0", "pw").await.unwrap();
    let tb = connect(&proxy, "t1", "pw").await.unwrap();
    let cancel_a = ta.client.cancel_token();
    let (holder, a, b) = queue_two(&proxy, (ta, insert("a1", 30.0)), (tb, insert("b1", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(eventually(LIMIT, || pipelined(&proxy) == 1.0).await);
    cancel_a.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (ta, ra) = finish(a).await;
    assert_eq!(ra.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    let (tb, rb) = finish(b).await;
    assert_eq!(rb.unwrap(), [tenant(1)]);
    assert_eq!(rows_of(&pg, "a1"), "0 ");
    assert_eq!(rows_of(&pg, "b1"), format!("1 {}", tenant(1)));

    // The one behind cancels while it waits behind.
    let cancel_b = tb.client.cancel_token();
    let (holder, a, b) = queue_two(&proxy, (ta, insert("a2", 0.5)), (tb, insert("b2", 30.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(eventually(LIMIT, || pipelined(&proxy) == 2.0).await);
    // Once while it waits behind; again, as a client may, until it is answered (a cancel
    // that reaches PostgreSQL before the statement starts is ignored).
    while !b.is_finished() {
        cancel_b.cancel_query(tokio_postgres::NoTls).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, rb) = finish(b).await;
    assert_eq!(rb.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    let (_, ra) = finish(a).await;
    assert_eq!(ra.unwrap(), [tenant(0)]);
    assert_eq!(rows_of(&pg, "a2"), format!("1 {}", tenant(0)));
    assert_eq!(rows_of(&pg, "b2"), "0 ");
    assert_eq!(
        try_col(&holder.client, "SELECT 'serves on'").await.unwrap(),
        ["serves on"]
    );
}

/// The console kills the session ahead while its statement runs: the statement is
/// cancelled, that client gets 57P01, and the successor its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_of_the_session_ahead_leaves_the_successor_its_reply() {
    let (pg, proxy) = start(1, 2);
    let ta = connect(&proxy, "t0", "pw").await.unwrap();
    let tb = connect(&proxy, "t1", "pw").await.unwrap();
    let (holder, a, b) = queue_two(&proxy, (ta, insert("a", 30.0)), (tb, insert("b", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(eventually(LIMIT, || pipelined(&proxy) == 1.0).await);
    let console = format!(
        "host=127.0.0.1 port={} user=app password=apppw dbname=pgbouncer",
        proxy.port
    );
    let (ops, connection) = tokio_postgres::connect(&console, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let clients = ops.simple_query("SHOW CLIENTS").await.unwrap();
    let pid = clients
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("user") == Some("t0") => {
                r.get("pid").map(str::to_owned)
            }
            _ => None,
        })
        .expect("t0 in SHOW CLIENTS");
    ops.simple_query(&format!("KILL_CLIENT {pid}"))
        .await
        .unwrap();
    let (_, ra) = finish(a).await;
    let e = ra.unwrap_err();
    assert!(
        e.code() == Some(&SqlState::ADMIN_SHUTDOWN) || e.is_closed(),
        "the killed session: {e:?}"
    );
    let (tb, rb) = finish(b).await;
    assert_eq!(rb.unwrap(), [tenant(1)]);
    assert_eq!(
        rows_of(&pg, "a"),
        "0 ",
        "the killed statement was not cancelled"
    );
    let sql = insert("b2", 0.0);
    assert_eq!(try_col(&tb.client, &sql).await.unwrap(), [tenant(1)]);
}

/// The successor's client vanishes while its message waits behind: the statement ahead
/// finishes for its client, and the connection, which holds an answer nobody will read,
/// is closed rather than handed to anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_that_vanishes_takes_the_connection_with_it() {
    let (pg, proxy) = start(1, 2);
    let ta = connect(&proxy, "t0", "pw").await.unwrap();
    let tb = connect(&proxy, "t1", "pw").await.unwrap();
    let b_task = tb.task.abort_handle();
    let (holder, a, _b) = queue_two(&proxy, (ta, insert("a", 0.5)), (tb, insert("b", 0.0))).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(eventually(LIMIT, || pipelined(&proxy) == 1.0).await);
    b_task.abort();
    let (ta, ra) = finish(a).await;
    assert_eq!(ra.unwrap(), [tenant(0)]);
    // Whatever the old connection held, the next statements see only their own replies.
    for i in 0..3 {
        let sql = format!("SELECT 'next {i}'");
        assert_eq!(
            try_col(&ta.client, &sql).await.unwrap(),
            [format!("next {i}")]
        );
    }
    let sql = "SELECT coalesce(current_setting('app.tenant_id', true), '')";
    assert_eq!(try_col(&holder.client, sql).await.unwrap(), [""]);
    drop(pg);
}

/// Forty clients of twenty tenants on two connections for three seconds, pipelining on
/// and then off. Half of them cancel their own sleeping statements at random moments
/// (cancels that may land just as the statement ends, with a successor's message behind
/// it); the other half never cancel, and must never see an error, nor have a statement
/// run twice: each of their rows is counted against the replies they got. Every reply
/// carries its client's own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_load_with_cancels_every_reply_is_the_clients_own() {
    load_with_cancels(true).await;
    load_with_cancels(false).await;
}

async fn load_with_cancels(pipeline: bool) {
    const CLIENTS: usize = 40;
    let (pg, proxy) = start_with(2, CLIENTS / 2, pipeline);
    let mut tasks = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    for i in 0..CLIENTS {
        let c = connect(&proxy, &format!("t{}", i / 2), "pw").await.unwrap();
        let canceller = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let me = tenant(i / 2);
            let (mut ok, mut cancelled, mut n) = (0u64, 0u64, 0u64);
            while tokio::time::Instant::now() < end {
                n += 1;
                let sql = if canceller {
                    insert(&format!("c{i}"), 0.002 * (n % 4) as f64)
                } else {
                    insert(&format!("i{i}"), 0.0)
                };
                let token = c.client.cancel_token();
                let cancel = canceller.then(|| {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_micros(300 * (n % 13))).await;
                        let _ = token.cancel_query(tokio_postgres::NoTls).await;
                    })
                });
                match try_col(&c.client, &sql).await {
                    Ok(rows) => {
                        assert_eq!(
                            rows,
                            std::slice::from_ref(&me),
                            "client {i}: another tenant's reply"
                        );
                        ok += 1;
                    }
                    Err(e) if canceller && e.code() == Some(&SqlState::QUERY_CANCELED) => {
                        cancelled += 1
                    }
                    Err(e) => panic!("client {i} (canceller: {canceller}): {e:?}"),
                }
                if let Some(cancel) = cancel {
                    let _ = cancel.await;
                }
            }
            (i, ok, cancelled)
        }));
    }
    let mut cancels = 0;
    for t in tasks {
        let (i, ok, cancelled) = tokio::time::timeout(LIMIT * 2, t).await.unwrap().unwrap();
        cancels += cancelled;
        if i % 2 == 1 {
            // Exactly once each: a statement sent again after a cancel it did not ask for
            // left nothing of its first run.
            assert_eq!(
                rows_of(&pg, &format!("i{i}")),
                format!("{ok} {}", tenant(i / 2))
            );
        }
    }
    let wrong = pg.psql(
        "launch",
        "SELECT count(*) FROM seen WHERE tenant <> '01JBXQQQQ' || lpad(((substr(who, 2)::int) / 2)::text, 17, '0')",
    );
    assert_eq!(wrong, "0", "rows under another tenant");
    let resent = metric(
        &proxy.metrics(),
        "launch_proxy_pipelined_resent_total",
        &[("pool", "app")],
    );
    eprintln!(
        "pipelined {}, sent again {resent}, cancels landed {cancels}",
        pipelined(&proxy)
    );
    assert_eq!(
        pipelined(&proxy) > 0.0,
        pipeline,
        "pipelined: {}",
        pipelined(&proxy)
    );
    assert!(cancels > 0, "no cancel landed");
}
