//! More faults against a real PostgreSQL: server connections terminated while the proxy
//! runs its own statements on them (the tenant switch, the tenant status lookup), a
//! PostgreSQL at its max_connections, server-side idle_session_timeout, and a restart
//! under an open transaction. Each client gets an error with the right SQLSTATE (never the
//! proxy's XX000 "could not apply the tenant" for a server that simply went away), the
//! proxy keeps serving, and the next transactions run under the right tenant.

use crate::common;

use common::client::{app, backend_pid, blocking, eventually, one, try_col, LIMIT};
use common::raw::*;
use common::{
    app_clients_reach, metric, proxy_config, send_signal, PgServer, ProxyProcess, USERS_YAML,
};

use std::time::Duration;

const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const T1: &str = "01JBXTENANT1000000000000T1";
/// The pid of the backend of `app` waiting on a lock ("" if none).
const LOCK_WAITER: &str = "SELECT coalesce(min(pid)::text, '') FROM pg_stat_activity \
                           WHERE wait_event_type = 'Lock' AND usename = 'app'";

/// PostgreSQL with the schema and tenant T1; the proxy with one server connection, md5
/// users `app` (no tenant) and `t1m` (tenant T1), the tenant's status checked
/// (`status_cache_ms: 0`: before every transaction) when `check_status`.
fn start(check_status: bool) -> (PgServer, ProxyProcess) {
    let pg = PgServer::with_tenant(KEY, T1);
    let pool = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
                acquire_timeout_ms: 10000";
    let config = proxy_config(&pg, pool)
        + &format!(
            "tenant: {{ signing_key: \"{KEY}\", check_status: {check_status}, status_cache_ms: 0 }}\n"
        );
    let users = format!(
        "{MD5_USERS}  t1m: {{ password: \"t1mpw\", role: write, tenant: \"{T1}\", server_user: app, auth: md5 }}\n"
    );
    let proxy = ProxyProcess::start(&config, &users);
    (pg, proxy)
}

/// A server connection that goes away (terminated, PostgreSQL stopping) is what PostgreSQL
/// tells a client as 57P01 and the proxy as 08006; never the XX000 of a refused tenant.
fn server_went_away(code: Option<&str>) -> bool {
    matches!(code, Some("08006" | "57P01"))
}

/// The pooled backend is stopped (SIGSTOP) and terminated while stopped; the client's
/// next transaction needs the tenant switch, which the proxy writes to that backend; the
/// backend resumes and, before reading anything, exits with FATAL 57P01. The switch's
/// "error" is the server going away, not a refusal of the tenant settings: the client gets
/// 08006/57P01, no "refused the tenant settings" alarm is logged, and the next clients
/// run on a new connection under their own tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_under_the_tenant_switch_is_a_lost_server() {
    let (pg, proxy) = start(false);
    // Carried: a plain SELECT takes the switch in front of its SQL. Standalone: the
    // extended protocol gets the switch as a Query of its own.
    for (how, statement) in [
        ("carried", q("SELECT 'mine'")),
        ("standalone", [pbe("SELECT 'mine'", &[]), sync()].concat()),
    ] {
        let mut t1 = Raw::login(proxy.port, "t1m", "t1mpw");
        let pid = t1.col0("SELECT pg_backend_pid()").remove(0);
        let mut other = Raw::login(proxy.port, "app", "apppw");
        assert!(send_signal(&pid, "STOP"), "kill -s STOP {pid}");
        let terminated = pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
        assert_eq!(terminated, "t", "{how}");
        other.send(&statement);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(send_signal(&pid, "CONT"), "kill -s CONT {pid}");
        let reply = blocking(|| other.until_ready_or_eof());
        let code = first_error(&reply);
        assert!(
            server_went_away(code.as_deref()),
            "{how}: the client got {} (SQLSTATE {code:?})",
            sum(&reply)
        );
        assert!(
            !proxy.log().contains("refused the tenant settings"),
            "{how}: a terminated backend was logged as a tenant refusal:\n{}",
            proxy.log()
        );
        // The proxy serves on: each client sees its own tenant on a new connection.
        let mut fresh = Raw::login(proxy.port, "app", "apppw");
        assert_eq!(
            fresh.col0("SELECT coalesce(current_setting('app.tenant_id', true), '')"),
            [""],
            "{how}"
        );
        let mut t1 = Raw::login(proxy.port, "t1m", "t1mpw");
        assert_eq!(
            t1.col0("SELECT current_setting('app.tenant_id')"),
            [T1],
            "{how}"
        );
        drop((t1, fresh));
    }
}

/// [`terminate_lookup`] once the lookup waits and `meanwhile` ran (a cancel, held for it).
async fn terminate_lookup_after(pg: &PgServer, meanwhile: impl FnOnce()) -> String {
    assert!(eventually(LIMIT, || !pg.psql("launch", LOCK_WAITER).is_empty()).await);
    blocking(meanwhile);
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate_lookup(pg, "").await
}

/// Waits until a backend of `app` waits on a lock (the tenant status lookup behind the
/// locked `tenants`) whose pid is not `not`, terminates it and returns its pid.
async fn terminate_lookup(pg: &PgServer, not: &str) -> String {
    let mut pid = String::new();
    let waits = eventually(LIMIT, || {
        pid = pg.psql("launch", LOCK_WAITER);
        !pid.is_empty() && pid != not
    })
    .await;
    assert!(waits, "no lookup waits on the lock");
    assert_eq!(
        pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})")),
        "t"
    );
    pid
}

/// The tenant status lookup waits on a lock (a migration holding `tenants`) and its
/// backend is terminated meanwhile. The lookup says nothing about the tenant and nothing
/// of the client's ran: the proxy looks again on another connection, and the client's
/// statement (or login) goes through once the lock is gone. Terminated twice, the client
/// gets the server's loss (08006), not XX000 with a hint to apply the migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_tenant_status_lookup_is_looked_up_again() {
    let (pg, proxy) = start(true);
    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    assert_eq!(c.col0("SELECT 'warm'"), ["warm"]);
    let su = pg.superuser("launch").await;
    let lock = "BEGIN; LOCK TABLE public.tenants IN ACCESS EXCLUSIVE MODE";

    // Before a transaction: once, then twice.
    su.batch_execute(lock).await.unwrap();
    c.send(&q("SELECT 'mine'"));
    terminate_lookup(&pg, "").await;
    su.batch_execute("ROLLBACK").await.unwrap();
    let reply = blocking(|| c.until_ready_or_eof());
    assert_eq!(col0(&reply), ["mine"], "{}", sum(&reply));
    // A cancel held for the lookup withdraws the statement when the lookup is lost.
    su.batch_execute(lock).await.unwrap();
    c.send(&q("SELECT 'mine'"));
    let pid = terminate_lookup_after(&pg, || send_cancel(proxy.port, c.key.0, c.key.1)).await;
    let reply = blocking(|| c.until_ready_or_eof());
    assert_eq!(sum(&reply), "E[57014]Zi", "lookup {pid}");
    su.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(c.col0("SELECT 'after'"), ["after"]);
    su.batch_execute(lock).await.unwrap();
    c.send(&q("SELECT 'mine'"));
    let first = terminate_lookup(&pg, "").await;
    terminate_lookup(&pg, &first).await;
    let reply = blocking(|| c.until_ready_or_eof());
    su.batch_execute("ROLLBACK").await.unwrap();
    let code = first_error(&reply);
    assert!(
        server_went_away(code.as_deref()),
        "in a transaction: the client got {} (SQLSTATE {code:?})",
        sum(&reply)
    );

    // At login: once, then twice.
    for times in [1, 2] {
        su.batch_execute(lock).await.unwrap();
        let port = proxy.port;
        let login = tokio::task::spawn_blocking(move || Raw::try_login(port, "t1m", "t1mpw"));
        let pid = terminate_lookup(&pg, "").await;
        if times == 2 {
            terminate_lookup(&pg, &pid).await;
        }
        su.batch_execute("ROLLBACK").await.unwrap();
        let result = tokio::time::timeout(LIMIT, login)
            .await
            .expect("the login hangs")
            .unwrap();
        match (times, result) {
            (1, Ok(mut c)) => assert_eq!(c.col0("SELECT 'in'"), ["in"]),
            (2, Err(code)) => assert!(
                server_went_away(Some(&code)),
                "at login: the client got SQLSTATE {code:?}"
            ),
            (_, r) => panic!("terminated {times} times at login: {:?}", r.map(|_| ())),
        }
    }

    let mut c = Raw::login(proxy.port, "t1m", "t1mpw");
    assert_eq!(c.col0("SELECT current_setting('app.tenant_id')"), [T1]);
}

/// A transaction open when PostgreSQL restarts is never reported committed: its COMMIT
/// (or the client's connection) fails, the row is not there, and new clients work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_after_a_restart_is_never_reported_as_success() {
    let mut pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE t (id int); GRANT ALL ON t TO app; CHECKPOINT;",
    );
    let cfg = proxy_config(&pg, "min_pool_size: 2\nacquire_timeout_ms: 20000");
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    for kill in [false, true] {
        let c = app(&proxy).await;
        one(&c.client, "BEGIN").await;
        one(&c.client, "INSERT INTO t VALUES (1)").await;
        blocking(|| if kill { pg.kill() } else { pg.stop() });
        blocking(|| pg.restart());
        let commit = tokio::time::timeout(LIMIT, c.client.simple_query("COMMIT"))
            .await
            .expect("COMMIT hangs after the restart");
        assert!(
            commit.is_err(),
            "kill={kill}: COMMIT of a rolled-back transaction reported success"
        );
        assert_eq!(pg.psql("launch", "SELECT count(*) FROM t"), "0");
        assert!(proxy.is_running());
        assert_eq!(one(&app(&proxy).await.client, "SELECT 1").await, "1");
    }
    let zero = eventually(LIMIT, || {
        let m = proxy.metrics();
        let l = |s| [("pool", "app"), ("state", s)];
        metric(&m, "launch_proxy_client_connections", &l("active")) == 0.0
            && metric(&m, "launch_proxy_client_connections", &l("waiting")) == 0.0
    })
    .await;
    assert!(zero, "client gauges stuck: {}", proxy.metrics());
}

/// PostgreSQL at its max_connections refuses the proxy's login with its own 53300: a
/// client that needs a new server connection gets an answer within acquire_timeout_ms
/// naming it, clients on open connections are unaffected, and once a slot frees the
/// proxy opens its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_at_max_connections_refuses_with_a_clear_error() {
    let pg = PgServer::start_with("max_connections = 6\nsuperuser_reserved_connections = 3");
    let pool = "default_pool_size: 3\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                acquire_timeout_ms: 2000\nconnect_retry_interval_ms: 100";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let holder = app(&proxy).await;
    one(&holder.client, "BEGIN").await;
    // Take the remaining non-superuser slots directly.
    let mut direct = Vec::new();
    for _ in 0..2 {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=app_ro password=approp dbname=launch",
                pg.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("a direct connection");
        tokio::spawn(conn);
        direct.push(client);
    }
    let waiter = app(&proxy).await;
    let err = try_col(&waiter.client, "SELECT 1")
        .await
        .expect_err("no server connection can be opened");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "57P03", "{db:?}");
    assert!(db.detail().unwrap_or("").contains("(53300)"), "{db:?}");
    assert_eq!(one(&holder.client, "SELECT 2").await, "2");
    one(&holder.client, "COMMIT").await;
    drop(direct);
    assert_eq!(one(&app(&proxy).await.client, "SELECT 3").await, "3");
}

/// PostgreSQL's idle_session_timeout closes pooled connections while they idle (FATAL
/// 57P05): the proxy never hands one of those to a client, whose transactions all succeed
/// on new connections, and the connection gauges stay sane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_session_timeout_is_absorbed() {
    let pg = PgServer::start_with("idle_session_timeout = '700ms'");
    let pool = "default_pool_size: 4\nmin_pool_size: 2\nacquire_timeout_ms: 10000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let c = app(&proxy).await;
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for round in 0..5u64 {
                tokio::time::sleep(Duration::from_millis(500 + (i * 150 + round * 170) % 500))
                    .await;
                if let Err(e) = try_col(&c.client, "SELECT 1").await {
                    errors.push(format!("{e:?}"));
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let m = blocking(|| proxy.metrics());
    for state in ["active", "idle", "opening"] {
        let v = metric(
            &m,
            "launch_proxy_server_connections",
            &[("pool", "app"), ("state", state)],
        );
        assert!((0.0..=4.0).contains(&v), "{state} = {v}: {m}");
    }
}

/// Reads until the proxy closes the connection (or LIMIT passes: a hang); the messages.
fn until_eof(c: &mut Raw) -> Vec<Msg> {
    c.s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut out = Vec::new();
    while let Some(m) = c.recv() {
        out.push(m);
    }
    out
}

/// PostgreSQL stops (fast, then immediate) in the middle of a COPY FROM STDIN and of a
/// pipeline of extended-protocol messages: the client gets an error and its connection
/// closes (never a hang, whatever it keeps sending), nothing of the COPY is committed, and
/// the proxy serves again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_pipelines_cut_by_a_stop_end_with_an_error() {
    let mut pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE c (x text); GRANT ALL ON c TO app; CHECKPOINT;",
    );
    let cfg = proxy_config(&pg, "acquire_timeout_ms: 20000");
    let mut proxy = ProxyProcess::start(&cfg, MD5_USERS);
    for kill in [false, true] {
        let mut copy = Raw::login(proxy.port, "app", "apppw");
        assert_eq!(copy.start_copy(&q("COPY c FROM STDIN")), "G");
        copy.send(&copy_data(&b"row\n".repeat(1000)));
        let mut pipe = Raw::login(proxy.port, "app", "apppw");
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.extend(pbe("SELECT pg_sleep(0.05)", &[]));
        }
        pipe.send(&[batch, sync()].concat());
        tokio::time::sleep(Duration::from_millis(200)).await;
        blocking(|| if kill { pg.kill() } else { pg.stop() });
        // The COPY client keeps streaming for a while, as a loader would.
        use std::io::Write;
        let chunk = copy_data(&b"more\n".repeat(2000));
        for _ in 0..200 {
            if copy.s.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = copy.s.write_all(&copy_done());
        for (what, c) in [("copy", &mut copy), ("pipeline", &mut pipe)] {
            let got = blocking(|| until_eof(c));
            let code = first_error(&got);
            assert!(
                matches!(code.as_deref(), Some("08006" | "57P01")),
                "kill={kill} {what}: {} ({code:?})",
                sum(&got)
            );
        }
        blocking(|| pg.restart());
        assert!(proxy.is_running());
        assert_eq!(pg.psql("launch", "SELECT count(*) FROM c"), "0");
        let mut after = Raw::login(proxy.port, "app", "apppw");
        assert_eq!(after.col0("SELECT 'back'"), ["back"]);
    }
}

/// PostgreSQL's crash restart (one backend SIGKILLed: the postmaster ends every other
/// backend and recovers) under a running query, an open transaction, idle clients and
/// clients queued behind a full pool: each gets an answer (an error for those whose
/// server died, their results for the others once PostgreSQL is back), the gauges
/// return to zero and the proxy's file descriptors to what they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restart_leaves_no_stuck_clients_or_descriptors() {
    let pg = PgServer::start();
    let pool = "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                max_active: 1\nacquire_timeout_ms: 20000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let idle = app(&proxy).await;
    one(&idle.client, "SELECT 1").await;
    let baseline = proxy.open_fds();
    let running = app(&proxy).await;
    let in_tx = app(&proxy).await;
    one(&in_tx.client, "BEGIN").await;
    one(&in_tx.client, "SELECT 1").await;
    let client = running.client;
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let pid = backend_pid(&pg, "usename = 'app' AND query LIKE '%SELECT pg_sleep(30)'").await;
    let mut queued = Vec::new();
    for i in 0..4 {
        let c = app(&proxy).await;
        queued.push(tokio::spawn(async move {
            let r = try_col(&c.client, &format!("SELECT {i}")).await;
            (c, r)
        }));
    }
    let queued_up = app_clients_reach(&proxy, "waiting", 4.0).await;
    assert!(queued_up, "{}", proxy.metrics());
    assert!(send_signal(&pid, "KILL"), "kill -s KILL {pid}");
    let r = tokio::time::timeout(LIMIT, query)
        .await
        .expect("the running query hangs");
    assert!(r.unwrap().is_err(), "the killed query succeeded");
    assert!(
        try_col(&in_tx.client, "COMMIT").await.is_err(),
        "COMMIT succeeded"
    );
    for q in queued {
        let (_c, r) = tokio::time::timeout(LIMIT, q)
            .await
            .expect("a queued client hangs")
            .unwrap();
        r.expect("a queued client, whose statement never ran, failed");
    }
    assert_eq!(one(&idle.client, "SELECT 'idle'").await, "idle");
    drop((in_tx, idle));
    let settled = eventually(LIMIT, || {
        let m = proxy.metrics();
        let g = |s| {
            metric(
                &m,
                "launch_proxy_client_connections",
                &[("pool", "app"), ("state", s)],
            )
        };
        g("waiting") == 0.0
            && g("active") == 0.0
            && metric(&m, "launch_proxy_clients_connected", &[]) == 0.0
    })
    .await;
    assert!(settled, "{}", proxy.metrics());
    // Server connections may stay (idle) and one client less: at most the baseline.
    let back = eventually(LIMIT, || proxy.open_fds() <= baseline + 2).await;
    assert!(back, "fds {} vs {baseline} before", proxy.open_fds());
}

/// Six clients of two tenants run short write transactions, reconnecting after any error,
/// while one pooled backend after another is terminated (idle, mid-transaction, under the
/// tenant switch or the status lookup). Every error is a lost server (08006, 57P01),
/// never the XX000 of a refused switch; every COMMIT reported done is in the table; every
/// row was written under its own client's tenant; no client is left counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminations_under_load_lose_no_commit_and_mix_no_tenants() {
    const T2: &str = "01JBXTENANT2000000000000T2";
    const ACTOR: &str = "01JBXACT0R00000000000000C1";
    let pg = PgServer::with_tenant(KEY, T1);
    pg.psql(
        "launch",
        &format!(
            "INSERT INTO tenants (id, name, created_by, updated_by) \
             VALUES ('{T2}', 't2', '{ACTOR}', '{ACTOR}'); \
             CREATE TABLE w (client int, seq int, tenant text); GRANT ALL ON w TO app;"
        ),
    );
    let pool = "default_pool_size: 4\nmin_pool_size: 2\nmax_active: 2\nacquire_timeout_ms: 10000";
    let config = proxy_config(&pg, pool)
        + &format!(
            "tenant: {{ signing_key: \"{KEY}\", check_status: true, status_cache_ms: 0 }}\n"
        );
    let mut users = MD5_USERS.to_owned();
    for (name, tenant) in [("t1m", T1), ("t2m", T2)] {
        users += &format!(
            "  {name}: {{ password: \"pw\", role: write, tenant: \"{tenant}\", server_user: app, auth: md5 }}\n"
        );
    }
    let proxy = std::sync::Arc::new(ProxyProcess::start(&config, &users));
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut workers = Vec::new();
    for client in 0..6i64 {
        let (proxy, tenant) = (proxy.clone(), if client % 2 == 0 { T1 } else { T2 });
        let user = if client % 2 == 0 { "t1m" } else { "t2m" };
        workers.push(tokio::spawn(async move {
            let (mut acked, mut bad) = (Vec::new(), Vec::new());
            let mut seq = 0;
            while std::time::Instant::now() < deadline {
                let Ok(c) = common::client::connect(&proxy, user, "pw").await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while std::time::Instant::now() < deadline {
                    seq += 1;
                    let insert = format!(
                        "INSERT INTO w VALUES ({client}, {seq}, current_setting('app.tenant_id', true))"
                    );
                    let mut failed = None;
                    for sql in ["BEGIN", &insert, "COMMIT"] {
                        if let Err(e) = try_col(&c.client, sql).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    match failed {
                        None => acked.push(seq),
                        Some(e) => {
                            let code = e.as_db_error().map(|d| d.code().code().to_owned());
                            if !e.is_closed() && !server_went_away(code.as_deref()) {
                                bad.push(format!("{e:?}"));
                            }
                            break;
                        }
                    }
                }
            }
            (client, tenant, acked, bad)
        }));
    }
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
                WHERE usename = 'app' ORDER BY random() LIMIT 1) s";
    let mut terminated = 0;
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(150)).await;
        terminated += blocking(|| pg.psql("postgres", kill))
            .parse::<i32>()
            .unwrap();
    }
    assert!(terminated > 10, "only {terminated} terminations");
    for w in workers {
        let (client, tenant, acked, bad) = w.await.unwrap();
        assert!(bad.is_empty(), "client {client}: {bad:#?}");
        assert!(!acked.is_empty(), "client {client} never committed");
        let rows = pg.psql(
            "launch",
            &format!(
                "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM w WHERE client = {client}"
            ),
        );
        let rows: Vec<i64> = rows.split(',').filter_map(|s| s.parse().ok()).collect();
        let lost: Vec<_> = acked.iter().filter(|s| !rows.contains(s)).collect();
        assert!(
            lost.is_empty(),
            "client {client}: committed rows lost: {lost:?}"
        );
        let foreign = pg.psql(
            "launch",
            &format!("SELECT count(*) FROM w WHERE client = {client} AND tenant IS DISTINCT FROM '{tenant}'"),
        );
        assert_eq!(foreign, "0", "client {client} wrote under another tenant");
    }
    let gone = eventually(LIMIT, || {
        let m = proxy.metrics();
        metric(&m, "launch_proxy_clients_connected", &[]) == 0.0
            && metric(
                &m,
                "launch_proxy_client_connections",
                &[("pool", "app"), ("state", "waiting")],
            ) == 0.0
            && metric(
                &m,
                "launch_proxy_client_connections",
                &[("pool", "app"), ("state", "active")],
            ) == 0.0
    })
    .await;
    assert!(gone, "{}", proxy.metrics());
    assert!(
        !proxy.log().contains("refused the tenant settings"),
        "{}",
        proxy.log()
    );
}
