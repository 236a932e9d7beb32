//! Wire-protocol behaviour through launch-proxy against a real PostgreSQL: simple and
//! extended queries, pipelines, COPY, notices, ParameterStatus, empty queries, errors,
//! large messages, FunctionCall, malformed input and CancelRequest. (psql, LISTEN/NOTIFY
//! and transaction-error tests live in tests/pooling.rs.)
//!
//! Raw-protocol clients log in with md5 (configured per user below) so that the test
//! needs no SCRAM implementation of its own; tokio-postgres clients use the same users.

use crate::common;

use common::raw::*;
use common::{error_field as field, proxy_config, PgServer, ProxyProcess};
use std::future::IntoFuture;
use std::io::Read;
use std::net::TcpStream;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::timeout;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSqlOwned, ToSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// One server connection per user: named statements (tokio-postgres `query`) stay valid.
const POOL1: &str = "default_pool_size: 1\nmin_pool_size: 0\nreserve_pool_size: 0";
const POOL2: &str = "default_pool_size: 2\nmin_pool_size: 0\nreserve_pool_size: 0";
const LONG: Duration = Duration::from_secs(60);

fn start(pool: &str, top_level: &str) -> (PgServer, ProxyProcess) {
    let pg = PgServer::start();
    let config = format!("{}{top_level}", proxy_config(&pg, pool));
    let proxy = ProxyProcess::start(&config, MD5_USERS);
    (pg, proxy)
}

// ---------------------------------------------------------------- tokio-postgres helpers

fn simple_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    let rows = msgs.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    rows.map(|r| (0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
        .collect()
}

/// Awaits `f` for at most 60 s: a proxy that loses a reply fails the test, never hangs it.
async fn bounded<F: IntoFuture>(f: F) -> F::Output {
    timeout(LONG, f).await.expect("no answer within 60 s")
}

async fn exec(c: &Client, sql: &str) {
    bounded(c.batch_execute(sql)).await.unwrap()
}

async fn scalar<T: FromSqlOwned>(c: &Client, sql: &str) -> T {
    bounded(c.query_one(sql, &[])).await.unwrap().get(0)
}

async fn rows(c: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    simple_rows(&bounded(c.simple_query(sql)).await.unwrap())
}

/// Waits (bounded) for a spawned task and returns its output.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    timeout(LONG, task).await.expect("task hangs").unwrap()
}

async fn x2(c: &Client, i: i32) -> i32 {
    let sql = "SELECT $1::int4 * 2";
    bounded(c.query_one(sql, &[&i])).await.unwrap().get(0)
}

/// A binary COPY writer for (int4, text) rows; boxed so that dropping it aborts the COPY.
fn binary_writer(sink: tokio_postgres::CopyInSink<bytes::Bytes>) -> Pin<Box<BinaryCopyInWriter>> {
    Box::pin(BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]))
}

/// Waits until `n` backends of `app` are running `pg_sleep`.
async fn wait_sleeping(su: &Client, n: i64) {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
               AND state = 'active' AND query LIKE '%pg_sleep%'";
    for _ in 0..500 {
        if scalar::<i64>(su, sql).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{n} pg_sleep queries never became active");
}

// ---------------------------------------------------------------- tests

/// Simple queries, several statements in one Query message, and their exact message
/// sequence (RowDescription/DataRow/CommandComplete per statement, one ReadyForQuery).
#[test]
fn simple_and_multi_statement_queries() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    let setup = q("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)");
    assert_eq!(r.sum(&setup), "C[CREATE TABLE]C[INSERT 0 3]Zi");
    let batch = q("SELECT 1; SELECT 2 UNION ALL SELECT 3; UPDATE t SET id = id");
    let m = r.run(&batch);
    assert_eq!(sum(&m), "TDC[SELECT 1]TDDC[SELECT 2]C[UPDATE 3]Zi");
    assert_eq!(col0(&m), ["1", "2", "3"]);
}

/// The extended protocol: typed parameters, query_typed, and pipelines of several Syncs
/// in flight (tokio-postgres pipelines `join!`ed queries), from two clients that share
/// one server connection; every answer reaches the client that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_and_joined_pipelines() {
    let (_pg, proxy) = start(POOL1, "");
    let a = proxy.connect("app", "apppw").await.unwrap();
    let b = proxy.connect("app", "apppw").await.unwrap();
    let params: [&(dyn ToSql + Sync); 3] = [&41i32, &"hi", &vec![0u8, 255]];
    let sql = "SELECT $1::int4 + 1, $2::text || '!', $3::bytea";
    let row = bounded(a.query_one(sql, &params)).await.unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, &str>(1)), (42, "hi!"));
    assert_eq!(row.get::<_, Vec<u8>>(2), [0, 255]);
    let sql = "SELECT generate_series(1, $1)";
    let series = bounded(a.query_typed(sql, &[(&5i32, Type::INT4)])).await;
    let series = series.unwrap();
    let total: i32 = series.iter().map(|r| r.get::<_, i32>(0)).sum();
    assert_eq!(total, 15);
    let (a1, b1, a2, b2) = (x2(&a, 1), x2(&b, 101), x2(&a, 2), x2(&b, 102));
    let (a3, b3, a4, b4) = (x2(&a, 3), x2(&b, 103), x2(&a, 4), x2(&b, 104));
    let all = async { tokio::join!(a1, b1, a2, b2, a3, b3, a4, b4) };
    let got = timeout(LONG, all).await.expect("pipelined queries hang");
    assert_eq!(got, (2, 202, 4, 204, 6, 206, 8, 208));
}

/// Another client running `n` one-row queries in the background, each checking its answer:
/// it competes for the server connection and would see replies meant for someone else.
async fn competitor(proxy: &ProxyProcess, n: i32) -> tokio::task::JoinHandle<()> {
    let other = proxy.connect("app", "apppw").await.unwrap();
    tokio::spawn(async move {
        for i in 0..n {
            let got = rows(&other, &format!("SELECT {i} + 1000")).await;
            assert_eq!(got, [[Some((i + 1000).to_string())]]);
        }
    })
}

/// Raw pipelines: many Parse/Bind/Execute before one Sync, and many Syncs in one write,
/// while another client competes for the only server connection. The proxy must not hand
/// the server over before the last Sync is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pipelines_keep_the_server_until_the_last_sync() {
    let (_pg, proxy) = start(POOL1, "");
    let hammer = competitor(&proxy, 200).await;
    let mut r = Raw::login(proxy.port, "app", "apppw");
    let numbers = |range: std::ops::Range<i32>| range.map(|i| i.to_string()).collect::<Vec<_>>();
    for round in 0..5 {
        let one = |i: &String| pbe("SELECT $1::int + 1", &[i]);
        let batch = [numbers(0..50).iter().flat_map(one).collect(), sync()].concat();
        let m = r.run(&batch);
        assert_eq!(sum(&m), "12DC[SELECT 1]".repeat(50) + "Zi", "round {round}");
        assert_eq!(col0(&m), numbers(1..51));

        let one = |i: &String| [pbe("SELECT $1::int, pg_sleep(0.005)", &[i]), sync()].concat();
        r.send(&numbers(0..20).iter().flat_map(one).collect::<Vec<_>>());
        let m: Vec<Msg> = (0..20).flat_map(|_| r.until(b'Z')).collect();
        assert_eq!(sum(&m), "12DC[SELECT 1]Zi".repeat(20), "round {round}");
        assert_eq!(col0(&m), numbers(0..20));
    }
    // An error mid-pipeline (at Bind: 1/0 is folded while planning) skips to the Sync.
    let bad = [
        pbe("SELECT 1", &[]),
        pbe("SELECT 1/0", &[]),
        pbe("SELECT 3", &[]),
    ];
    let bad = [bad.concat(), sync()].concat();
    assert_eq!(r.sum(&bad), "12DC[SELECT 1]1E[22012]Zi");
    assert_eq!(col0(&r.ext("SELECT 7")), ["7"]);
    join(hammer).await;
}

/// An error raised by Sync itself (the commit of the implicit transaction: a deferred
/// foreign key) starts no skip-to-Sync: its ReadyForQuery answers that Sync and the
/// statements pipelined after it run. The proxy must pair the replies the same way and keep
/// the server until the last Sync, while another client waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_at_sync_keeps_the_pipeline_in_step() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    r.run(&q("CREATE TABLE dp (id int PRIMARY KEY)"));
    r.run(&q(
        "CREATE TABLE dc (p int REFERENCES dp DEFERRABLE INITIALLY DEFERRED)",
    ));
    let hammer = competitor(&proxy, 100).await;
    let failing = [pbe("INSERT INTO dc VALUES (1)", &[]), sync()].concat();
    for round in 0..5 {
        r.send(&[failing.clone(), pbe("SELECT 5", &[]), sync()].concat());
        let m: Vec<Msg> = (0..2).flat_map(|_| r.until(b'Z')).collect();
        assert_eq!(
            sum(&m),
            "12C[INSERT 0 1]E[23503]Zi12DC[SELECT 1]Zi",
            "round {round}"
        );
        assert_eq!(col0(&m), ["5"]);
    }
    assert_eq!(r.sum(&failing), "12C[INSERT 0 1]E[23503]Zi");
    assert_eq!(col0(&r.ext("SELECT 7")), ["7"]);
    join(hammer).await;
}

/// One GSSENCRequest (or SSLRequest) is answered 'N'; a second one of the same kind is
/// refused (0A000, as PostgreSQL refuses it: its request code read as a protocol version),
/// so that a client cannot make the proxy write answers it never reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_is_negotiated_once() {
    let (_pg, proxy) = start(POOL1, "");
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut raw = Raw { s, key: (0, 0) };
    let gss = [8i32.to_be_bytes(), 80_877_104i32.to_be_bytes()].concat();
    raw.send(&[gss.clone(), gss].concat());
    let mut n = [0u8; 1];
    raw.s.read_exact(&mut n).unwrap();
    assert_eq!(&n, b"N");
    assert_eq!(sum(&[raw.recv().expect("an ErrorResponse")]), "E[0A000]");
}

/// COPY FROM STDIN and COPY TO STDOUT in the simple protocol and the extended protocol
/// (raw Bind/Execute, and tokio-postgres binary COPY): every row arrives, exactly one
/// ReadyForQuery ends each COPY, and the connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_simple_and_extended() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    r.run(&q("CREATE TABLE c (id int, v text)"));
    assert_eq!(r.start_copy(&q("COPY c FROM STDIN")), "G");
    let data = [
        copy_data(b"1\tone\n2\ttwo\n"),
        copy_data(b"3\tth"),
        copy_data(b"ree\n"),
    ];
    assert_eq!(r.sum(&[data.concat(), copy_done()].concat()), "C[COPY 3]Zi");
    let start = [pbe("COPY c FROM STDIN", &[]), sync()].concat();
    assert_eq!(r.start_copy(&start), "12G");
    let data = [copy_data(b"4\tfour\n"), copy_done(), sync()].concat();
    assert_eq!(r.sum(&data), "C[COPY 1]Zi");
    let want = b"1\tone\n2\ttwo\n3\tthree\n4\tfour\n".to_vec();
    let m = r.run(&q("COPY (SELECT * FROM c ORDER BY id) TO STDOUT"));
    assert!(copy_bytes(&m) == want);
    assert_eq!(sum(&m), "HddddcC[COPY 4]Zi");
    let m = r.ext("COPY (SELECT * FROM c ORDER BY id) TO STDOUT");
    assert!(copy_bytes(&m) == want);
    assert_eq!(sum(&m), "12HddddcC[COPY 4]Zi");

    let c = proxy.connect("app", "apppw").await.unwrap();
    let sink = bounded(c.copy_in("COPY c FROM STDIN BINARY")).await;
    let mut w = binary_writer(sink.unwrap());
    for i in 5..105i32 {
        bounded(w.as_mut().write(&[&i, &format!("row{i}")]))
            .await
            .unwrap();
    }
    assert_eq!(bounded(w.as_mut().finish()).await.unwrap(), 100);
    let got = rows(
        &c,
        "SELECT count(*) || '/' || sum(id) || '/' || max(v) FROM c",
    )
    .await;
    assert_eq!(got, [[Some("104/5460/two".to_owned())]]);
    assert_eq!(r.col0("SELECT count(*) FROM c"), ["104"]);
}

/// COPY errors: CopyFail and bad data, in both protocols and inside a transaction, end
/// with an ErrorResponse and one ReadyForQuery; late CopyData the client sends after the
/// server gave up is harmless; the connection (and tokio-postgres) stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_errors_leave_the_connection_usable() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    r.run(&q("CREATE TABLE c (id int, v text)"));
    let simple = q("COPY c FROM STDIN");
    let extended = [pbe("COPY c FROM STDIN", &[]), sync()].concat();
    let fail = frame(b'f', &z("client gave up"));
    r.start_copy(&simple);
    let data = [copy_data(b"1\tx\n"), fail.clone()].concat();
    assert_eq!(r.sum(&data), "E[57014]Zi");

    r.start_copy(&simple);
    let data = copy_data(b"1\tok\nnot_a_number\tbad\n");
    assert_eq!(r.sum(&data), "E[22P02]Zi");
    // The client had more queued: the server ignores it outside COPY mode.
    for _ in 0..100 {
        r.send(&copy_data(b"5\tlate\n"));
    }
    r.send(&copy_done());
    assert_eq!(r.col0("SELECT count(*) FROM c"), ["0"]);

    let bad = [copy_data(b"oops\n"), copy_done(), sync()].concat();
    for (tail, want) in [(bad, "E[22P02]Zi"), ([fail, sync()].concat(), "E[57014]Zi")] {
        assert_eq!(r.start_copy(&extended), "12G");
        assert_eq!(r.sum(&tail), want);
    }
    assert_eq!(r.sum(&q("BEGIN")), "C[BEGIN]Zt");
    r.start_copy(&simple);
    let bad = [copy_data(b"x\ty\n"), copy_done()].concat();
    assert_eq!(r.sum(&bad), "E[22P02]Ze");
    assert_eq!(r.sum(&q("ROLLBACK")), "C[ROLLBACK]Zi");

    let c = proxy.connect("app", "apppw").await.unwrap();
    let sink = bounded(c.copy_in("COPY c FROM STDIN BINARY")).await;
    let mut w = binary_writer(sink.unwrap());
    bounded(w.as_mut().write(&[&1i32, &"dropped"]))
        .await
        .unwrap();
    drop(w); // tokio-postgres sends CopyFail + Sync
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM c").await, 0);
    assert_eq!(r.col0("SELECT count(*) FROM c"), ["0"]);
}

/// NOTICE from a DO block, ParameterStatus after SET application_name and empty queries
/// (simple and extended) reach the client, and a FunctionCall is refused (0A000: it calls
/// any function, set_config included, past the statement guard), each ending with exactly
/// one ReadyForQuery.
#[test]
fn notices_parameter_status_empty_query_and_function_call() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    let m = r.run(&q("DO $$ BEGIN RAISE NOTICE 'hello %', 'plpgsql'; END $$"));
    assert_eq!(sum(&m), "NC[DO]Zi");
    assert_eq!(field(&m[0].1, b'M').as_deref(), Some("hello plpgsql"));
    let m = r.run(&q("SET application_name = 'raw_app'"));
    let ps = [z("application_name"), z("raw_app")].concat();
    assert!(m.iter().any(|(t, b)| *t == b'S' && *b == ps), "{m:?}");
    assert_eq!(r.col0("SHOW application_name"), ["raw_app"]);
    assert_eq!(r.sum(&q("")), "IZi");
    assert_eq!(sum(&r.ext("")), "12IZi");
    let oid: u32 = r.col0("SELECT 'int4abs'::regproc::oid")[0].parse().unwrap();
    // FunctionCall: no argument format codes (text), one 3-byte argument, text result.
    let args = [0, 0, 0, 1, 0, 0, 0, 3, b'-', b'4', b'2', 0, 0];
    let m = r.run(&frame(b'F', &[&oid.to_be_bytes()[..], &args].concat()));
    assert_eq!(sum(&m), "E[0A000]Zi");
    assert_eq!(r.col0("SELECT 'still usable'"), ["still usable"]);
}

/// Large messages stay intact: an 8 MiB result column (simple and extended protocol), an
/// 8 MiB bind parameter and an 8 MiB Query message; then a ~32 MB COPY FROM STDIN (one
/// 4 MiB CopyData, then 256 KiB pieces cutting rows in two) is stored completely and
/// COPY TO STDOUT returns exactly the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_and_copy_streams_are_intact() {
    let (_pg, proxy) = start(POOL1, "");
    let c = proxy.connect("app", "apppw").await.unwrap();
    let got = rows(&c, "SELECT repeat('x', 8*1024*1024), 'after'").await;
    assert!(got[0][0] == Some("x".repeat(8 << 20)), "8 MiB of x");
    assert_eq!(got[0][1].as_deref(), Some("after"));
    let s: String = scalar(&c, "SELECT repeat('ab', 4*1024*1024) || 'Z'").await;
    assert!(s == "ab".repeat(4 << 20) + "Z", "8 MiB ab");
    let abc = |i: u32| (b'a' + (i % 26) as u8) as char;
    let up: String = (0..8u32 << 20).map(abc).collect();
    let sql = "SELECT length($1::text), md5($1::text)";
    let row = bounded(c.query_one(sql, &[&up])).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 8 << 20);
    assert_eq!(row.get::<_, String>(1), hex_md5(up.as_bytes()));

    let mut r = Raw::login(proxy.port, "app", "apppw");
    let big_query = format!("SELECT length('{}')", "y".repeat(8 << 20));
    assert_eq!(r.col0(&big_query), [(8 << 20).to_string()]);
    r.run(&q("CREATE TABLE big (i int, v text)"));
    let line = |i: u32| format!("{i}\t{}\n", abc(i).to_string().repeat(100));
    let data: Vec<u8> = (0..300_000).flat_map(|i| line(i).into_bytes()).collect();
    r.start_copy(&q("COPY big FROM STDIN"));
    let (head, rest) = data.split_at(4 << 20);
    r.send(&copy_data(head));
    for piece in rest.chunks(256 * 1024 + 7) {
        r.send(&copy_data(piece));
    }
    assert_eq!(r.sum(&copy_done()), "C[COPY 300000]Zi");
    let m = r.run(&q("COPY (SELECT * FROM big ORDER BY i) TO STDOUT"));
    assert_eq!(m.iter().filter(|(t, _)| *t == b'd').count(), 300_000);
    assert!(copy_bytes(&m) == data, "COPY TO STDOUT differs");
}

/// Malformed lengths (below 4, 0x7fffffff, above max_client_message_bytes; sent while
/// idle and inside a transaction) get FATAL 08P01/54000 and a closed socket; the bad
/// client's transaction is rolled back, another client's open transaction is unaffected,
/// and the proxy keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lengths_get_fatal_and_disconnect() {
    let (_pg, mut proxy) = start(POOL2, "max_client_message_bytes: 1048576\n");
    let other = proxy.connect("app", "apppw").await.unwrap();
    let setup = "CREATE TABLE m (who text); BEGIN; INSERT INTO m VALUES ('other')";
    exec(&other, setup).await;
    let over = |tag: u8| [&[tag][..], &(2i32 << 20).to_be_bytes(), &[b'x'; 1000]].concat();
    let huge = vec![b'Q', 0x7f, 0xff, 0xff, 0xff];
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        ("length 2", vec![b'Q', 0, 0, 0, 2], &["08P01"]),
        ("length 2^31-1", huge, &["08P01", "54000"]),
        ("2 MiB Query", over(b'Q'), &["54000"]),
        ("2 MiB CopyData", over(b'd'), &["54000"]),
    ];
    for (what, bytes, codes) in &cases {
        for in_tx in [false, true] {
            let mut r = Raw::login(proxy.port, "app", "apppw");
            if in_tx {
                r.run(&q("BEGIN; INSERT INTO m VALUES ('bad')"));
            }
            r.send(bytes);
            let code = r.expect_fatal();
            let ok = codes.contains(&code.as_str());
            assert!(ok, "{what} (in transaction: {in_tx}): {code}");
        }
    }
    assert!(proxy.is_running(), "the proxy died");
    let sql = "INSERT INTO m VALUES ('other 2'); COMMIT";
    exec(&other, sql).await;
    let got = rows(&other, "SELECT string_agg(who, ',' ORDER BY who) FROM m").await;
    assert_eq!(got, [[Some("other,other 2".to_owned())]]);
}

/// tokio-postgres's cancel_query (sent to the proxy) stops a running pg_sleep(30) with
/// 57014 long before it would end, and the client keeps working afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_token_cancels_the_running_query() {
    let (pg, proxy) = start(POOL2, "");
    let su = pg.superuser("postgres").await;
    let c = proxy.connect("app", "apppw").await.unwrap();
    let token = c.cancel_token();
    let task = tokio::spawn(async move {
        let r = c.simple_query("SELECT pg_sleep(30)").await;
        (c, r)
    });
    wait_sleeping(&su, 1).await;
    bounded(token.cancel_query(NoTls)).await.unwrap();
    let (c, r) = join(task).await;
    assert_eq!(r.unwrap_err().code(), Some(&SqlState::QUERY_CANCELED));
    assert_eq!(scalar::<i32>(&c, "SELECT 1").await, 1);
}

/// The proxy hands out its own BackendKeyData (not the server's); a CancelRequest with a
/// wrong secret or an unknown pid is ignored (the query completes), the right key cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requires_the_proxy_key() {
    let (pg, proxy) = start(POOL2, "");
    let su = pg.superuser("postgres").await;
    let mut r = Raw::login(proxy.port, "app", "apppw");
    let server_pid = r.col0("SELECT pg_backend_pid()").remove(0);
    assert_ne!(
        r.key.0.to_string(),
        server_pid,
        "the server's own key leaked"
    );
    r.send(&q("SELECT pg_sleep(1.5)"));
    wait_sleeping(&su, 1).await;
    let (pid, secret) = r.key;
    send_cancel(proxy.port, pid, secret ^ 0x5a5a);
    send_cancel(proxy.port, pid ^ 0x4000_0000, secret);
    let m = sum(&r.until(b'Z'));
    assert_eq!(m, "TDC[SELECT 1]Zi", "a wrong key cancelled");
    r.send(&q("SELECT pg_sleep(30)"));
    wait_sleeping(&su, 1).await;
    send_cancel(proxy.port, pid, secret);
    assert_eq!(sum(&r.until(b'Z')), "TE[57014]Zi");
}

/// Client A's cancel key never reaches client B: not while A idles after using a backend
/// that B now runs on, and not while both run queries (A's is cancelled, B's completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_one_client_never_hits_another() {
    let (pg, proxy) = start(POOL2, "");
    let su = pg.superuser("postgres").await;
    let mut a = Raw::login(proxy.port, "app", "apppw");
    let b = std::sync::Arc::new(proxy.connect("app", "apppw").await.unwrap());
    a.run(&q("SELECT pg_backend_pid()"));
    let run_b = |sql: &'static str| {
        let b = b.clone();
        tokio::spawn(async move { b.simple_query(sql).await.map(|m| simple_rows(&m)) })
    };
    let task = run_b("SELECT 'b1', pg_sleep(1.5)");
    wait_sleeping(&su, 1).await;
    send_cancel(proxy.port, a.key.0, a.key.1);
    let got = join(task).await.expect("A's key cancelled B");
    assert_eq!(got[0][0].as_deref(), Some("b1"));

    a.send(&q("SELECT pg_sleep(30)"));
    let task = run_b("SELECT 'b2', pg_sleep(2)");
    wait_sleeping(&su, 2).await;
    send_cancel(proxy.port, a.key.0, a.key.1);
    assert_eq!(sum(&a.until(b'Z')), "TE[57014]Zi");
    let got = join(task).await.expect("A's key cancelled B");
    assert_eq!(got[0][0].as_deref(), Some("b2"));
}

/// PostgreSQL reads no input while a reply it writes waits for room. With megabytes
/// pipelined each way the proxy must go on reading the server while the server's input is
/// full: before, the relay only waited to write, the server only waited to write its
/// replies, and the client got 08006 at the command timeout (after one reply of 20,000).
/// Simple Queries (forwarded untouched) and named statements (rewritten by the proxy).
#[test]
fn pipelines_larger_than_the_socket_buffers_complete() {
    let (_pg, proxy) = start(POOL1, "");
    let mut r = Raw::login(proxy.port, "app", "apppw");
    let pad = "-".repeat(4000);
    let one = q(&format!(
        "SELECT repeat('x', 2000) FROM generate_series(1, 2) /* {pad} */"
    ));
    let got = pipeline(&mut r, one.repeat(100), 200, 100);
    assert_eq!(got, (20_000, String::new()));
    // Parse once, then Bind/Execute/Sync of a 4 kB parameter echoed back, 20,000 times.
    let parse = frame(
        b'P',
        &[z("echo"), z("SELECT $1::text"), vec![0, 0]].concat(),
    );
    assert_eq!(r.sum(&[parse, sync()].concat()), "1Zi");
    let mut bind = [z(""), z("echo"), vec![0, 0, 0, 1]].concat();
    bind.extend((pad.len() as i32).to_be_bytes());
    bind.extend(pad.as_bytes());
    bind.extend([0, 0]);
    let exec = [frame(b'B', &bind), frame(b'E', &[0, 0, 0, 0, 0]), sync()].concat();
    let got = pipeline(&mut r, exec.repeat(100), 200, 100);
    assert_eq!(got, (20_000, String::new()));
    assert_eq!(r.col0("SELECT 'still in step'"), ["still in step"]);
    let body = proxy.metrics();
    let waits = common::metric(
        &body,
        "launch_proxy_server_write_waits_total",
        &[("pool", "app")],
    );
    assert!(
        waits >= 1.0,
        "no write to the server waited: relay::duplex untested"
    );
}
