//! Timeouts of the pool (acquire, connect/retry, idle, max uses, lifetime), the per-role
//! server session settings and the proxy's own command timeout, and the shutdown timeout,
//! each checked against a real PostgreSQL through the proxy binary.

use crate::common;

use common::client::{app, blocking, connect, eventually, one, try_col, Conn, LIMIT};
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Error, SimpleQueryMessage};

async fn app_ro(proxy: &ProxyProcess) -> Conn {
    connect(proxy, "app_ro", "approp")
        .await
        .expect("app_ro logs in")
}

/// The SQLSTATE, severity and message of a server error, or a description of what it was.
fn db(e: &Error) -> (String, String, String) {
    match e.as_db_error() {
        Some(d) => (
            d.code().code().to_owned(),
            d.severity().to_owned(),
            d.message().to_owned(),
        ),
        None => panic!("expected an ErrorResponse, got {e:?}"),
    }
}

/// Replaces the `roles.<role>` line of a config made by [`proxy_config`].
fn with_role(cfg: &str, role: &str, value: &str) -> String {
    let mut in_roles = false;
    let mut found = false;
    let mut out = String::new();
    for line in cfg.lines() {
        if !line.starts_with(' ') {
            in_roles = line.starts_with("roles:");
        }
        if in_roles && line.trim_start().starts_with(&format!("{role}:")) {
            out.push_str(&format!("  {role}: {value}\n"));
            found = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(found, "no roles.{role} line in the config:\n{cfg}");
    out
}

/// The value of the first sample of `name` carrying all `labels`.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let ok = n == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        ok.then(|| value.parse().ok()).flatten()
    })
}

/// With one server connection held by an open transaction, a second client's query
/// fails with FATAL 53300 and the documented message, no earlier than acquire_timeout_ms;
/// the holder is unaffected and the pool serves new clients afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_pool_gives_53300_after_acquire_timeout() {
    let pg = PgServer::start();
    let pool =
        "default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0\nacquire_timeout_ms: 1500";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let holder = app(&proxy).await;
    one(&holder.client, "BEGIN").await;
    one(&holder.client, "SELECT 1").await;
    let waiter = app(&proxy).await;
    let t0 = Instant::now();
    let err = try_col(&waiter.client, "SELECT 1")
        .await
        .expect_err("the pool is busy: the query must fail");
    let waited = t0.elapsed();
    let (code, severity, message) = db(&err);
    assert_eq!((code.as_str(), severity.as_str()), ("53300", "FATAL"));
    assert_eq!(
        message,
        "could not get a server connection for pool \"app\" within acquire_timeout_ms (1500 ms)"
    );
    assert!(
        waited >= Duration::from_millis(1450),
        "failed early: {waited:?}"
    );
    one(&holder.client, "COMMIT").await;
    assert_eq!(one(&app(&proxy).await.client, "SELECT 7").await, "7");
    let body = blocking(|| proxy.metrics());
    let timeouts = metric(
        &body,
        "launch_proxy_acquire_timeouts_total",
        &[("pool", "app")],
    );
    assert_eq!(timeouts, Some(1.0), "{body}");
}

/// With PostgreSQL down, a query fails after acquire_timeout_ms with FATAL 57P03 whose
/// detail names the last connection error; after a restart new clients are served again
/// by the same proxy process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_gives_57p03_naming_the_connect_error() {
    let mut pg = PgServer::start();
    let pool = "acquire_timeout_ms: 1500\nconnect_retry_interval_ms: 100";
    let mut proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let c = app(&proxy).await;
    assert_eq!(one(&c.client, "SELECT 1").await, "1");
    blocking(|| pg.stop());
    let t0 = Instant::now();
    let err = try_col(&c.client, "SELECT 1")
        .await
        .expect_err("PostgreSQL is down");
    let waited = t0.elapsed();
    let (code, severity, message) = db(&err);
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("57P03", "FATAL"),
        "{message}"
    );
    assert!(
        message.contains("could not get a server connection for pool \"app\" within acquire_timeout_ms (1500 ms)"),
        "{message}"
    );
    let detail = err.as_db_error().and_then(|d| d.detail()).unwrap_or("");
    assert!(
        detail.starts_with("last connection attempt:") && detail.to_lowercase().contains("refused"),
        "detail should name the connect error: {detail:?}"
    );
    assert!(
        waited >= Duration::from_millis(1450),
        "failed early: {waited:?}"
    );
    // A proxy started while PostgreSQL is down refuses logins the same way.
    let fresh = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let err = connect(&fresh, "app_ro", "approp").await.err();
    let err = err.expect("login without a reachable server");
    assert_eq!(db(&err).0, "57P03", "{err:?}");
    blocking(|| pg.restart());
    assert_eq!(one(&app(&proxy).await.client, "SELECT 2").await, "2");
    assert_eq!(one(&app_ro(&fresh).await.client, "SELECT 3").await, "3");
    assert!(proxy.is_running());
}

/// A query issued while PostgreSQL is stopped waits (connect attempts retried every
/// connect_retry_interval_ms) and succeeds once PostgreSQL is back within
/// acquire_timeout_ms; the failed attempts are counted in
/// launch_proxy_server_connects_total{result="failed"}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_survives_server_restart_within_acquire_timeout() {
    let mut pg = PgServer::start();
    let pool =
        "acquire_timeout_ms: 30000\nconnect_timeout_ms: 2000\nconnect_retry_interval_ms: 100";
    let mut proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let c = app(&proxy).await;
    assert_eq!(one(&c.client, "SELECT 1").await, "1");
    let failed = |body: &str| {
        let labels = [("pool", "app"), ("result", "failed")];
        metric(body, "launch_proxy_server_connects_total", &labels).unwrap_or(0.0)
    };
    let failed_before = failed(&blocking(|| proxy.metrics()));
    blocking(|| pg.stop());
    let client = c.client;
    let q = tokio::spawn(async move {
        let r = client.simple_query("SELECT 42").await;
        (client, r)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!q.is_finished(), "the query must wait for the server");
    let body = blocking(|| proxy.metrics());
    let state = |name: &str, st: &str| metric(&body, name, &[("pool", "app"), ("state", st)]);
    let waiting = state("launch_proxy_client_connections", "waiting");
    assert_eq!(waiting, Some(1.0), "{body}");
    let opening = state("launch_proxy_server_connections", "opening");
    assert!(opening >= Some(1.0), "{body}");
    blocking(|| pg.restart());
    let (client, r) = tokio::time::timeout(LIMIT, q)
        .await
        .expect("query still waits after the restart")
        .unwrap();
    let msgs = r.expect("the waiting query succeeds after the restart");
    assert!(
        msgs.iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("42"))),
        "SELECT 42 returned no 42"
    );
    assert_eq!(one(&client, "SELECT 1").await, "1");
    let failed_after = failed(&blocking(|| proxy.metrics()));
    assert!(
        failed_after > failed_before,
        "{failed_before} -> {failed_after}"
    );
    assert!(proxy.is_running());
}

/// After 5 concurrent transactions opened 5 server connections, idle_timeout_ms 1000
/// closes the extra ones: the user's backends drop back to min_pool_size (1) within a
/// few seconds and then stay there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_shrink_to_min_pool_size() {
    let pg = Arc::new(PgServer::start());
    let pool =
        "default_pool_size: 5\nmin_pool_size: 1\nreserve_pool_size: 0\nidle_timeout_ms: 1000";
    let proxy = Arc::new(ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML));
    let (held, release) = (
        Arc::new(tokio::sync::Barrier::new(6)),
        Arc::new(tokio::sync::Barrier::new(6)),
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (proxy, held, release) = (proxy.clone(), held.clone(), release.clone());
        tasks.push(tokio::spawn(async move {
            let c = app(&proxy).await;
            one(&c.client, "BEGIN").await;
            let pid = one(&c.client, "SELECT pg_backend_pid()").await;
            held.wait().await;
            release.wait().await;
            one(&c.client, "COMMIT").await;
            pid
        }));
    }
    // Bounded: a client task that panicked never reaches the barrier; the test then fails
    // (the clients' panics are in its output) instead of waiting forever.
    let wait = |barrier: Arc<tokio::sync::Barrier>, what: &'static str| async move {
        if tokio::time::timeout(LIMIT, barrier.wait()).await.is_err() {
            panic!("the 5 clients did not all reach {what} within {LIMIT:?}");
        }
    };
    wait(held.clone(), "their open transactions").await;
    assert_eq!(blocking(|| pg.server_backend_count("app")), 5);
    wait(release.clone(), "the end of their transactions").await;
    let mut pids = Vec::new();
    for t in tasks {
        pids.push(t.await.unwrap());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        5,
        "5 transactions at once need 5 server connections"
    );
    let shrunk = eventually(Duration::from_secs(15), || {
        pg.server_backend_count("app") == 1
    })
    .await;
    assert!(shrunk, "backends: {}", pg.server_backend_count("app"));
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            blocking(|| pg.server_backend_count("app")),
            1,
            "min_pool_size is 1"
        );
    }
}

/// server_max_uses 3 with one server connection: every 3 transactions the backend pid
/// changes, and retired backends are really closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_max_uses_retires_after_three_transactions() {
    let pg = PgServer::start();
    let pool = "default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0\nserver_max_uses: 3";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let c = app(&proxy).await;
    let mut pids = Vec::new();
    for _ in 0..9 {
        pids.push(one(&c.client, "SELECT pg_backend_pid()").await);
    }
    for group in pids.chunks(3) {
        assert!(group.iter().all(|p| *p == group[0]), "pids: {pids:?}");
    }
    assert!(pids[2] != pids[3] && pids[5] != pids[6], "pids: {pids:?}");
    let retired = format!("{},{}", pids[0], pids[3]);
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid IN ({retired})");
    let closed = eventually(Duration::from_secs(10), || pg.psql("postgres", &sql) == "0").await;
    assert!(closed, "retired backends {retired} are still connected");
}

/// server_lifetime_ms 1000: busy or idle, a server connection is replaced once it is
/// older than its lifetime, and no backend is used long past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_retires_old_connections() {
    let pg = PgServer::start();
    let pool =
        "default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0\nserver_lifetime_ms: 1000";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let c = app(&proxy).await;
    let sql =
        "SELECT pg_backend_pid() || ' ' || extract(epoch FROM clock_timestamp() - backend_start) \
               FROM pg_stat_activity WHERE pid = pg_backend_pid()";
    let mut seen: Vec<String> = Vec::new();
    let mut oldest = 0.0f64;
    let end = Instant::now() + Duration::from_secs(15);
    while seen.len() < 3 && Instant::now() < end {
        let row = one(&c.client, sql).await;
        let (pid, age) = row.split_once(' ').expect("pid and age");
        oldest = oldest.max(age.parse().expect("age"));
        if seen.last().map(String::as_str) != Some(pid) {
            seen.push(pid.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.len() >= 3, "busy connection never replaced: {seen:?}");
    assert!(
        oldest < 3.5,
        "a backend was used {oldest} s after its start"
    );
    let last = seen.last().cloned().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = one(&c.client, "SELECT pg_backend_pid()").await;
    assert_ne!(pid, last, "an idle connection outlived server_lifetime_ms");
}

/// Server sessions carry their role's timeouts: app (write) 60s/60s, app_ro (read)
/// 30s/60s as statement_timeout / idle_in_transaction_session_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_timeouts_are_set_on_server_sessions() {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, ""), USERS_YAML);
    for (conn, statement) in [(app(&proxy).await, "1min"), (app_ro(&proxy).await, "30s")] {
        assert_eq!(one(&conn.client, "SHOW statement_timeout").await, statement);
        let idle = one(&conn.client, "SHOW idle_in_transaction_session_timeout").await;
        assert_eq!(idle, "1min");
    }
}

/// roles.read.statement_timeout_ms 500: PostgreSQL itself cancels app_ro's long query
/// with 57014 "statement timeout"; the connection keeps working and app is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_statement_timeout_is_enforced_by_postgres() {
    let pg = PgServer::start();
    let role = "{ command_timeout_ms: 10000, statement_timeout_ms: 500, idle_in_transaction_timeout_ms: 60000 }";
    let cfg = with_role(&proxy_config(&pg, ""), "read", role);
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let ro = app_ro(&proxy).await;
    assert_eq!(one(&ro.client, "SHOW statement_timeout").await, "500ms");
    let t0 = Instant::now();
    let err = try_col(&ro.client, "SELECT pg_sleep(2)")
        .await
        .expect_err("statement_timeout must cancel pg_sleep(2)");
    let (code, severity, message) = db(&err);
    assert_eq!((code.as_str(), severity.as_str()), ("57014", "ERROR"));
    assert_eq!(message, "canceling statement due to statement timeout");
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(one(&ro.client, "SELECT 1").await, "1");
    let w = app(&proxy).await;
    try_col(&w.client, "SELECT pg_sleep(0.7)")
        .await
        .expect("write role keeps its 60 s statement_timeout");
}

/// roles.read.idle_in_transaction_timeout_ms 500: an app_ro client idling inside BEGIN
/// gets PostgreSQL's FATAL 25P03 and is disconnected; the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_idle_in_transaction_timeout_disconnects_client() {
    let pg = PgServer::start();
    let role = "{ command_timeout_ms: 10000, statement_timeout_ms: 30000, idle_in_transaction_timeout_ms: 500 }";
    let cfg = with_role(&proxy_config(&pg, ""), "read", role);
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let ro = app_ro(&proxy).await;
    one(&ro.client, "BEGIN").await;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = tokio::time::timeout(LIMIT, ro.task)
        .await
        .expect("the idle-in-transaction client is never disconnected")
        .unwrap();
    let err = end.expect_err("the connection must end with an error");
    let (code, severity, _) = db(&err);
    assert_eq!((code.as_str(), severity.as_str()), ("25P03", "FATAL"));
    assert!(t0.elapsed() >= Duration::from_millis(450));
    assert!(ro.client.simple_query("SELECT 1").await.is_err());
    assert_eq!(one(&app_ro(&proxy).await.client, "SELECT 3").await, "3");
    assert_eq!(one(&app(&proxy).await.client, "SELECT 4").await, "4");
    assert!(proxy.is_running());
}

/// A server and a proxy whose read role has this command timeout (its statement timeout
/// larger, so that the proxy's cancel is what ends a long statement).
fn with_read_command_timeout(ms: u64) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let role = format!(
        "{{ command_timeout_ms: {ms}, statement_timeout_ms: 30000, idle_in_transaction_timeout_ms: 60000 }}"
    );
    let cfg = with_role(
        &proxy_config(&pg, "default_pool_size: 2\nmin_pool_size: 1"),
        "read",
        &role,
    );
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    (pg, proxy)
}

/// roles.read.command_timeout_ms 500 (statement_timeout larger): the proxy cancels
/// pg_sleep(30) with ERROR 57014 "command timeout", the same client connection then works,
/// the server backend is reused or cleanly replaced, and nothing keeps running on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_command_timeout_cancels_and_connection_survives() {
    let (pg, proxy) = with_read_command_timeout(500);
    let ro = app_ro(&proxy).await;
    let pid_before = one(&ro.client, "SELECT pg_backend_pid()").await;
    let t0 = Instant::now();
    let err = try_col(&ro.client, "SELECT pg_sleep(30)")
        .await
        .expect_err("command_timeout must cancel pg_sleep(30)");
    let (code, severity, message) = db(&err);
    assert_eq!(
        (code.as_str(), severity.as_str()),
        ("57014", "ERROR"),
        "{message}"
    );
    assert!(message.contains("command timeout"), "{message}");
    assert!(
        t0.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(one(&ro.client, "SELECT 1").await, "1");
    let pid_after = one(&ro.client, "SELECT pg_backend_pid()").await;
    if pid_after != pid_before {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid_before}");
        let gone = eventually(Duration::from_secs(10), || pg.psql("postgres", &sql) == "0").await;
        assert!(gone, "replaced backend {pid_before} still connected");
    }
    let running = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_ro' \
                   AND state = 'active' AND query LIKE 'SELECT pg_sleep(30)%'";
    let idle = eventually(Duration::from_secs(10), || {
        pg.psql("postgres", running) == "0"
    })
    .await;
    assert!(idle, "the timed-out query still runs on the server");
    // Inside a transaction the cancel aborts it; ROLLBACK ends it and the client goes on.
    one(&ro.client, "BEGIN").await;
    let err = try_col(&ro.client, "SELECT pg_sleep(30)")
        .await
        .unwrap_err();
    assert_eq!(db(&err).0, "57014");
    one(&ro.client, "ROLLBACK").await;
    assert_eq!(one(&ro.client, "SELECT 5").await, "5");
}

/// A command that finished leaves no deadline behind: a client idle in its transaction for
/// longer than command_timeout_ms gets no cancel sent to its backend (which would be a
/// wasted connection to the server, or hit the client's next statement as it starts), and
/// its next long statement is still cancelled at its own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_command_leaves_no_deadline_in_its_transaction() {
    let (_pg, proxy) = with_read_command_timeout(300);
    let ro = app_ro(&proxy).await;
    one(&ro.client, "BEGIN").await;
    assert_eq!(one(&ro.client, "SELECT 1").await, "1");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let cancels = "command_timeout reached";
    assert!(
        !proxy.log().contains(cancels),
        "a cancel for an idle client"
    );
    let err = try_col(&ro.client, "SELECT pg_sleep(30)")
        .await
        .expect_err("its own deadline cancels it");
    let (code, _, message) = db(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("command timeout"), "{message}");
    assert_eq!(proxy.log().matches(cancels).count(), 1);
    one(&ro.client, "ROLLBACK").await;
}

/// SIGTERM with one client inside a transaction: new connections are refused, an idle
/// client gets 57P01, the transaction can still COMMIT (its rows are committed) and its
/// client is then disconnected, and the process exits 0 well within shutdown_timeout_ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_transaction_then_exits() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE drained (id int); GRANT ALL ON drained TO app;",
    );
    let cfg = proxy_config(&pg, "") + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let busy = app(&proxy).await;
    let idle = app(&proxy).await;
    assert_eq!(one(&idle.client, "SELECT 1").await, "1");
    one(&busy.client, "BEGIN").await;
    one(&busy.client, "INSERT INTO drained VALUES (1)").await;
    let t0 = Instant::now();
    proxy.sigterm();
    let end = tokio::time::timeout(LIMIT, idle.task)
        .await
        .expect("idle client not disconnected on SIGTERM")
        .unwrap();
    let (code, severity, _) = db(&end.expect_err("idle client must get an error"));
    assert_eq!((code.as_str(), severity.as_str()), ("57P01", "FATAL"));
    match connect(&proxy, "app", "apppw").await {
        Ok(_) => panic!("a new connection was accepted during shutdown"),
        Err(e) if e.as_db_error().is_some() => {
            let (code, severity, _) = db(&e);
            assert!(code.starts_with("57P0") && severity == "FATAL", "{e:?}");
        }
        Err(_) => {} // refused at the TCP level
    }
    one(&busy.client, "INSERT INTO drained VALUES (2)").await;
    one(&busy.client, "COMMIT").await;
    let end = tokio::time::timeout(LIMIT, busy.task)
        .await
        .expect("client not disconnected after its transaction")
        .unwrap();
    assert!(
        end.is_err(),
        "the drained client should be told why it is closed"
    );
    let status = blocking(|| proxy.wait_exit(Duration::from_secs(20)));
    let status = status.expect("proxy did not exit within shutdown_timeout_ms");
    assert!(status.success(), "exit status {status}");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(
        pg.psql(
            "launch",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM drained"
        ),
        "1,2"
    );
}

/// SIGTERM while a client is queued for the only server connection: its statement was
/// accepted, so the drain keeps it queued and runs it once the holder's transaction
/// commits (a rolling restart fails no transaction the old process took); then both
/// sessions, idle, end and the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_runs_a_queued_checkout() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE queued (id int); GRANT ALL ON queued TO app;",
    );
    let pool =
        "default_pool_size: 1\nmin_pool_size: 1\nreserve_pool_size: 0\nacquire_timeout_ms: 600000";
    let cfg = proxy_config(&pg, pool) + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let holder = app(&proxy).await;
    one(&holder.client, "BEGIN").await;
    one(&holder.client, "INSERT INTO queued VALUES (1)").await;
    let waiter = app(&proxy).await;
    let queued = tokio::spawn(async move {
        let r = try_col(&waiter.client, "SELECT count(*) FROM queued").await;
        (waiter, r)
    });
    // The waiter is in the pool's queue once the gauge says so.
    let gauge = &[("pool", "app"), ("state", "waiting")];
    for _ in 0..200 {
        let body = blocking(|| proxy.metrics());
        if metric(&body, "launch_proxy_client_connections", gauge) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    proxy.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !queued.is_finished(),
        "the queued statement ended before the holder's commit"
    );
    one(&holder.client, "COMMIT").await;
    let (waiter, rows) = tokio::time::timeout(LIMIT, queued)
        .await
        .expect("the queued client waited on after the commit")
        .unwrap();
    assert_eq!(rows.expect("the queued statement runs in the drain"), ["1"]);
    // Both idle now: the drain ends them.
    let end = tokio::time::timeout(LIMIT, waiter.task)
        .await
        .expect("the waiter, idle, is not disconnected")
        .unwrap();
    let (code, severity, _) = db(&end.expect_err("told why it is closed"));
    assert_eq!((code.as_str(), severity.as_str()), ("57P01", "FATAL"));
    let status = blocking(|| proxy.wait_exit(Duration::from_secs(20)));
    assert!(status.expect("proxy did not exit").success());
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM queued"), "1");
}

/// SIGTERM while a client's transaction runs with its next one already sent: the next one
/// runs too, in the drain, on a connection the pool opens for it (the only one retires
/// after its use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_runs_a_transaction_pipelined_behind_the_running_one() {
    let pg = PgServer::start();
    let pool = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                server_max_uses: 1\nacquire_timeout_ms: 600000";
    let cfg = proxy_config(&pg, pool) + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let c = app(&proxy).await;
    let pipelined = tokio::spawn(async move {
        let client = &c.client;
        let both = tokio::join!(
            client.simple_query("SELECT pg_sleep(1)"),
            client.simple_query("SELECT 2")
        );
        drop(c);
        both
    });
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                    AND wait_event = 'PgSleep'";
    assert!(eventually(LIMIT, || pg.psql("launch", sleeping) == "1").await);
    proxy.sigterm();
    let (first, second) = tokio::time::timeout(LIMIT, pipelined)
        .await
        .expect("the pipelined client hangs after SIGTERM")
        .unwrap();
    assert!(first.is_ok(), "the running transaction drains: {first:?}");
    assert!(
        second.is_ok(),
        "the pipelined one runs in the drain: {second:?}"
    );
    let status = blocking(|| proxy.wait_exit(Duration::from_secs(20)));
    assert!(status.expect("proxy did not exit").success());
}

/// With shutdown_timeout_ms 1000 and a transaction that never finishes, SIGTERM still
/// ends the process with status 0 shortly after (not before) the timeout, and the
/// unfinished transaction is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_on_stuck_transaction_after_shutdown_timeout() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE stuck (id int); GRANT ALL ON stuck TO app;",
    );
    let cfg = proxy_config(&pg, "") + "shutdown_timeout_ms: 1000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let c = app(&proxy).await;
    one(&c.client, "BEGIN").await;
    one(&c.client, "INSERT INTO stuck VALUES (1)").await;
    let t0 = Instant::now();
    proxy.sigterm();
    let status = blocking(|| proxy.wait_exit(Duration::from_secs(15)));
    let elapsed = t0.elapsed();
    let status = status.expect("proxy still running 15 s after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "exited after {elapsed:?}: the transaction got no grace"
    );
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state <> 'idle'";
    let gone = eventually(Duration::from_secs(10), || pg.psql("launch", sql) == "0").await;
    assert!(gone, "the stuck transaction's backend survives the proxy");
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM stuck"), "0");
}
