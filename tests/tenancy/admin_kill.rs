//! The admin console's KILL_TENANT and KILL_CLIENT against PostgreSQL: they end the sessions
//! named, wherever each is (idle, running a statement, queued for a connection), with 57P01;
//! a running statement is cancelled on the server; every other tenant's sessions, open
//! transactions included, go on. A tenant cannot reach either command.

use super::admin_console::{console_as, with_console, OPS};
use super::*;
use crate::common::app_clients_reach;
use crate::common::client::{eventually, LIMIT};
use crate::common::raw::{q, Raw};

/// Three server connections, no gate: three open transactions fill the pool.
const POOL: &str = "default_pool_size: 3\nmin_pool_size: 0\nreserve_pool_size: 0\n\
                    max_active: 0\nacquire_timeout_ms: 30000";

async fn start() -> Env {
    let ids = [T1, T2, T3].map(String::from);
    Env::start(POOL, "", OPS, &ids, with_console).await
}

/// Runs `sql` in a task of its own; the SQLSTATE it fails with (`None`: it succeeded).
fn spawn_query(c: Client, sql: &'static str) -> tokio::task::JoinHandle<Option<String>> {
    tokio::spawn(async move {
        let r = c.simple_query(sql).await;
        r.err()
            .map(|e| e.code().map_or("none".into(), |c| c.code().to_owned()))
    })
}

/// The NOTICEs and errors of one console command, as `SQLSTATE message` lines.
async fn console(ops: &Client, command: &str) -> Result<(), String> {
    ops.simple_query(command)
        .await
        .map(|_| ())
        .map_err(|e| show(&e))
}

/// Whether, within the limit, `n` statements containing `text` run on the server (the
/// tenant switch is carried in front of the client's text).
async fn running_reach(env: &Env, text: &str, n: &str) -> bool {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE state = 'active' AND query LIKE '%{text}%' AND pid <> pg_backend_pid()"
    );
    let until = Instant::now() + LIMIT;
    while Instant::now() < until {
        if env.su1(&sql).await == n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Ends the session `pid` from the `ops` console.
async fn kill_client(env: &Env, pid: impl std::fmt::Display) {
    let ops = console_as(env, "ops").await.expect("console");
    console(&ops, &format!("KILL_CLIENT {pid}"))
        .await
        .expect("KILL_CLIENT");
}

/// A console session whose NOTICEs are collected.
async fn console_with_notices(env: &Env) -> (Client, Arc<Mutex<Vec<String>>>) {
    let conn = format!(
        "host=127.0.0.1 port={} user=ops password={} dbname=pgbouncer",
        env.proxy.port,
        pw("ops")
    );
    let (client, mut connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .expect("console");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = notices.clone();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notice(n) = m {
                seen.lock().unwrap().push(n.message().to_owned());
            }
        }
    });
    (client, notices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_tenant_ends_that_tenants_sessions_wherever_they_are_and_no_other() {
    let env = start().await;
    let idle = env.login("t1").await;
    let sleeping = spawn_query(env.login("t1").await, "SELECT pg_sleep(60)");
    assert!(
        running_reach(&env, "pg_sleep(60)", "1").await,
        "the long statement never started"
    );
    let t2 = env.login("t2").await;
    let t3 = env.login("t3").await;
    for c in [&t2, &t3] {
        col(c, "BEGIN").await;
        col(c, "SELECT count(*) FROM base_entity").await;
    }
    let queued = spawn_query(env.login("t1").await, "SELECT 1");
    assert!(
        app_clients_reach(&env.proxy, "waiting", 1.0).await,
        "t1's third session never queued"
    );

    let (ops, notices) = console_with_notices(&env).await;
    console(&ops, &format!("KILL_TENANT {T1}"))
        .await
        .expect("KILL_TENANT");
    assert_eq!(
        notices.lock().unwrap().as_slice(),
        [format!("3 session(s) of tenant {T1} ended")]
    );

    // The running statement ends now (it would sleep a minute), cancelled on the server;
    // the queued one ends without running; the idle session is closed.
    let code = |h: tokio::task::JoinHandle<Option<String>>| async move {
        tokio::time::timeout(LIMIT, h)
            .await
            .expect("never ended")
            .unwrap()
    };
    assert_eq!(code(sleeping).await.as_deref(), Some("57P01"));
    assert_eq!(code(queued).await.as_deref(), Some("57P01"));
    let closed = eventually(LIMIT, || idle.is_closed()).await;
    assert!(closed, "the idle session stayed open");
    assert!(
        running_reach(&env, "pg_sleep(60)", "0").await,
        "the statement kept running on the server"
    );

    // The other tenants' transactions are intact and commit.
    for c in [&t2, &t3] {
        assert_eq!(col(c, "SELECT 'still open'").await, ["still open"]);
        col(c, "COMMIT").await;
    }
    env.check_own(&t2, T2, "t2").await;
    // No session of T1 is left, and T1 logs in again with its own rows only.
    let rows = ops
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    let t1_left = rows
        .iter()
        .filter(|m| matches!(m, Msg::Row(r) if r.get("tenant") == Some(T1)))
        .count();
    assert_eq!(t1_left, 0);
    let again = env.login("t1").await;
    env.check_own(&again, T1, "t1 again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_one_session_and_tenants_cannot_kill() {
    let env = start().await;
    let t1 = env.login("t1").await;
    let t2 = env.login("t2").await;
    let other_t2 = env.login("t2").await;
    col(&t2, "BEGIN").await;
    col(&t2, "SELECT count(*) FROM base_entity").await;

    // A tenant's KILL_TENANT or KILL_CLIENT is SQL for PostgreSQL, which knows neither.
    for attempt in [format!("KILL_TENANT {T2}"), "KILL_CLIENT 1".into()] {
        let e = fails(&t1, &attempt).await;
        assert!(e.starts_with("42601"), "{attempt}: {e}");
    }
    assert_eq!(col(&t2, "SELECT 'alive'").await, ["alive"]);

    let ops = console_as(&env, "ops").await.expect("console");
    let rows = ops
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    let pid_of_t2_in_transaction = rows
        .iter()
        .find_map(|m| match m {
            Msg::Row(r) if r.get("user") == Some("t2") && r.get("state") == Some("active") => {
                r.get("pid").map(str::to_owned)
            }
            _ => None,
        })
        .expect("t2's session in SHOW CLIENTS");
    console(&ops, &format!("KILL_CLIENT {pid_of_t2_in_transaction}"))
        .await
        .expect("KILL_CLIENT");
    let e = fails(&t2, "SELECT 1").await;
    assert!(
        e.starts_with("57P01") || e.contains("closed"),
        "the killed session: {e}"
    );
    // The same tenant's other session and another tenant's go on.
    assert_eq!(col(&other_t2, "SELECT 'alive'").await, ["alive"]);
    assert_eq!(col(&t1, "SELECT 'alive'").await, ["alive"]);

    for (command, code) in [
        ("KILL_CLIENT 4000000000", "42704"),
        ("KILL_CLIENT", "42601"),
        ("KILL_TENANT 42", "42601"),
    ] {
        let e = console(&ops, command).await.expect_err(command);
        assert!(e.starts_with(code), "{command}: {e}");
    }
    // The console goes on after its errors.
    assert!(console(&ops, "SHOW VERSION").await.is_ok());
}

/// A session streaming a large result (the server's reads are always ready, ahead of the
/// kill's branch) still ends at once, and its statement is cancelled on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_reaches_a_session_streaming_a_large_result() {
    const COPY: &str = "COPY (SELECT generate_series(1, 2000000000)) TO STDOUT";
    let env = start().await;
    let port = env.proxy.port;
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let streaming = tokio::task::spawn_blocking(move || {
        let mut r = Raw::login(port, "t2m", &pw("t2m"));
        pid_tx.send(r.key.0).unwrap();
        r.send(&q(COPY));
        let mut rows = 0u64;
        loop {
            match r.recv() {
                Some((b'd', _)) => rows += 1,
                Some((b'E', body)) => return (rows, crate::common::error_field(&body, b'C')),
                Some(_) => {}
                None => return (rows, None),
            }
        }
    });
    let pid = pid_rx.recv().unwrap();
    assert!(
        running_reach(&env, "generate_series(1, 2000000000)", "1").await,
        "the COPY never started"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill_client(&env, pid).await;
    let (rows, code) = tokio::time::timeout(LIMIT, streaming)
        .await
        .expect("the stream went on after the kill")
        .unwrap();
    assert!(rows > 0, "nothing streamed before the kill");
    assert_eq!(code.as_deref(), Some("57P01"));
    assert!(
        running_reach(&env, "generate_series(1, 2000000000)", "0").await,
        "the COPY kept running on the server"
    );
}

/// The pids SHOW CLIENTS lists for `user`.
async fn pids_of(console: &Client, user: &str) -> Vec<String> {
    let rows = console
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    rows.iter()
        .filter_map(|m| match m {
            Msg::Row(r) if r.get("user") == Some(user) => r.get("pid").map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// The `tenant` column of a SHOW's rows.
async fn tenant_column(console: &Client, show: &str) -> Vec<String> {
    let rows = console.simple_query(show).await.expect(show);
    rows.iter()
        .filter_map(|m| match m {
            Msg::Row(r) => r.get("tenant").map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// `admin.tenant_users`: a tenant's own console sees and ends its tenant's sessions only;
/// another tenant's sessions are invisible to it, and the pools' commands are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_console_sees_and_ends_its_own_sessions_only() {
    let ids = [T1, T2, T3].map(String::from);
    let scoped = |c: String| c + "admin: { users: [ops], tenant_users: [t1] }\n";
    let env = Env::start(POOL, "", OPS, &ids, scoped).await;
    let t1_idle = env.login("t1").await;
    let t1_open = env.login("t1").await;
    col(&t1_open, "BEGIN").await;
    col(&t1_open, "SELECT count(*) FROM base_entity").await;
    let t2 = env.login("t2").await;
    col(&t2, "BEGIN").await;
    col(&t2, "SELECT count(*) FROM base_entity").await;

    let ops = console_as(&env, "ops").await.expect("ops");
    let t2_pid = pids_of(&ops, "t2").await.pop().expect("t2 in SHOW CLIENTS");
    let mine = console_as(&env, "t1").await.expect("t1's console");
    let refused = console_as(&env, "t2").await.expect_err("t2 is not listed");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // It sees its own tenant's sessions, no other.
    assert_eq!(tenant_column(&mine, "SHOW CLIENTS").await, [T1, T1]);
    assert_eq!(tenant_column(&mine, "SHOW TENANTS").await, [T1]);

    // Nothing about the pools or other tenants, and no operator command.
    for command in [
        "SHOW POOLS",
        "SHOW STATS",
        "SHOW SERVERS",
        "SHOW DATABASES",
        "SHOW USERS",
        "SHOW CONFIG",
        "SHOW LISTS",
        "PAUSE",
        "RESUME",
        "RELOAD",
        "RECONNECT",
        "SHUTDOWN",
        &format!("KILL_TENANT {T2}"),
    ] {
        let e = console(&mine, command).await.expect_err(command);
        assert!(e.starts_with("42501"), "{command}: {e}");
    }
    // Another tenant's session is one it cannot find.
    let e = console(&mine, &format!("KILL_CLIENT {t2_pid}"))
        .await
        .unwrap_err();
    assert!(e.starts_with("42704"), "{e}");
    assert_eq!(col(&t2, "SELECT 'alive'").await, ["alive"]);

    // Its own: one session, then the whole tenant.
    let rows = mine.simple_query("SHOW CLIENTS").await.unwrap();
    let open_pid = rows
        .iter()
        .find_map(|m| match m {
            Msg::Row(r) if r.get("state") == Some("active") => r.get("pid").map(str::to_owned),
            _ => None,
        })
        .expect("t1's session in its transaction");
    console(&mine, &format!("KILL_CLIENT {open_pid}"))
        .await
        .expect("its own session");
    let e = fails(&t1_open, "SELECT 1").await;
    assert!(e.starts_with("57P01") || e.contains("closed"), "{e}");
    assert_eq!(col(&t1_idle, "SELECT 'alive'").await, ["alive"]);
    console(&mine, &format!("KILL_TENANT {T1}"))
        .await
        .expect("its own tenant");
    assert!(eventually(LIMIT, || t1_idle.is_closed()).await);
    // The other tenant's transaction is untouched; the tenant's console goes on.
    assert_eq!(col(&t2, "SELECT 'still open'").await, ["still open"]);
    col(&t2, "COMMIT").await;
    assert!(console(&mine, "SHOW VERSION").await.is_ok());
}

/// A client that stops halfway through a message is killed like an idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_reaches_a_client_stopped_halfway_through_a_message() {
    let env = start().await;
    let port = env.proxy.port;
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let stopped = tokio::task::spawn_blocking(move || {
        let mut r = Raw::login(port, "t2m", &pw("t2m"));
        pid_tx.send(r.key.0).unwrap();
        // A Query that says it has 100 bytes, and 10 of them.
        r.send(&[&b"Q"[..], &104u32.to_be_bytes(), b"SELECT 1; "].concat());
        r.recv()
    });
    let pid = pid_rx.recv().unwrap();
    // The half message arrives first (were the kill first, the session would be idle).
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill_client(&env, pid).await;
    let answer = tokio::time::timeout(LIMIT, stopped)
        .await
        .expect("the kill never reached the client")
        .unwrap();
    let (tag, body) = answer.expect("an answer before the close");
    assert_eq!(tag, b'E');
    assert_eq!(
        crate::common::error_field(&body, b'C').as_deref(),
        Some("57P01")
    );
}

/// A session whose client stopped reading, with the relay waiting to write a large result
/// to it, ends at the kill rather than at the role's idle-in-transaction limit (60 s here,
/// beyond the test's limit), and its statement stops on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_reaches_a_session_whose_client_stopped_reading() {
    const COPY: &str = "COPY (SELECT generate_series(1, 2000000000)) TO STDOUT";
    let env = start().await;
    let mut r = Raw::login(env.proxy.port, "t2m", &pw("t2m"));
    let pid = r.key.0.to_string();
    r.send(&q(COPY));
    assert!(
        running_reach(&env, "generate_series(1, 2000000000)", "1").await,
        "the COPY never started"
    );
    let ops = console_as(&env, "ops").await.expect("console");
    // The client reads nothing: the sockets between it and the server fill, and the relay
    // waits to write. The wait is on the proxy's side once the server waits too.
    let server_waits = "SELECT count(*) FROM pg_stat_activity \
         WHERE query LIKE '%generate_series(1, 2000000000)%' AND wait_event = 'ClientWrite'";
    let until = Instant::now() + LIMIT;
    while env.su1(server_waits).await != "1" {
        assert!(Instant::now() < until, "the server never waited to write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    console(&ops, &format!("KILL_CLIENT {pid}"))
        .await
        .expect("KILL_CLIENT");
    assert!(
        running_reach(&env, "generate_series(1, 2000000000)", "0").await,
        "the COPY kept running on the server after the kill"
    );
    let until = Instant::now() + LIMIT;
    while pids_of(&ops, "t2m").await.contains(&pid) {
        assert!(Instant::now() < until, "the killed session is still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(r);
}

/// A kill that lands while a large row is halfway to its client waits for the row's end:
/// the 57P01 written after half a message would be read as the row's rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_halfway_through_a_row_ends_the_session_after_the_row() {
    const LEN: usize = 20_000_000;
    let env = start().await;
    let port = env.proxy.port;
    let (paused_tx, paused_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut r = Raw::login(port, "t2m", &pw("t2m"));
        r.send(&q(&format!("SELECT repeat('x', {LEN})")));
        assert_eq!(r.recv().map(|m| m.0), Some(b'T'));
        let mut head = [0u8; 5];
        r.s.read_exact(&mut head).unwrap();
        assert_eq!(head[0], b'D');
        let mut row = vec![0; u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
        r.s.read_exact(&mut row[..1 << 20]).unwrap();
        // Stops reading: the relay waits to write, with most of the row still to come.
        paused_tx.send(r.key.0).unwrap();
        go_rx.recv().unwrap();
        let whole = r.s.read_exact(&mut row[1 << 20..]).is_ok();
        let value_ok = row.len() == 2 + 4 + LEN && row[6..].iter().all(|&b| b == b'x');
        // What follows the row (its CommandComplete, maybe) up to the kill's error.
        let mut next = r.recv();
        while next.as_ref().is_some_and(|m| m.0 != b'E') {
            next = r.recv();
        }
        (whole && value_ok, next)
    });
    let pid = paused_rx.recv().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill_client(&env, pid).await;
    go_tx.send(()).unwrap();
    let (row_whole, next) = tokio::time::timeout(LIMIT, reader)
        .await
        .expect("the reader never finished")
        .unwrap();
    assert!(row_whole, "the row was cut or garbled by the kill");
    let (tag, body) = next.expect("the kill's error after the row");
    assert_eq!(tag, b'E');
    assert_eq!(
        crate::common::error_field(&body, b'C').as_deref(),
        Some("57P01")
    );
}
