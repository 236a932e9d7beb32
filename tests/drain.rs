//! What the drain after SIGTERM still runs: what the proxy accepted before it began. A
//! login under way completes and runs its first transaction (a client connecting per
//! transaction that reached the process as it began to drain), and an idle session's
//! message that had already arrived is answered; then each session, idle, ends with 57P01,
//! unless its client is leaving: a Terminate that comes right after is taken quietly.
//! (The queued and running cases are in tests/timeouts.rs, the rolling restart in
//! tests/reuseport.rs.)

use crate::common;

use common::raw::{col0, frame, q, Raw, MD5_USERS};
use common::{proxy_config, PgServer, ProxyProcess};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// Completes a login begun before the drain, then, after a moment idle (a session that has
/// run no transaction yet is not ended), runs `sql` and returns its one value.
fn login_and_run(raw: &mut Raw, sql: &str) -> Vec<String> {
    raw.finish_login("app", "apppw")
        .expect("a login under way completes in the drain");
    thread::sleep(Duration::from_millis(300));
    raw.col0(sql)
}

#[test]
fn a_login_under_way_as_the_drain_begins_completes_and_runs_its_transaction() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 1") + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, MD5_USERS);
    // One login's startup packet is in: the proxy asks for the password and waits.
    let mut asked = Raw::start_login(proxy.port, "app", "launch").unwrap();
    // Another's connection is accepted, and its startup packet comes after the drain began.
    let connected = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    thread::sleep(Duration::from_millis(200));
    proxy.begin_drain();
    let mut late = Raw::startup(connected, "app", "launch");
    assert_eq!(login_and_run(&mut asked, "SELECT 41 + 1"), ["42"]);
    // This client says goodbye soon after its transaction, as one connecting per
    // transaction does once it has read its result: it leaves without an error.
    thread::sleep(Duration::from_millis(20));
    asked.send(&frame(b'X', &[]));
    assert_eq!(asked.recv(), None, "an error for a client that was leaving");
    // This one stays idle after its transaction, and the drain ends it.
    assert_eq!(login_and_run(&mut late, "SELECT 7"), ["7"]);
    assert_eq!(late.expect_fatal(), "57P01");
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn an_idle_sessions_message_that_arrived_as_the_drain_began_is_answered() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 1") + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, MD5_USERS);
    let mut idle = Raw::login(proxy.port, "app", "apppw");
    assert_eq!(idle.col0("SELECT 1"), ["1"]);
    // Stopped, the proxy cannot see the query come; it wakes to the query and to SIGTERM
    // together. The query came first, and is answered whichever the proxy looks at first
    // (the drain peeks at an idle client's socket: `net::Stream::has_input`, whose unit
    // test covers the bytes the reactor has not reported yet).
    proxy.signal("STOP");
    idle.send(&q("SELECT 2"));
    thread::sleep(Duration::from_millis(100));
    proxy.sigterm();
    thread::sleep(Duration::from_millis(100));
    proxy.signal("CONT");
    let reply = idle.until_ready_or_eof();
    assert_eq!(col0(&reply), ["2"], "{reply:?}");
    assert_eq!(idle.expect_fatal(), "57P01");
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
