//! What one client must not be able to do to the proxy or to the others, found by two
//! red-team reviews and tested against a real PostgreSQL: statements of a client that hung
//! up while queued, a pool starved at `max_db_connections`, a connection held between a
//! message and its Sync or by a client that stops reading, session parameters by the ten
//! thousand, messages piled up behind a held one, and statement names of megabytes.

use crate::common;

use common::client::{app, blocking, connect, eventually, one, try_col, LIMIT};
use common::{metric, proxy_config, PgServer, ProxyProcess};
use launch_proxy::auth::md5::{md5_client_response, md5_stored_hash};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, timeout};

/// The shipped users plus an md5 user on `app`'s pool, which the wire client can log in as.
const USERS: &str = "\
users:
  app:    { password: \"apppw\", role: write }
  app_ro: { password: \"approp\", role: read }
  mdu:    { password: \"mdpw\", role: write, auth: md5, server_user: app }
";

fn connects(proxy: &ProxyProcess, pool: &str) -> f64 {
    let m = proxy.metrics();
    metric(
        &m,
        "launch_proxy_server_connects_total",
        &[("pool", pool), ("result", "ok")],
    )
}

fn start(pool: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, pool), USERS);
    (pg, proxy)
}

/// One write-role connection, pool of one, the role's idle-in-transaction timeout at 1 s
/// and its command timeout at `command_ms`.
fn start_short(pg: &PgServer, command_ms: u64) -> ProxyProcess {
    let pool = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
                acquire_timeout_ms: 20000";
    let from = "write: { command_timeout_ms: 30000, statement_timeout_ms: 60000, \
                idle_in_transaction_timeout_ms: 60000 }";
    let cfg = proxy_config(pg, pool);
    assert!(cfg.contains(from));
    let to = format!(
        "write: {{ command_timeout_ms: {command_ms}, statement_timeout_ms: 60000, \
         idle_in_transaction_timeout_ms: 1000 }}"
    );
    ProxyProcess::start(&cfg.replace(from, &to), USERS)
}

// ------------------------------------------------------------------ the wire client

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &((body.len() + 4) as u32).to_be_bytes(), body].concat()
}

fn z(s: &[u8]) -> Vec<u8> {
    [s, &[0]].concat()
}

fn parse(name: &[u8], sql: &str) -> Vec<u8> {
    frame(b'P', &[z(name), z(sql.as_bytes()), vec![0, 0]].concat())
}

fn bind_execute(name: &[u8]) -> Vec<u8> {
    let bind = frame(b'B', &[z(b""), z(name), vec![0; 6]].concat());
    [bind, frame(b'E', &[0; 5])].concat()
}

/// The `C` field of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> Option<String> {
    let field = body.split(|&b| b == 0).find(|f| f.first() == Some(&b'C'))?;
    Some(String::from_utf8_lossy(&field[1..]).into_owned())
}

const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];
const FLUSH: [u8; 5] = [b'H', 0, 0, 0, 4];

struct Wire {
    s: TcpStream,
}

impl Wire {
    /// Logs in as the md5 user `mdu`.
    fn login(port: u16) -> Wire {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = Wire { s };
        let params = [&b"user"[..], b"mdu", b"database", b"launch"]
            .map(z)
            .concat();
        let body = [&196_608u32.to_be_bytes()[..], &params, &[0]].concat();
        w.send(&[&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat());
        loop {
            match w.read().expect("closed during login") {
                (b'R', b) if b[..4] == [0, 0, 0, 5] => {
                    let stored = md5_stored_hash("mdu", "mdpw");
                    let answer = md5_client_response(&stored, b[4..8].try_into().unwrap());
                    w.send(&frame(b'p', &z(answer.as_bytes())));
                }
                (b'Z', _) => return w,
                (b'E', b) => panic!("login: {}", String::from_utf8_lossy(&b)),
                _ => {}
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h).ok()?;
        let mut b = vec![0; u32::from_be_bytes(h[1..5].try_into().unwrap()) as usize - 4];
        self.s.read_exact(&mut b).ok()?;
        Some((h[0], b))
    }

    /// Tags up to `tag`, then the first error's SQLSTATE, if any.
    fn until(&mut self, tag: u8) -> (Vec<u8>, Option<String>) {
        let (mut tags, mut error) = (Vec::new(), None);
        loop {
            let (t, body) = self.read().expect("closed");
            tags.push(t);
            if t == b'E' && error.is_none() {
                error = sqlstate(&body);
            }
            if t == tag {
                return (tags, error);
            }
        }
    }

    /// What arrives until the proxy closes the socket: the SQLSTATE of the last error.
    fn last_error(&mut self) -> Option<String> {
        let mut error = None;
        while let Some((t, body)) = self.read() {
            if t == b'E' {
                error = sqlstate(&body);
            }
        }
        error
    }
}

// ------------------------------------------------------------------------- the tests

/// A pool of one connection, held for a second by a sleeping client (`h`), and an empty
/// table `table` that app may write.
async fn pool_of_one_held_for_a_second(
    table: &str,
) -> (
    PgServer,
    ProxyProcess,
    tokio::task::JoinHandle<common::client::Conn>,
) {
    let (pg, proxy) = start(
        "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
         acquire_timeout_ms: 20000",
    );
    pg.psql(
        "launch",
        &format!("CREATE TABLE {table} (id int); GRANT ALL ON {table} TO app"),
    );
    let holder = app(&proxy).await;
    let h = tokio::spawn(async move {
        one(&holder.client, "SELECT pg_sleep(1)::text").await;
        holder
    });
    sleep(Duration::from_millis(200)).await;
    (pg, proxy, h)
}

/// Clients that hang up while queued for the only connection leave the queue: their
/// INSERTs never run, and no server connection is opened or spent on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_clients_that_hung_up_while_queued_never_run() {
    let (pg, proxy, h) = pool_of_one_held_for_a_second("ghost").await;
    let before = blocking(|| connects(&proxy, "app"));
    for _ in 0..5 {
        let c = app(&proxy).await;
        let client = c.client;
        let q =
            tokio::spawn(async move { client.simple_query("INSERT INTO ghost VALUES (1)").await });
        sleep(Duration::from_millis(50)).await;
        c.task.abort();
        q.abort();
    }
    timeout(LIMIT, h).await.expect("holder hangs").unwrap();
    let live = app(&proxy).await;
    assert_eq!(one(&live.client, "SELECT 'live'").await, "live");
    let waiting = || {
        let m = proxy.metrics();
        let labels = [("pool", "app"), ("state", "waiting")];
        metric(&m, "launch_proxy_client_connections", &labels) == 0.0
    };
    assert!(eventually(LIMIT, waiting).await, "{}", proxy.metrics());
    assert_eq!(pg.psql("launch", "SELECT count(*) FROM ghost"), "0");
    assert_eq!(
        blocking(|| connects(&proxy, "app")),
        before,
        "connections spent"
    );
}

/// Two pools at `max_db_connections`: a busy pool yields a connection to the one whose
/// client waits, and does not take the freed slot back (which starved the other pool's
/// logins into 53300 while reconnecting on nearly every transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_starved_at_max_db_connections_gets_a_connection() {
    let (_pg, proxy) = start(
        "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0\nmax_active: 0\n\
         max_db_connections: 2\nacquire_timeout_ms: 3000",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..8 {
        let c = app(&proxy).await;
        let stop = stop.clone();
        busy.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                try_col(&c.client, "SELECT pg_sleep(0.02)")
                    .await
                    .expect("app query");
            }
        }));
    }
    sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let ro = connect(&proxy, "app_ro", "approp").await;
        let ro = ro.unwrap_or_else(|e| panic!("app_ro login {i}: {e}"));
        let r = try_col(&ro.client, "SELECT 1").await;
        assert!(r.is_ok(), "app_ro query {i}: {r:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.await.unwrap();
    }
}

/// A client that goes quiet between a message and its Sync holds a connection PostgreSQL
/// never times out (its idle-in-transaction timer starts at ReadyForQuery): the proxy cuts
/// it at the role's idle_in_transaction_timeout_ms with PostgreSQL's 25P03, and the next
/// client gets the connection. Both a Flush that got its answer and a lone Parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_client_between_a_message_and_its_sync_is_cut() {
    let pg = PgServer::start();
    let proxy = start_short(&pg, 30_000);
    let next = app(&proxy).await;
    for quiet in [
        [parse(b"", "SELECT 1"), bind_execute(b""), FLUSH.to_vec()].concat(),
        parse(b"", "SELECT 1"),
    ] {
        let mut w = blocking(|| Wire::login(proxy.port));
        w.send(&quiet);
        let error = blocking(|| w.last_error());
        assert_eq!(error.as_deref(), Some("25P03"));
        assert_eq!(one(&next.client, "SELECT 'next'").await, "next");
    }
    // Waiting, past that time, for a statement it flushed is not being quiet.
    let mut w = blocking(|| Wire::login(proxy.port));
    let sleeper = [
        parse(b"", "SELECT pg_sleep(2)"),
        bind_execute(b""),
        FLUSH.to_vec(),
    ];
    w.send(&sleeper.concat());
    assert_eq!(blocking(|| w.until(b'C')), (b"12DC".to_vec(), None));
    w.send(&SYNC);
    assert_eq!(blocking(|| w.until(b'Z')), (b"Z".to_vec(), None));
}

/// A client that stops reading a large result is dropped once it has taken nothing for the
/// role's idle-in-transaction time, and its connection goes to the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped() {
    let pg = PgServer::start();
    let proxy = start_short(&pg, 1000);
    let mut stuck = blocking(|| Wire::login(proxy.port));
    let sql = "SELECT repeat('x', 1000) FROM generate_series(1, 200000)";
    stuck.send(&frame(b'Q', &z(sql.as_bytes())));
    let next = app(&proxy).await;
    assert_eq!(one(&next.client, "SELECT 'next'").await, "next");
    drop(stuck);
}

/// A Query of 3,000 SETs completes, and the client's settings are followed up to a bound:
/// the first ones travel with it to another server connection, the rest stay where they
/// ran, which is reset before another client's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_are_followed_up_to_a_bound() {
    let (_pg, proxy) = start("default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0");
    let a = app(&proxy).await;
    let sets: String = (0..3000)
        .map(|k| format!("SET a.x{k} TO 'v{k}';"))
        .collect();
    try_col(&a.client, &sets).await.expect("3000 SETs");
    let shown = "SELECT current_setting('a.x0', true) || '/' || current_setting('a.x2999', true)";
    assert_eq!(
        one(&a.client, shown).await,
        "v0/v2999",
        "on its own connection"
    );
    let b = app(&proxy).await;
    let other = "SELECT coalesce(current_setting('a.x2999', true), '') || '.'";
    assert_eq!(
        one(&b.client, other).await,
        ".",
        "another client saw a's settings"
    );
    assert_eq!(
        one(&a.client, shown).await,
        "v0/",
        "after another client's reset"
    );
}

/// While a client's messages wait behind an unanswered Sync, the proxy reads only a
/// bounded amount more of it: 512 MiB sent behind a sleeping query do not grow its memory
/// by more than a fraction of that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_behind_a_held_one_do_not_pile_up() {
    let (_pg, proxy) = start("");
    let rss = || proxy.rss_kib() / 1024;
    let before = rss();
    let mut w = blocking(|| Wire::login(proxy.port));
    w.s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    w.send(
        &[
            frame(b'Q', &z(b"SELECT pg_sleep(5)")),
            parse(b"held", "SELECT 1"),
        ]
        .concat(),
    );
    let junk = frame(b'd', &vec![b'j'; 1 << 20]);
    blocking(|| {
        for _ in 0..512 {
            if w.s.write_all(&junk).is_err() {
                break; // pushed back
            }
        }
    });
    let during = rss();
    assert!(during < before + 128, "RSS {before} -> {during} MiB");
}

/// PostgreSQL keys prepared statements by the first 63 bytes of their names; so does the
/// proxy, which keeps no more of a name than that: a 1 MB name works, and another that
/// shares its first 63 bytes is the same statement (42P05 on a second Parse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_names_count_to_63_bytes_as_in_postgresql() {
    let (_pg, proxy) = start("");
    let mut w = blocking(|| Wire::login(proxy.port));
    let mut long = vec![b'n'; 1 << 20];
    w.send(&[parse(&long, "SELECT 1"), SYNC.to_vec()].concat());
    assert_eq!(blocking(|| w.until(b'Z')).1, None);
    long[100] = b'm';
    w.send(&[bind_execute(&long), SYNC.to_vec()].concat());
    let (tags, error) = blocking(|| w.until(b'Z'));
    assert_eq!(
        (tags, error),
        (b"2DCZ".to_vec(), None),
        "same statement by its first 63 bytes"
    );
    w.send(&[parse(&long, "SELECT 2"), SYNC.to_vec()].concat());
    assert_eq!(blocking(|| w.until(b'Z')).1.as_deref(), Some("42P05"));
}

fn close_stmt(name: &[u8]) -> Vec<u8> {
    frame(b'C', &[&b"S"[..], &z(name)].concat())
}

/// A client that floods messages the proxy answers itself (Close: CloseComplete) and reads
/// nothing is dropped at the role's idle-in-transaction time like one that stops reading a
/// result, and the next client gets the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_none_of_the_proxys_own_answers_is_dropped() {
    let pg = PgServer::start();
    let proxy = start_short(&pg, 1000);
    let w = blocking(|| Wire::login(proxy.port));
    w.s.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s = w.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let batch: Vec<u8> = (0..100_000).flat_map(|_| close_stmt(b"a")).collect();
        let mut sent = 0usize;
        for _ in 0..60 {
            if s.write_all(&batch).is_err() {
                break;
            }
            sent += batch.len();
        }
        let _ = s.write_all(&FLUSH);
        sent
    });
    sleep(Duration::from_secs(4)).await;
    let next = app(&proxy).await;
    let r = timeout(
        Duration::from_secs(10),
        try_col(&next.client, "SELECT 'next'"),
    )
    .await;
    blocking(move || sender.join().unwrap());
    assert!(matches!(r, Ok(Ok(_))), "next client could not run: {r:?}");
    drop(w);
}

/// A client that sends an INSERT and Terminate and closes while queued (PQsendQuery, then
/// PQfinish) ended cleanly: its INSERT runs, as on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sent_with_terminate_while_queued_runs() {
    let (pg, proxy, h) = pool_of_one_held_for_a_second("fire").await;
    let mut w = blocking(|| Wire::login(proxy.port));
    w.send(
        &[
            frame(b'Q', &z(b"INSERT INTO fire VALUES (1)")),
            frame(b'X', &[]),
        ]
        .concat(),
    );
    drop(w);
    timeout(LIMIT, h).await.expect("holder hangs").unwrap();
    sleep(Duration::from_millis(500)).await;
    // Control: the same without the pool being busy.
    let mut w = blocking(|| Wire::login(proxy.port));
    w.send(
        &[
            frame(b'Q', &z(b"INSERT INTO fire VALUES (2)")),
            frame(b'X', &[]),
        ]
        .concat(),
    );
    drop(w);
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM fire";
    let both = eventually(LIMIT, || pg.psql("launch", rows) == "1,2").await;
    assert!(both, "rows: {}", pg.psql("launch", rows));
}

/// A client that pipelines statements, sends Terminate and closes at once (PQsendQuery
/// several times, then PQfinish) has every statement run, as on a direct connection, where
/// PostgreSQL reads the Terminate only after them. The proxy must not close the server
/// connection under them: the first reply written to a closed socket draws a reset, and
/// PostgreSQL then ends the session before it runs the INSERT queued behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_pipelined_before_terminate_all_run() {
    let (pg, proxy) = start("default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0");
    pg.psql(
        "launch",
        "CREATE TABLE bye (id int); GRANT ALL ON bye TO app",
    );
    for id in 1..=3 {
        let mut w = blocking(|| Wire::login(proxy.port));
        w.send(
            &[
                frame(b'Q', &z(b"SELECT pg_sleep(0.3)")),
                frame(
                    b'Q',
                    &z(format!("INSERT INTO bye VALUES ({id})").as_bytes()),
                ),
                frame(b'X', &[]),
            ]
            .concat(),
        );
        drop(w);
    }
    let rows = "SELECT string_agg(id::text, ',' ORDER BY id) FROM bye";
    let all = eventually(LIMIT, || pg.psql("launch", rows) == "1,2,3").await;
    assert!(all, "rows: {}", pg.psql("launch", rows));
}

/// Silent sockets refused at max_client_conn hold no place: once a logged-in client leaves,
/// a new one gets in at once, not after their login timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_silent_sockets_hold_no_place() {
    let (_pg, proxy) =
        start("max_client_conn: 2\ndefault_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0");
    let a = app(&proxy).await;
    let b = app(&proxy).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap());
        sleep(Duration::from_millis(50)).await;
    }
    drop(b);
    sleep(Duration::from_millis(500)).await;
    let r = proxy.connect("app", "apppw").await;
    assert!(r.is_ok(), "refused with only one client logged in");
    drop((a, silent));
}
