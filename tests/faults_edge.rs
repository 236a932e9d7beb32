//! Faults at the edges of the proxy's timeouts, against a real PostgreSQL: a backend that
//! stops answering (frozen, as behind a network partition or a hung host) while a client's
//! command runs.

use crate::common;

use common::client::{backend_pid, blocking, connect, eventually, one, LIMIT};
use common::raw::{copy_data, copy_done, pbe, q, sum, sync, Raw, MD5_USERS};
use common::{error_field, proxy_config, send_signal, PgServer, ProxyProcess, USERS_YAML};

use std::io::Write;
use std::time::Duration;

/// PostgreSQL and a proxy whose read role has a command_timeout_ms of `ms`.
fn with_read_timeout(ms: u64, users: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "default_pool_size: 2\nmin_pool_size: 0").replace(
        "read:  { command_timeout_ms: 10000,",
        &format!("read:  {{ command_timeout_ms: {ms},"),
    );
    assert!(cfg.contains(&format!("command_timeout_ms: {ms},")), "{cfg}");
    (pg, ProxyProcess::start(&cfg, users))
}

/// [`with_read_timeout`] (md5 users) and a table `k` that `app_ro` may COPY into, whose
/// row trigger sleeps 60 s: the backend stops reading the COPY's data at its first row.
fn with_slow_copy_table(ms: u64) -> (PgServer, ProxyProcess) {
    let (pg, proxy) = with_read_timeout(ms, MD5_USERS);
    pg.psql(
        "launch",
        "CREATE TABLE k (x text); GRANT ALL ON k TO app_ro; \
         CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON k FOR EACH ROW EXECUTE FUNCTION slow_row();",
    );
    (pg, proxy)
}

/// Logs `app_ro` in through the proxy and starts a COPY into [`with_slow_copy_table`]'s
/// table; returns once its first row holds the backend in the trigger's sleep: the client
/// connection and that backend's pid.
async fn start_held_copy(pg: &PgServer, proxy: &ProxyProcess) -> (Raw, String) {
    let mut raw = blocking(|| Raw::login(proxy.port, "app_ro", "approp"));
    // The tenant switch goes with this one; the COPY then goes alone.
    assert_eq!(blocking(|| raw.col0("SELECT 1")), ["1"]);
    assert_eq!(blocking(|| raw.start_copy(&q("COPY k FROM STDIN"))), "G");
    raw.send(&copy_data(b"first\n"));
    let pid = backend_pid(pg, "usename = 'app_ro' AND wait_event = 'PgSleep'").await;
    (raw, pid)
}

/// Stops (SIGSTOP) the backend running `app_ro`'s `SELECT pg_sleep(60)`; its pid.
async fn freeze_the_sleeper(pg: &PgServer) -> String {
    let pid = backend_pid(
        pg,
        "usename = 'app_ro' AND query LIKE '%SELECT pg_sleep(60)'",
    )
    .await;
    assert!(send_signal(&pid, "STOP"), "kill -s STOP {pid}");
    pid
}

/// Sends `frame` over and over behind what `raw` sent, 64 MiB of it, then `last`, from a
/// thread of its own: the writes block once every buffer on the way is full, and end when
/// the proxy closes the connection. Joined, it says how many bytes of `frame` went out.
fn push_64_mib(raw: &Raw, frame: Vec<u8>, last: Vec<u8>) -> std::thread::JoinHandle<usize> {
    let mut writer = raw.s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < 64 << 20 && writer.write_all(&frame).is_ok() {
            sent += frame.len();
        }
        let _ = writer.write_all(&last);
        sent
    })
}

/// The backend running a client's command stops answering (SIGSTOP: it takes neither the
/// command's result nor the proxy's cancel, as a host behind a partition). The read role's
/// command_timeout_ms (1 s) still ends the client's wait: the cancel goes unanswered for
/// `UNANSWERED_CANCEL` (5 s), the proxy closes that server connection and answers 08006,
/// saying the command's outcome is unknown (57014 would say it was rolled back), and it
/// serves on meanwhile and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_ends_the_wait_on_a_frozen_backend() {
    let (pg, proxy) = with_read_timeout(1000, USERS_YAML);
    let ro = connect(&proxy, "app_ro", "approp").await.unwrap();
    let client = ro.client;
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let pid = freeze_the_sleeper(&pg).await;
    let other = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(
        one(&other.client, "SELECT 2").await,
        "2",
        "served during the freeze"
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), query).await;
    assert!(send_signal(&pid, "CONT"), "kill -s CONT {pid}");
    let answer = answer.expect("the client still waits 20 s after its 1 s command timeout");
    let err = answer
        .unwrap()
        .expect_err("the frozen command cannot have succeeded");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(
        db.message().contains("command_timeout_ms (1000 ms)"),
        "{db:?}"
    );
    assert!(db.detail().is_some_and(|d| d.contains("unknown")), "{db:?}");
    let again = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(one(&again.client, "SELECT 1").await, "1");
    drop(blocking(|| pg.psql("postgres", "SELECT 1")));
}

/// Parse/Bind/Execute without Flush or Sync ask the server for nothing yet: PostgreSQL
/// holds the results until one comes and ignores a cancel while it waits for the client.
/// Past command_timeout_ms and `UNANSWERED_CANCEL` the proxy still keeps the healthy
/// server: the Sync gets the results (before, the client got FATAL 08006).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_yet_asked_to_answer_is_not_given_up() {
    let (_pg, proxy) = with_read_timeout(500, MD5_USERS);
    let mut raw = blocking(|| Raw::login(proxy.port, "app_ro", "approp"));
    blocking(|| raw.send(&pbe("SELECT 42", &[])));
    // The timeout, its cancel, UNANSWERED_CANCEL (5 s) and a margin.
    tokio::time::sleep(Duration::from_millis(500 + 5000 + 2000)).await;
    let answer = blocking(|| {
        raw.send(&sync());
        sum(&raw.until_ready_or_eof())
    });
    assert_eq!(answer, "12DC[SELECT 1]Zi");
    assert_eq!(blocking(|| raw.col0("SELECT 7")), ["7"]);
}

/// While PostgreSQL is down the manager keeps trying to open the warm minimum and clients
/// keep logging in and failing (57P03 within acquire_timeout_ms): neither leaks a file
/// descriptor nor grows the proxy, the client gauges return to zero, and once PostgreSQL
/// is back the warm minimum is open again and clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_retrying_logins_leaks_nothing() {
    let mut pg = PgServer::start();
    let pool = "default_pool_size: 4\nmin_pool_size: 3\nacquire_timeout_ms: 300\n\
                connect_retry_interval_ms: 20";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let warm = [("pool", "app"), ("state", "idle")];
    let idle3 =
        || common::metric(&proxy.metrics(), "launch_proxy_server_connections", &warm) == 3.0;
    assert!(eventually(LIMIT, idle3).await, "{}", proxy.metrics());
    let (fds_before, rss_before) = (proxy.open_fds(), proxy.rss_kib());
    blocking(|| pg.stop());
    for round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let proxy = &proxy;
            tasks.push(async move {
                match connect(proxy, "app", "apppw").await {
                    Ok(c) => c.client.simple_query("SELECT 1").await.err(),
                    Err(e) => Some(e),
                }
            });
        }
        for e in futures_join(tasks).await {
            let e = e.expect("a query succeeded with PostgreSQL down");
            let code = e.as_db_error().map(|d| d.code().code().to_owned());
            assert_eq!(code.as_deref(), Some("57P03"), "round {round}: {e:?}");
        }
    }
    let after_outage = proxy.open_fds();
    assert!(
        after_outage <= fds_before,
        "fds {after_outage} during the outage vs {fds_before} before (3 warm connections gone)"
    );
    let rss = proxy.rss_kib();
    assert!(
        rss < rss_before + 16 * 1024,
        "RSS {rss} KiB vs {rss_before} KiB before"
    );
    blocking(|| pg.restart());
    assert!(eventually(LIMIT, idle3).await, "{}", proxy.metrics());
    let c = connect(&proxy, "app", "apppw").await.unwrap();
    assert_eq!(one(&c.client, "SELECT 1").await, "1");
    drop(c);
    let settled = eventually(LIMIT, || {
        let m = proxy.metrics();
        let g = |s| {
            common::metric(
                &m,
                "launch_proxy_client_connections",
                &[("pool", "app"), ("state", s)],
            )
        };
        g("waiting") == 0.0
            && g("active") == 0.0
            && common::metric(&m, "launch_proxy_clients_connected", &[]) == 0.0
            && proxy.open_fds() <= fds_before
    })
    .await;
    assert!(
        settled,
        "fds {} vs {fds_before}: {}",
        proxy.open_fds(),
        proxy.metrics()
    );
}

/// Runs the futures concurrently on this task; their outputs in order.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// A client's session parameter that the next server connection refuses (temp_buffers,
/// once another client used a temporary table there): the proxy's own SET fails in front
/// of the client's INSERT. The client must never be told its INSERT failed when it ran and
/// committed (a retrying application would insert twice; before the fix it got ERROR
/// 22023 and the row was there): the INSERT does not run, and the client gets the server's
/// 22023, and the application logging in again goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_parameter_never_hides_a_commit() {
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE ins (id int); GRANT ALL ON ins TO app;",
    );
    let pool = "default_pool_size: 1\nmin_pool_size: 1\nmax_active: 0";
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS_YAML);
    let a = connect(&proxy, "app", "apppw").await.unwrap();
    let b = connect(&proxy, "app", "apppw").await.unwrap();
    one(&a.client, "SET temp_buffers = '16MB'").await;
    assert_eq!(one(&b.client, "SHOW temp_buffers").await, "8MB");
    one(&b.client, "CREATE TEMP TABLE tt (x int)").await;
    one(&b.client, "INSERT INTO tt VALUES (1)").await;
    let insert = common::client::try_col(&a.client, "INSERT INTO ins VALUES (1)").await;
    let rows = pg.psql("launch", "SELECT count(*) FROM ins");
    let err = insert.expect_err("temp_buffers cannot be set on that connection");
    assert_eq!(
        rows, "0",
        "the INSERT ran and committed, but the client got {err:?}"
    );
    let code = err.as_db_error().map(|d| d.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("22023"), "{err:?}");
    let again = connect(&proxy, "app", "apppw").await.unwrap();
    one(&again.client, "INSERT INTO ins VALUES (2)").await;
    assert_eq!(
        pg.psql("launch", "SELECT string_agg(id::text, ',') FROM ins"),
        "2"
    );
}

/// The same frozen backend, with the relay in a write the server does not take: the client
/// pipelines megabytes of queries behind its running command, more than the server's
/// socket holds. The wait in that write is raced against the give-up too (before, only the
/// relay's wait for replies was, and the client waited for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_ends_a_write_the_frozen_backend_does_not_take() {
    let (pg, proxy) = with_read_timeout(1000, MD5_USERS);
    let mut raw = blocking(|| Raw::login(proxy.port, "app_ro", "approp"));
    // The tenant switch goes with this one; the sleep then goes alone, and what follows it
    // is not held back for the switch's answer.
    assert_eq!(blocking(|| raw.col0("SELECT 1")), ["1"]);
    blocking(|| raw.send(&q("SELECT pg_sleep(60)")));
    let pid = freeze_the_sleeper(&pg).await;
    // 64 MiB of queries; the writer blocks once every buffer on the way is full, and ends
    // when the proxy closes the connection.
    let pad = "-".repeat(256 * 1024);
    let pushing = push_64_mib(&raw, q(&format!("SELECT 1 /* {pad} */")), Vec::new());
    let other = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(
        one(&other.client, "SELECT 2").await,
        "2",
        "served during the freeze"
    );
    raw.s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = blocking(|| raw.recv());
    assert!(send_signal(&pid, "CONT"), "kill -s CONT {pid}");
    let (tag, body) = answer.expect("no answer 30 s after the 1 s command timeout");
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'C').as_deref(), Some("08006"));
    let sent = blocking(|| pushing.join().unwrap());
    assert!(
        sent > 4 << 20,
        "only {sent} bytes went out: the write never blocked"
    );
    let again = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(one(&again.client, "SELECT 1").await, "1");
}

/// A COPY FROM STDIN whose server stops taking the data is timed out as a command that
/// does not answer (the server owes no answer during COPY IN, so only a blocked write
/// tells): a row trigger sleeps, PostgreSQL stops reading, the client pushes 64 MiB
/// behind it and the proxy's write waits. After the read role's command_timeout_ms the
/// cancel ends the COPY with the proxy's 57014, nothing of it is committed, and the
/// connection serves the next statement. The same with the backend frozen (SIGSTOP,
/// the cancel unanswered): 08006, while another client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_ends_a_copy_the_server_stops_taking() {
    let (pg, proxy) = with_slow_copy_table(1000);
    for frozen in [false, true] {
        let (mut raw, pid) = start_held_copy(&pg, &proxy).await;
        if frozen {
            assert!(send_signal(&pid, "STOP"), "kill -s STOP {pid}");
        }
        let chunk = copy_data(&b"more\n".repeat(50_000));
        let pushing = push_64_mib(&raw, chunk, copy_done());
        if frozen {
            let other = connect(&proxy, "app_ro", "approp").await.unwrap();
            assert_eq!(
                one(&other.client, "SELECT 2").await,
                "2",
                "served meanwhile"
            );
        }
        raw.s
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let answer = blocking(|| raw.until_ready_or_eof());
        if frozen {
            assert!(send_signal(&pid, "CONT"), "kill -s CONT {pid}");
        }
        let sent = blocking(|| pushing.join().unwrap());
        let (_, body) = answer
            .iter()
            .find(|(tag, _)| *tag == b'E')
            .unwrap_or_else(|| {
                panic!(
                    "frozen={frozen}: no error 30 s after the 1 s command timeout: {}",
                    sum(&answer)
                )
            });
        let want = if frozen { "08006" } else { "57014" };
        assert_eq!(
            error_field(body, b'C').as_deref(),
            Some(want),
            "frozen={frozen}"
        );
        let message = error_field(body, b'M').unwrap_or_default();
        assert!(message.contains("command"), "frozen={frozen}: {message}");
        assert!(
            sent > 4 << 20,
            "frozen={frozen}: only {sent} bytes went out: the write never blocked"
        );
        if !frozen {
            assert_eq!(answer.last().map(|m| m.0), Some(b'Z'), "{}", sum(&answer));
            assert_eq!(blocking(|| raw.col0("SELECT 'next'")), ["next"]);
        }
        assert_eq!(pg.psql("launch", "SELECT count(*) FROM k"), "0");
    }
    let again = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(one(&again.client, "SELECT 1").await, "1");
}

/// A backend ended while the proxy is still writing a client's messages to it (a COPY's
/// data, here behind a row trigger that sleeps, as behind a lock): PostgreSQL sends its
/// FATAL and closes with the data unread, so the close comes back as a reset and the
/// proxy's write fails before it reads the FATAL (made certain by stopping the proxy while
/// the backend ends). The client gets that FATAL, 57P01 with PostgreSQL's words, not a
/// bare 08006; nothing of the COPY is committed, and the proxy serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_ended_under_a_blocked_write_tells_the_client_why() {
    let (pg, proxy) = with_slow_copy_table(60_000);
    let (mut raw, pid) = start_held_copy(&pg, &proxy).await;
    let write_waits = || {
        let body = proxy.metrics();
        common::metric(
            &body,
            "launch_proxy_server_write_waits_total",
            &[("pool", "app_ro")],
        )
    };
    let before = blocking(write_waits);
    let chunk = copy_data(&b"more\n".repeat(50_000));
    let pushing = push_64_mib(&raw, chunk, copy_done());
    assert!(
        eventually(LIMIT, || write_waits() > before).await,
        "the proxy's write to the server never waited"
    );
    // The proxy is stopped while the backend ends, so that the FATAL and the reset are both
    // waiting when it runs again (otherwise it would mostly read the FATAL first, as it
    // reads the server while its write waits, and the failed write would go untested).
    proxy.signal("STOP");
    assert_eq!(
        pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})")),
        "t"
    );
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    let ended = eventually(LIMIT, || pg.psql("postgres", &gone) == "0").await;
    proxy.signal("CONT");
    assert!(ended, "backend {pid} did not end");
    raw.s
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = blocking(|| raw.until_ready_or_eof());
    let sent = blocking(|| pushing.join().unwrap());
    assert!(
        sent > 4 << 20,
        "only {sent} bytes went out: the write never blocked"
    );
    let (_, body) = answer
        .iter()
        .find(|(tag, _)| *tag == b'E')
        .unwrap_or_else(|| panic!("no error: {}", sum(&answer)));
    assert_eq!(
        error_field(body, b'C').as_deref(),
        Some("57P01"),
        "{:?}",
        error_field(body, b'M')
    );
    assert_eq!(error_field(body, b'S').as_deref(), Some("FATAL"));
    let message = error_field(body, b'M').unwrap_or_default();
    assert!(message.contains("administrator command"), "{message}");
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM k"), "0");
    let again = connect(&proxy, "app_ro", "approp").await.unwrap();
    assert_eq!(one(&again.client, "SELECT 1").await, "1");
}
