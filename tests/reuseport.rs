//! `so_reuseport`: a second process on the port of a first, the rolling restart of
//! deploy/README.md. Both serve; the first's drain sends every new client to the second
//! while its own open transactions finish and commit, and clients connecting per
//! transaction throughout see no failure; a cancel request that reaches the process that
//! did not issue its key is forwarded to the one that did, by that one's
//! `instance_listen`, during its drain too.
//!
//! Runs in a network namespace of its own (PostgreSQL, both proxies and the clients), where
//! it can turn `net.ipv4.tcp_migrate_req` on without touching the host's.

use crate::common;

use common::raw::{first_error, frame, q, send_cancel, Raw, MD5_USERS};
use common::{free_port, proxy_config, PgServer, ProxyProcess};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Moves the calling thread, and the threads and processes it starts from now on, into a
/// network namespace of its own with its loopback up. Its sysctls start at the kernel's
/// defaults (`tcp_migrate_req` 0).
fn enter_own_network_namespace() {
    // SAFETY: unshare(2) takes no pointers; it changes the calling thread's namespace only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) needs root: {}",
        std::io::Error::last_os_error()
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(up.success(), "ip link set lo up: {up}");
}

/// The host number in a key the proxy issued (`cancel.host_id` of the process that did).
fn host(r: &Raw) -> u32 {
    r.key.0 >> 27
}

/// One connection's life as a connection-per-transaction client lives it: login, a
/// statement, Terminate. The host that served it, or the SQLSTATE it was refused with
/// (`EOF` when the connection closed without one).
fn one_session(port: u16) -> Result<u32, String> {
    let mut r = Raw::try_login(port, "app", "apppw")?;
    r.send(&q("SELECT 1"));
    let msgs = r.until_ready_or_eof();
    if msgs.iter().any(|(t, _)| *t == b'E') {
        return Err(first_error(&msgs).unwrap_or_default());
    }
    if msgs.last().map(|m| m.0) != Some(b'Z') {
        return Err("EOF".into());
    }
    // The session is over for the client whether or not the proxy still reads.
    let _ = std::io::Write::write_all(&mut r.s, &frame(b'X', &[]));
    Ok(host(&r))
}

/// The first client served by host `id`, logging in as often as it takes.
fn session_on(port: u16, id: u32) -> Raw {
    for _ in 0..200 {
        let r = Raw::login(port, "app", "apppw");
        if host(&r) == id {
            return r;
        }
    }
    panic!("200 logins and none reached host {id}");
}

#[test]
fn a_second_process_shares_the_port_and_takes_over_as_the_first_drains() {
    enter_own_network_namespace();
    let pg = PgServer::start();
    pg.psql(
        "launch",
        "CREATE TABLE kept (id int); GRANT ALL ON kept TO app;",
    );
    let (own_a, own_b) = (free_port(), free_port());
    let cfg = proxy_config(&pg, "min_pool_size: 1\ndefault_pool_size: 8")
        + &format!(
            "so_reuseport: true\nshutdown_timeout_ms: 30000\n\
             cancel: {{ peers: {{ 1: \"127.0.0.1:{own_a}\", 2: \"127.0.0.1:{own_b}\" }} }}\n"
        );
    let a_listen = format!("127.0.0.1:{own_a}");
    let mut a = ProxyProcess::start_at(
        &cfg,
        MD5_USERS,
        None,
        &[
            ("LAUNCH_PROXY_HOST_ID", "1"),
            ("LAUNCH_PROXY_INSTANCE_LISTEN", &a_listen),
        ],
    );
    // The namespace starts with the sysctl off, and the first process says what that costs.
    assert!(
        a.log().contains("tcp_migrate_req is 0"),
        "no warning about net.ipv4.tcp_migrate_req; log:\n{}",
        a.log()
    );
    std::fs::write(MIGRATE_REQ, "1").expect("set net.ipv4.tcp_migrate_req in the namespace");
    let port = a.port;
    let b_listen = format!("127.0.0.1:{own_b}");
    let b = ProxyProcess::start_at(
        &cfg,
        MD5_USERS,
        Some(port),
        &[
            ("LAUNCH_PROXY_HOST_ID", "2"),
            ("LAUNCH_PROXY_INSTANCE_LISTEN", &b_listen),
        ],
    );
    assert!(!b.log().contains("tcp_migrate_req"), "{}", b.log());

    // Both serve: the kernel spreads new connections over the two.
    let sessions: Vec<Raw> = (0..40).map(|_| Raw::login(port, "app", "apppw")).collect();
    let on_a = sessions.iter().filter(|r| host(r) == 1).count();
    let on_b = sessions.iter().filter(|r| host(r) == 2).count();
    assert_eq!(on_a + on_b, 40, "keys name host 1 or 2");
    assert!(
        on_a > 0 && on_b > 0,
        "{on_a} of 40 logins on the first process"
    );
    drop(sessions);

    // Connection-per-transaction clients run through the whole restart.
    let stop = Arc::new(AtomicBool::new(false));
    let loopers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    out.push((started, one_session(port)));
                }
                out
            })
        })
        .collect();

    // On the first process: a transaction that will commit, and one running a statement.
    let mut keeper = session_on(port, 1);
    assert_eq!(first_error(&keeper.run(&q("BEGIN"))), None);
    assert_eq!(
        first_error(&keeper.run(&q("INSERT INTO kept VALUES (1)"))),
        None
    );
    let mut sleeper = session_on(port, 1);
    let key = sleeper.key;
    assert_eq!(first_error(&sleeper.run(&q("BEGIN"))), None);
    let sleeping = thread::spawn(move || {
        let reply = sleeper.run(&q("SELECT pg_sleep(60)"));
        (sleeper, first_error(&reply))
    });
    thread::sleep(Duration::from_millis(300));

    a.begin_drain();
    let drain_began = Instant::now();
    assert!(
        a.is_running(),
        "the first process drains its two transactions"
    );
    // Its metrics address, bound with SO_REUSEPORT too, is left to the other process: a
    // load balancer's /health asks one that serves.
    let metrics_left = (0..500).any(|_| {
        thread::sleep(Duration::from_millis(10));
        std::net::TcpStream::connect(("127.0.0.1", a.metrics_port)).is_err()
    });
    assert!(
        metrics_left,
        "the draining process still answers on metrics_listen"
    );
    assert_eq!(b.http_get("/health").0, 200);

    // New clients all reach the second process.
    for _ in 0..20 {
        assert_eq!(one_session(port), Ok(2));
    }
    // The sleeper's cancel, sent to the port as a client sends it, reaches the second
    // process, which forwards it to the first's own address, open through its drain.
    send_cancel(port, key.0, key.1);
    let (mut sleeper, code) = sleeping.join().unwrap();
    assert_eq!(code.as_deref(), Some("57014"), "the statement is cancelled");
    assert_eq!(first_error(&sleeper.run(&q("ROLLBACK"))), None);
    // The draining transaction goes on and commits.
    assert_eq!(
        first_error(&keeper.run(&q("INSERT INTO kept VALUES (2)"))),
        None
    );
    assert_eq!(first_error(&keeper.run(&q("COMMIT"))), None);
    // Now idle, both are ended, and the first process exits.
    assert_eq!(keeper.expect_fatal(), "57P01");
    assert_eq!(sleeper.expect_fatal(), "57P01");
    let status = a.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        a.log()
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let runs: Vec<_> = loopers
        .into_iter()
        .flat_map(|l| l.join().unwrap())
        .collect();

    assert_eq!(
        pg.psql(
            "launch",
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM kept"
        ),
        "1,2"
    );
    // Nobody was refused, reset or found the port closed: a session in its login at the
    // first process as its drain began completed it and ran its transaction there.
    let failed: Vec<_> = runs.iter().filter_map(|(_, r)| r.clone().err()).collect();
    assert!(
        failed.is_empty(),
        "{failed:?} among {} sessions",
        runs.len()
    );
    let late_on_a = runs
        .iter()
        .filter(|(t, r)| *t > drain_began && *r == Ok(1))
        .count();
    assert_eq!(
        late_on_a, 0,
        "sessions begun after the drain reached the first process"
    );
    let served_by = |id| runs.iter().filter(|(_, r)| *r == Ok(id)).count();
    assert!(served_by(1) > 0 && served_by(2) > 0, "{runs:?}");
    drop(b);
}
