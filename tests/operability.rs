//! What an operator relies on: `--check-config` output free of secrets and refusing values
//! PostgreSQL would refuse, `/metrics` that is strict Prometheus text and counts every
//! error sent to a client, and signals (SIGTERM twice, systemd's STOPPING=1) that behave
//! as documented; checked against real PostgreSQL servers.

use crate::common;

use common::client::{app, blocking, connect, eventually, one, try_col, LIMIT};
use common::{app_clients_reach, metric, proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A directory under the harness's test root, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = common::test_run_dir().join(format!("ops-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create dir");
        Dir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(common::proxy_binary())
        .args(args)
        .env_remove("LAUNCH_PROXY_LISTEN")
        .env_remove("LAUNCH_PROXY_METRICS_LISTEN")
        .env_remove("LAUNCH_PROXY_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run launch-proxy");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

const BASE: &str = "listen: \"127.0.0.1:1\"\nmetrics_listen: \"\"\n\
                    server: { host: 127.0.0.1, port: 1, database: launch }\n\
                    users_file: users.yaml\npool: { min_pool_size: 0 }\n";

/// `--check-config` prints the effective settings "secrets left out": an HS256 key given
/// inline in `jwt.keys` is a secret like the signing key (whoever holds it mints tokens for
/// any tenant), so it must not reach stdout, a CI log or a ticket.
#[test]
fn check_config_never_prints_an_inline_jwt_secret() {
    let dir = Dir::new("jwt");
    dir.write("users.yaml", USERS_YAML);
    let secret = "hs256-inline-secret-0123456789-abcdefghij";
    let cfg = dir.write(
        "lp.yaml",
        &format!(
            "{BASE}tenant: {{ signing_key: \"{}\" }}\n\
             jwt:\n  keys:\n    - {{ alg: HS256, kid: k1, secret: \"{secret}\" }}\n  \
             server_users: {{ read: app_ro, write: app }}\n",
            "ab".repeat(32)
        ),
    );
    let (code, stdout, stderr) = run(&["--check-config", &cfg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("kid: k1"), "jwt keys described:\n{stdout}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "the HS256 secret was printed:\n{stdout}"
    );
}

/// PostgreSQL takes `statement_timeout` and `idle_in_transaction_session_timeout` up to
/// 2147483647 ms; the proxy sends the roles' values in every server StartupMessage. A larger
/// value passed `--check-config`, and then every server login of the role failed
/// ("invalid value for parameter"), so its clients only ever got 57P03.
#[test]
fn role_timeouts_postgresql_refuses_are_config_errors() {
    let dir = Dir::new("roles");
    dir.write("users.yaml", USERS_YAML);
    for (key, value) in [
        ("statement_timeout_ms", "3000000000"),
        ("idle_in_transaction_timeout_ms", "2147483648"),
    ] {
        let role =
            "{ command_timeout_ms: 0, statement_timeout_ms: 0, idle_in_transaction_timeout_ms: 0 }"
                .replace(&format!("{key}: 0"), &format!("{key}: {value}"));
        let cfg = dir.write("lp.yaml", &format!("{BASE}roles:\n  read: {role}\n"));
        for mode in ["--check-config", "--config"] {
            let (code, stdout, stderr) = run(&[mode, &cfg]);
            assert_eq!(code, Some(1), "{mode} {key}: {value}\n{stdout}{stderr}");
            assert!(
                stderr.contains(&format!("roles.read.{key}")) && stderr.contains("2147483647"),
                "{stderr}"
            );
        }
    }
}

/// The same value against a real server: before the check, the proxy started and no login
/// of the role worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_postgresql_refuses_is_caught_before_start() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 0").replace(
        "statement_timeout_ms: 30000",
        "statement_timeout_ms: 3000000000",
    );
    let dir = Dir::new("huge");
    dir.write("users.yaml", USERS_YAML);
    let path = dir.write("lp.yaml", &cfg);
    let (code, _, stderr) = run(&["--check-config", &path]);
    if code == Some(0) {
        let proxy = ProxyProcess::start(&cfg, USERS_YAML);
        let err = connect(&proxy, "app_ro", "approp").await.err();
        panic!("--check-config accepted it; a read login then got {err:?}");
    }
    assert!(stderr.contains("statement_timeout_ms"), "{stderr}");
}

/// Checks `body` as Prometheus text format 0.0.4, strictly: valid names and labels, a
/// TYPE before a family's samples and at most once, samples of one family together, no
/// duplicate series, counters named `_total` and never negative, histogram buckets
/// cumulative and ending in `+Inf` equal to `_count`.
fn check_exposition(body: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    if !body.ends_with('\n') {
        return Err("body does not end with a newline".into());
    }
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or(format!("bad comment {line:?}"))?;
            if !name_ok(name) {
                return Err(format!("bad metric name {name:?}"));
            }
            match kw {
                Some("TYPE") => {
                    let t = arg.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(format!("bad type {line:?}"));
                    }
                    if types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(format!("second TYPE for {name}"));
                    }
                    if t == "counter" && !name.ends_with("_total") {
                        return Err(format!("counter {name} not named _total"));
                    }
                }
                Some("HELP") => {}
                _ => return Err(format!("bad comment {line:?}")),
            }
            continue;
        }
        let (text, value) = line.rsplit_once(' ').ok_or(format!("bad line {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value in {line:?}"))?,
        };
        let (name, labels) = match text.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').ok_or(format!("unclosed {line:?}"))?),
            None => (text, ""),
        };
        if !name_ok(name) {
            return Err(format!("bad sample name {line:?}"));
        }
        let labels = parse_labels(labels).map_err(|e| format!("{e} in {line:?}"))?;
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        let Some(kind) = types.get(family) else {
            return Err(format!("sample before (or without) its TYPE: {line:?}"));
        };
        if current.as_deref() != Some(family) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            if closed.contains(family) {
                return Err(format!("samples of {family} are not together"));
            }
            current = Some(family.to_owned());
        }
        if !series.insert(text.to_owned()) {
            return Err(format!("duplicate series {text}"));
        }
        if kind == "counter" && value.is_sign_negative() {
            return Err(format!("negative counter {line:?}"));
        }
        let mut others = labels.clone();
        let le = others.remove("le");
        let key = format!("{family}{others:?}");
        if family != name && name.ends_with("_bucket") {
            let le = match le.as_deref() {
                Some("+Inf") => f64::INFINITY,
                Some(v) => v.parse().map_err(|_| format!("bad le {line:?}"))?,
                None => return Err(format!("bucket without le {line:?}")),
            };
            buckets.entry(key).or_default().push((le, value));
        } else if family != name && name.ends_with("_count") {
            counts.insert(key, value);
        }
    }
    for (key, b) in &buckets {
        if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!("{key}: buckets not cumulative: {b:?}"));
        }
        let last = b.last().copied().unwrap_or_default();
        if last.0 != f64::INFINITY || counts.get(key) != Some(&last.1) {
            return Err(format!("{key}: +Inf bucket missing or not _count"));
        }
    }
    Ok(())
}

/// `k="v",k2="v2"` with Prometheus escapes; names valid, none twice.
fn parse_labels(mut rest: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").ok_or("bad labels")?;
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with("__");
        if !valid {
            return Err(format!("bad label name {k:?}"));
        }
        let (mut end, mut escaped) = (None, false);
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, '\\' | '"' | 'n') => escaped = false,
                (true, _) => return Err("bad escape".into()),
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or("unclosed label value")?;
        if map.insert(k.to_owned(), after[..end].to_owned()).is_some() {
            return Err(format!("label {k} twice"));
        }
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(map)
}

/// The sum of every sample of `name` (all label sets).
fn total(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let n = series.split_once('{').map_or(series, |(n, _)| n);
            (n == name).then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

/// Every error the proxy sends a client counts in `launch_proxy_errors_total` by SQLSTATE
/// class (`metrics::count_error`); the refusals at login did not: a wrong password
/// (28P01), `max_client_conn` (53300), a login while PostgreSQL is down (57P03) left the
/// counter untouched, so an alert on class 57 or 28 stayed silent through an outage or a
/// password-guessing run. The exposition stays strict Prometheus text throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refusals_count_in_errors_total() {
    let mut pg = PgServer::start();
    let cfg = proxy_config(
        &pg,
        "min_pool_size: 0\nacquire_timeout_ms: 500\nreserve_pool_timeout_ms: 200\nmax_client_conn: 2",
    );
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let errors = |class: &str| {
        let body = proxy.metrics();
        check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        metric(&body, "launch_proxy_errors_total", &[("class", class)])
    };
    assert!(connect(&proxy, "app", "wrong").await.is_err());
    assert_eq!(blocking(|| errors("28")), 1.0, "wrong password");
    let a = app(&proxy).await;
    let b = app(&proxy).await;
    assert!(connect(&proxy, "app", "apppw").await.is_err());
    assert_eq!(blocking(|| errors("53")), 1.0, "max_client_conn");
    drop((a, b));
    let gone = eventually(LIMIT, || {
        metric(&proxy.metrics(), "launch_proxy_clients_connected", &[]) == 0.0
    });
    assert!(gone.await);
    blocking(|| pg.stop());
    // app_ro never logged in: its login needs a server connection, and gets 57P03.
    let err = connect(&proxy, "app_ro", "approp")
        .await
        .err()
        .expect("no server");
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert_eq!(code.as_deref(), Some("57P03"), "{err:?}");
    assert_eq!(blocking(|| errors("57")), 1.0, "server down at login");
}

/// A strict parser accepts `/metrics` before and after churn (a failed login, an error, a
/// queued client that hangs up, a client gone mid-transaction, a pause and a resume);
/// afterwards every client gauge is back to 0, no server connection is active, and no
/// counter went down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_strict_prometheus_text_after_churn() {
    let pg = PgServer::start();
    let cfg = proxy_config(
        &pg,
        "min_pool_size: 1\ndefault_pool_size: 1\nreserve_pool_size: 0\nacquire_timeout_ms: 3000",
    );
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let before = proxy.metrics();
    check_exposition(&before).unwrap_or_else(|e| panic!("{e}\n{before}"));
    let _ = connect(&proxy, "app", "nope").await;
    let c = app(&proxy).await;
    assert!(try_col(&c.client, "SELECT 1/0").await.is_err());
    one(&c.client, "BEGIN").await;
    one(&c.client, "SELECT 1").await;
    let q = app(&proxy).await;
    let queued = tokio::spawn(async move {
        let _ = q.client.simple_query("SELECT 2").await;
    });
    assert!(app_clients_reach(&proxy, "waiting", 1.0).await);
    queued.abort();
    c.task.abort();
    drop(c.client);
    proxy.signal("USR1");
    // Two signals sent back to back may be read in either order: USR2 goes once the pause
    // is seen.
    let paused = eventually(LIMIT, || {
        metric(
            &proxy.metrics(),
            "launch_proxy_pool_paused",
            &[("pool", "app")],
        ) == 1.0
    });
    assert!(paused.await, "SIGUSR1 never paused the pool");
    proxy.signal("USR2");
    let d = app(&proxy).await;
    assert_eq!(one(&d.client, "SELECT 3").await, "3");
    drop(d);
    let settled = eventually(LIMIT, || {
        let m = proxy.metrics();
        let active = [("pool", "app"), ("state", "active")];
        metric(&m, "launch_proxy_clients_connected", &[]) == 0.0
            && total(&m, "launch_proxy_client_connections") == 0.0
            && metric(&m, "launch_proxy_server_connections", &active) == 0.0
    });
    let settled = settled.await;
    let after = proxy.metrics();
    assert!(settled, "gauges did not settle:\n{after}");
    check_exposition(&after).unwrap_or_else(|e| panic!("{e}\n{after}"));
    let samples = before.lines().filter(|l| !l.starts_with('#'));
    for line in samples.filter(|l| l.contains("_total")) {
        let (series, v) = line.rsplit_once(' ').unwrap();
        let now = after
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} vanished"));
        let (now, then) = (now.parse::<f64>().unwrap(), v.parse::<f64>().unwrap());
        assert!(now >= then, "{series} went down");
    }
}

/// SIGTERM drains; a second SIGTERM (or SIGINT: Ctrl-C twice) while the drain waits says
/// "stop now", as most daemons read it. It was ignored, not even logged: the proxy went
/// on waiting for the whole shutdown_timeout_ms and only SIGKILL ended it sooner. Now it
/// stops waiting, cancels the statements still running (PostgreSQL would notice the closed
/// connection only when a statement ends), its clients' server connections close
/// (PostgreSQL rolls their transactions back), and it exits 0 as when the timeout ends the
/// drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_the_drain() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 0") + "shutdown_timeout_ms: 25000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let busy = app(&proxy).await;
    one(&busy.client, "BEGIN").await;
    let sleeping = tokio::spawn(async move {
        let r = busy.client.simple_query("SELECT pg_sleep(300)").await;
        (busy.task, r.is_ok())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    proxy.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(blocking(|| proxy.is_running()), "the first SIGTERM drains");
    proxy.sigterm();
    let status = blocking(|| proxy.wait_exit(Duration::from_secs(10)));
    let status = status.unwrap_or_else(|| {
        let waited = t0.elapsed();
        panic!(
            "still draining {waited:?} after a second SIGTERM; log:\n{}",
            proxy.log()
        )
    });
    assert!(status.success(), "{status}");
    let (_, finished) = tokio::time::timeout(LIMIT, sleeping)
        .await
        .unwrap()
        .unwrap();
    assert!(!finished, "the statement cannot have finished");
    // The statement is cancelled as the proxy exits: its backend does not run on for
    // the rest of its five minutes.
    let gone = eventually(LIMIT, || pg.server_backend_count("app") == 0);
    assert!(gone.await, "the transaction's backend stays");
    assert!(proxy.log().contains("second"), "{}", proxy.log());
    assert!(
        proxy
            .log()
            .contains("cancelled the statements still running"),
        "{}",
        proxy.log()
    );
}

/// Under systemd (`Type=notify`) the proxy says READY=1 once it serves and STOPPING=1 as
/// soon as SIGTERM starts the drain, then exits 0.
#[test]
fn systemd_hears_ready_then_stopping() {
    let pg = PgServer::start();
    let dir = Dir::new("notify");
    dir.write("users.yaml", USERS_YAML);
    let cfg = proxy_config(&pg, "min_pool_size: 0")
        .replace(
            "0.0.0.0:6432",
            &format!("127.0.0.1:{}", common::free_port()),
        )
        .replace("127.0.0.1:9127", "");
    let path = dir.write("lp.yaml", &cfg);
    let sock = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify.set_read_timeout(Some(LIMIT)).unwrap();
    let mut child = Command::new(common::proxy_binary())
        .args(["--config", &path])
        .env("NOTIFY_SOCKET", &sock)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut expect = |what: &str| loop {
        let mut buf = [0u8; 512];
        let n = notify
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} ({e}); got {seen:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = msg.lines().any(|l| l == what);
        seen.push(msg);
        if found {
            return;
        }
    };
    expect("READY=1");
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()));
    expect("STOPPING=1");
    let end = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
}

/// `/health` said "ok" whatever PostgreSQL did. It is 503, naming the pool and the error,
/// while a pool's server logins fail, and "ok" again once the server is back, even for a
/// pool no client uses meanwhile (min_pool_size 0: nothing else would try a login, and a
/// load balancer that believes the 503 sends no client that would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_server() {
    let mut pg = PgServer::start();
    let cfg = proxy_config(
        &pg,
        "min_pool_size: 0\nacquire_timeout_ms: 500\nreserve_pool_timeout_ms: 200",
    );
    let proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let c = app(&proxy).await;
    assert_eq!(one(&c.client, "SELECT 1").await, "1");
    let health = || blocking(|| proxy.http_get("/health"));
    assert_eq!(health(), (200, "ok\n".to_owned()));
    blocking(|| pg.stop());
    assert!(try_col(&c.client, "SELECT 2").await.is_err(), "no server");
    let (status, body) = health();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("pool \"app\""), "{body}");
    blocking(|| pg.restart());
    let back = eventually(LIMIT, || proxy.http_get("/health").0 == 200).await;
    assert!(back, "{:?}", health());
}

/// Every `--check-config` warning is one readable line: the statement-guard warning had a
/// run of 14 spaces in its middle (a string literal broken across lines without `\`).
#[test]
fn check_config_warnings_have_no_stray_whitespace() {
    let dir = Dir::new("guard");
    dir.write("users.yaml", USERS_YAML);
    let cfg = dir.write(
        "lp.yaml",
        &format!("{BASE}tenant: {{ statement_guard: false }}\n"),
    );
    let (code, _, stderr) = run(&["--check-config", &cfg]);
    assert_eq!(code, Some(0), "{stderr}");
    let guard = stderr.lines().find(|l| l.contains("statement_guard"));
    let guard = guard.unwrap_or_else(|| panic!("no statement_guard warning:\n{stderr}"));
    assert!(!guard.contains("  "), "{guard:?}");
}

/// The metrics listener used to close at SIGTERM: through the drain (up to
/// shutdown_timeout_ms, 30 s by default) every scrape failed, just while an operator
/// watches the clients go. It answers until the process exits: /metrics shows the client
/// still in its transaction, and /health says 503 "shutting down" so that a load balancer
/// sends nobody new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_answer_during_the_drain() {
    let pg = PgServer::start();
    let cfg = proxy_config(&pg, "min_pool_size: 0") + "shutdown_timeout_ms: 20000\n";
    let mut proxy = ProxyProcess::start(&cfg, USERS_YAML);
    let busy = app(&proxy).await;
    one(&busy.client, "BEGIN").await;
    one(&busy.client, "SELECT 1").await;
    proxy.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(blocking(|| proxy.is_running()), "drains");
    let body = blocking(|| proxy.metrics());
    check_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(metric(&body, "launch_proxy_clients_connected", &[]), 1.0);
    let (status, text) = blocking(|| proxy.http_get("/health"));
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("shutting down"), "{text}");
    one(&busy.client, "COMMIT").await;
    let status = blocking(|| proxy.wait_exit(LIMIT)).expect("exits once drained");
    assert!(status.success(), "{status}");
}

/// Every server connection that opened and closed is counted in
/// `launch_proxy_server_connections_closed_total` once, under some reason: one lost in the
/// middle of a client's statement (its backend terminated) counted under none before, so
/// opened minus closed drifted above the connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_closed_server_connection_is_counted() {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 0"), USERS_YAML);
    let c = app(&proxy).await;
    let client = c.client;
    let q = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(60)").await });
    let running = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                   AND query LIKE '%SELECT pg_sleep(60)'";
    assert!(eventually(LIMIT, || pg.psql("launch", running) == "1").await);
    pg.psql(
        "launch",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = 'app' AND query LIKE '%SELECT pg_sleep(60)'",
    );
    let r = tokio::time::timeout(LIMIT, q)
        .await
        .expect("hangs")
        .unwrap();
    assert!(r.is_err(), "the statement's backend was terminated");
    assert_eq!(one(&app(&proxy).await.client, "SELECT 1").await, "1");
    let balanced = || {
        let m = proxy.metrics();
        let opened = metric(
            &m,
            "launch_proxy_server_connects_total",
            &[("pool", "app"), ("result", "ok")],
        );
        let closed = total(&m, "launch_proxy_server_connections_closed_total");
        let open = total(&m, "launch_proxy_server_connections");
        let other = metric(
            &m,
            "launch_proxy_server_connections_closed_total",
            &[("pool", "app"), ("reason", "other")],
        );
        opened >= 2.0 && opened - closed == open && other == 1.0
    };
    let seen = eventually(LIMIT, || blocking(balanced)).await;
    assert!(seen, "opened - closed != open:\n{}", proxy.metrics());
}

/// Idle connections to the metrics port cannot use up the process's file descriptors:
/// beyond `MAX_OPEN` (32) at once they are closed as they come, the proxy's own port serves
/// on, and those that send no request lose their place after `REQUEST_WITHIN`, so a scrape
/// is answered while they stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_are_capped() {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 1"), USERS_YAML);
    proxy.metrics();
    let before = proxy.open_fds();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], proxy.metrics_port));
    let idle: Vec<_> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    assert_eq!(idle.len(), 300, "the kernel's backlog takes them all");
    for s in &idle {
        s.set_nonblocking(true).unwrap();
    }
    // Closed by the proxy: the peer reads end-of-file.
    let closed = || {
        idle.iter()
            .filter(|s| matches!(std::io::Read::read(&mut &**s, &mut [0u8; 1]), Ok(0)))
            .count()
    };
    // Every connection taken off the listener's backlog (ss: Recv-Q of a listening socket).
    let backlog = || {
        let out = Command::new("ss")
            .args(["-Hltn", &format!("sport = :{}", proxy.metrics_port)])
            .output()
            .expect("ss");
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        out.split_whitespace()
            .nth(1)
            .and_then(|q| q.parse::<usize>().ok())
    };
    let accepted = eventually(LIMIT, || backlog() == Some(0)).await;
    assert!(accepted, "backlog: {:?}", backlog());
    let during = proxy.open_fds();
    assert!(
        during <= before + 32 + 8,
        "{during} descriptors open with 300 idle metrics connections (before: {before})"
    );
    let turned_away = eventually(LIMIT, || closed() >= 300 - 32).await;
    assert!(turned_away, "{} of 300 closed", closed());
    let c = proxy
        .connect("app", "apppw")
        .await
        .expect("the proxy port serves");
    c.simple_query("SELECT 1").await.unwrap();
    // The 32 that got a place sent no request: each holds it for REQUEST_WITHIN (2 s),
    // not for the 10 s an answer may take, so scrapes get through while they stay open.
    let freed = eventually(Duration::from_secs(8), || closed() == 300).await;
    assert!(freed, "{} of 300 closed", closed());
    let scraped = eventually(LIMIT, || {
        let get = std::panic::AssertUnwindSafe(|| proxy.http_get("/metrics").0 == 200);
        std::panic::catch_unwind(get).unwrap_or(false)
    })
    .await;
    assert!(scraped, "no scrape answered beside 300 idle connections");
    drop(idle);
}
