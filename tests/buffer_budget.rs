//! `client_buffer_budget_bytes`: the memory all clients' read buffers may take above their
//! free allowance. Queries are read whole before they go on, so clients that each send
//! most of a large one and stop must not pin unbounded memory: past the budget a client is
//! refused with 53200, while the clients within it and everyone else go on, and the budget
//! comes back as buffers go.

use crate::common;

use common::client::{blocking, eventually, LIMIT};
use common::raw::*;
use common::{error_field as field, metric, proxy_config, PgServer, ProxyProcess};
use std::io::{Read, Write};

/// A Query of `sql_len` bytes of SQL: `SELECT length('aaa…')`.
fn large_query(sql_len: usize) -> Vec<u8> {
    let filler = "a".repeat(sql_len - "SELECT length('')".len());
    q(&format!("SELECT length('{filler}')"))
}

fn budget_in_use(proxy: &ProxyProcess) -> f64 {
    metric(&proxy.metrics(), "launch_proxy_client_buffer_bytes", &[])
}

fn refusals(proxy: &ProxyProcess) -> f64 {
    metric(
        &proxy.metrics(),
        "launch_proxy_client_buffer_refusals_total",
        &[],
    )
}

/// Two clients each hold most of a 1 MB Query, which takes most of a 2 MiB budget; a third
/// that sends the same is refused (53200, disconnected) as its buffer grows past what is
/// left; a client with small queries is served throughout; the first two, once they send
/// the rest, get their results; and the budget is all back once they idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_the_buffer_budget_are_refused_and_the_rest_go_on() {
    let pg = PgServer::start();
    let top = "max_client_message_bytes: 1048576\nclient_buffer_budget_bytes: 2097152\n";
    let config = format!(
        "{}{top}",
        proxy_config(&pg, "default_pool_size: 4\nmin_pool_size: 0")
    );
    let proxy = ProxyProcess::start(&config, MD5_USERS);
    let query = large_query(1_000_000);
    let held = 900_000;
    let mut holders: Vec<Raw> = (0..2)
        .map(|_| Raw::login(proxy.port, "app", "apppw"))
        .collect();
    for h in &mut holders {
        h.send(&query[..held]);
    }
    let charged = eventually(LIMIT, || budget_in_use(&proxy) >= 2.0 * 800_000.0).await;
    assert!(
        charged,
        "the held queries were not charged:\n{}",
        proxy.metrics()
    );

    let mut third = Raw::login(proxy.port, "app", "apppw");
    // Written from a thread of its own: the proxy stops reading it part-way.
    let mut writer = third.s.try_clone().unwrap();
    let part = query[..held].to_vec();
    let sending = std::thread::spawn(move || writer.write_all(&part).is_ok());
    third.s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = Vec::new();
    // The refusal, then the close (a reset may come in place of the error's bytes when
    // the proxy closes with some of the message unread; the counter below decides).
    let _ = third.s.read_to_end(&mut reply);
    let _ = sending.join();
    if !reply.is_empty() {
        assert_eq!(reply[0], b'E', "not an ErrorResponse: {reply:?}");
        let body = &reply[5..];
        assert_eq!(field(body, b'C').as_deref(), Some("53200"));
        assert_eq!(field(body, b'S').as_deref(), Some("FATAL"));
    }
    assert_eq!(refusals(&proxy), 1.0, "the third client was not refused");

    let mut other = Raw::login(proxy.port, "app", "apppw");
    assert_eq!(other.col0("SELECT 'served'"), ["served"]);
    for h in &mut holders {
        let rows = blocking(|| col0(&h.run(&query[held..])));
        assert_eq!(rows, ["999983"], "the held query's result");
        assert_eq!(h.col0("SELECT 'after'"), ["after"]);
    }
    let back = eventually(LIMIT, || budget_in_use(&proxy) == 0.0).await;
    assert!(back, "the budget did not come back:\n{}", proxy.metrics());
}

/// A large buffer is freed when its client idles, not kept as a spare for the next client
/// (uncharged): a Query sized so that 30 KB of its 16 MiB buffer lie past the read
/// position once it is sent (`capacity()` then shows only those) would otherwise park
/// 16 MiB per round in the spare buffers, where a client sending one byte picks it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_buffers_are_freed_not_kept_as_spares() {
    let pg = PgServer::start();
    let top = "max_client_message_bytes: 16777216\nclient_buffer_budget_bytes: 16777216\n";
    let config = format!(
        "{}{top}",
        proxy_config(&pg, "default_pool_size: 2\nmin_pool_size: 0")
    );
    // mimalloc returns freed memory at once, so RSS shows what is still allocated.
    let proxy = ProxyProcess::start_with_env(&config, MD5_USERS, &[("MIMALLOC_PURGE_DELAY", "0")]);
    // Frame of 16 MiB - 30000 bytes: the buffer doubles to 16 MiB; 30000 bytes of view remain.
    let sql_len = 16_777_216 - 30_000 - 6;
    let query = large_query(sql_len);
    let before = proxy.rss_kib();
    let mut kept = Vec::new();
    for _ in 0..6 {
        let mut big = Raw::login(proxy.port, "app", "apppw");
        let expect = (sql_len - "SELECT length('')".len()).to_string();
        assert_eq!(blocking(|| col0(&big.run(&query))), [expect]);
        std::thread::sleep(std::time::Duration::from_millis(100));
        // Its buffer went back to the spare buffers; the next client's read takes it.
        let mut holder = Raw::login(proxy.port, "app", "apppw");
        holder.send(b"Q");
        std::thread::sleep(std::time::Duration::from_millis(100));
        kept.push((big, holder));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = proxy.rss_kib();
    let charged = budget_in_use(&proxy);
    assert!(
        after.saturating_sub(before) < 2 * 16384,
        "the proxy holds {} kB more than before, the budget is 16384 kB and its gauge says {charged}",
        after - before
    );
}

/// A buffer grows by doubling, but never much past `max_client_message_bytes`: a message
/// of that size, whose last bytes arrive when its buffer is nearly full, fits a budget of
/// that size (doubling would have asked for twice the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_the_largest_size_fits_a_budget_of_that_size() {
    let pg = PgServer::start();
    let top = "max_client_message_bytes: 1048576\nclient_buffer_budget_bytes: 1048576\n";
    let config = format!(
        "{}{top}",
        proxy_config(&pg, "default_pool_size: 4\nmin_pool_size: 0")
    );
    let proxy = ProxyProcess::start(&config, MD5_USERS);
    let mut c = Raw::login(proxy.port, "app", "apppw");
    // The limit exactly, sent in two parts: the first ends 500 bytes before the end of
    // a 1 MiB buffer, where plain doubling would grow it to 2 MiB.
    let query = large_query(1_048_576 - 6);
    c.send(&query[..1_048_076]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.send(&query[1_048_076..]);
    let (tag, body) = blocking(|| c.recv()).expect("a reply");
    assert_eq!(
        (tag, field(&body, b'C')),
        (b'T', None),
        "refused alone: {:?} (refusals {})",
        field(&body, b'M'),
        refusals(&proxy)
    );
}
