//! Cancel requests across pool hosts: two proxies behind "one address" (configured as
//! peers); a CancelRequest for a key issued by host 0 that arrives at host 1 is forwarded
//! to host 0 and cancels exactly that client's query. A forged secret cancels nothing.

use crate::common;

use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use launch_proxy::auth::scram::{ScramClient, ScramCredentials, SCRAM_SHA_256};
use launch_proxy::protocol::encode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads one message (tag, body).
fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).expect("read message header");
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read message body");
    (head[0], body)
}

/// Logs in as app/apppw with SCRAM over a raw socket; returns the stream and the
/// BackendKeyData the proxy issued.
fn login(port: u16) -> (TcpStream, u32, u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = bytes::BytesMut::new();
    encode::startup_message(&mut out, [("user", "app"), ("database", "launch")]);
    s.write_all(&out).unwrap();
    let mut scram = ScramClient::new(ScramCredentials::Password("apppw".into()));
    let mut key = (0, 0);
    loop {
        let (tag, body) = read_msg(&mut s);
        out.clear();
        match tag {
            b'R' => match u32::from_be_bytes([body[0], body[1], body[2], body[3]]) {
                10 => encode::sasl_initial_response(&mut out, SCRAM_SHA_256, &scram.client_first()),
                11 => {
                    encode::sasl_response(&mut out, &scram.handle_server_first(&body[4..]).unwrap())
                }
                12 => scram.handle_server_final(&body[4..]).unwrap(),
                _ => {}
            },
            b'K' => {
                key = (
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                )
            }
            b'Z' => return (s, key.0, key.1),
            b'E' => panic!("login failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
        if !out.is_empty() {
            s.write_all(&out).unwrap();
        }
    }
}

fn send_cancel(port: u16, pid: u32, secret: u32) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = bytes::BytesMut::new();
    encode::cancel_request(&mut out, pid, secret);
    s.write_all(&out).unwrap();
    let mut sink = [0u8; 8];
    let _ = s.read(&mut sink);
}

/// Runs `pg_sleep(secs)`; returns the SQLSTATE of the error it ended with, if any.
fn sleep_query(s: &mut TcpStream, secs: u32) -> Option<String> {
    let mut out = bytes::BytesMut::new();
    encode::query(&mut out, &format!("SELECT pg_sleep({secs})"));
    s.write_all(&out).unwrap();
    let mut code = None;
    loop {
        let (tag, body) = read_msg(s);
        if tag == b'E' {
            code = launch_proxy::protocol::fields::sqlstate(&body)
                .map(|c| String::from_utf8_lossy(&c).into_owned());
        }
        if tag == b'Z' {
            return code;
        }
    }
}

#[test]
fn cancel_reaching_another_host_is_forwarded_to_the_issuer() {
    let pg = PgServer::start();
    let base = proxy_config(&pg, "min_pool_size: 1\ndefault_pool_size: 4");
    let host0 = ProxyProcess::start(&format!("{base}cancel: {{ host_id: 0 }}\n"), USERS_YAML);
    let host1 = ProxyProcess::start(
        &format!(
            "{base}cancel: {{ host_id: 1, peers: {{ 0: \"127.0.0.1:{}\" }} }}\n",
            host0.port
        ),
        USERS_YAML,
    );
    let (mut client, pid, secret) = login(host0.port);
    assert_eq!(pid >> 27, 0, "host 0 issues keys with host number 0");
    let (_other, pid1, _) = login(host1.port);
    assert_eq!(pid1 >> 27, 1, "host 1 issues keys with host number 1");

    // A wrong secret sent to the other host cancels nothing.
    let forged = std::thread::spawn({
        let port = host1.port;
        move || {
            std::thread::sleep(Duration::from_millis(500));
            send_cancel(port, pid, secret ^ 1);
        }
    });
    let started = Instant::now();
    assert_eq!(
        sleep_query(&mut client, 2),
        None,
        "a forged secret must not cancel"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    forged.join().unwrap();

    // The right key sent to host 1 reaches host 0 and cancels the query.
    let canceller = std::thread::spawn({
        let port = host1.port;
        move || {
            std::thread::sleep(Duration::from_millis(500));
            send_cancel(port, pid, secret);
        }
    });
    let started = Instant::now();
    assert_eq!(sleep_query(&mut client, 30).as_deref(), Some("57014"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cancelled, not finished"
    );
    canceller.join().unwrap();
    // The session goes on.
    assert_eq!(sleep_query(&mut client, 0), None);
}
