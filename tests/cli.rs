//! The launch-proxy command line: `--check-config` (effective settings as YAML, secrets
//! never printed, warnings for self-defeating settings, clear errors for bad configs),
//! and the `--listen` / `--metrics-listen` flags and their environment variables, the
//! latter checked on a proxy serving a real PostgreSQL.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{free_port, proxy_config, wait_for_port, PgServer, ProxyProcess, USERS_YAML};
use serde_norway::Value;

const NO_HANG: Duration = Duration::from_secs(20);
const ENV_VARS: [&str; 4] = [
    "LAUNCH_PROXY_CONFIG",
    "LAUNCH_PROXY_LISTEN",
    "LAUNCH_PROXY_METRICS_LISTEN",
    "RUST_LOG",
];

/// A pool section that draws no warning (reserve fits under the caps, reserve timeout
/// shorter than the acquire timeout, few clients for the open-files limit).
const POOL: &str = "default_pool_size: 20, min_pool_size: 2, reserve_pool_size: 5, \
                    reserve_pool_timeout_ms: 1000, max_client_conn: 100";
const ROLES: &str = "\
roles:
  read:  { command_timeout_ms: 10000, statement_timeout_ms: 5000, idle_in_transaction_timeout_ms: 60000 }
  write: { command_timeout_ms: 30000, statement_timeout_ms: 20000, idle_in_transaction_timeout_ms: 60000 }
";

/// A config without warnings; `pool` replaces the pool mapping's contents and `top`
/// lines are appended at top level.
fn config(pool: &str, top: &str) -> String {
    format!(
        "listen: \"127.0.0.1:16432\"\nmetrics_listen: \"127.0.0.1:19127\"\n\
         server: {{ host: 127.0.0.1, port: 5432, database: launch }}\n\
         users_file: users.yaml\npool: {{ {pool} }}\n{ROLES}{top}\n"
    )
}

/// A fresh directory under the harness's test root, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = common::test_run_dir().join(format!("cli-{name}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (killed after 20 s) with a clean LAUNCH_PROXY_* env.
fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(common::proxy_binary());
    cmd.args(args).stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("start launch-proxy");
    let deadline = Instant::now() + NO_HANG;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("launch-proxy {args:?} did not exit within {NO_HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `--check-config` on `config` and `users` written to a temp dir.
fn check(config: &str, users: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = TempDir::new("check");
    let path = dir.write("launch-proxy.yaml", config);
    dir.write("users.yaml", users);
    let mut args = vec!["--check-config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, env)
}

/// The effective settings printed on stdout, parsed.
fn settings(run: &Run) -> Value {
    serde_norway::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not YAML ({e}):\n{}", run.stdout))
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| {
        v.get(k)
            .unwrap_or_else(|| panic!("no {path} in settings: {v:?}"))
    })
}

fn warnings(run: &Run) -> Vec<&str> {
    let lines = run.stderr.lines();
    lines.filter(|l| l.starts_with("warning: ")).collect()
}

fn assert_ok(run: &Run) {
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let n = warnings(run).len();
    let summary = format!("# configuration OK ({n} warning(s))");
    assert!(run.stdout.contains(&summary), "{}", run.stdout);
    let other: Vec<_> = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .collect();
    assert!(other.is_empty(), "unexpected stderr lines: {other:?}");
}

// ---------- --check-config ----------

/// The shipped config/launch-proxy.yaml checks OK, prints its effective settings as
/// YAML without the users' passwords, and warns that the reserve pool is unusable
/// (default_pool_size 100 + reserve 50 > max_db_connections 100), saying what the
/// proxy does instead.
#[test]
fn shipped_config_checks_with_reserve_warning() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/launch-proxy.yaml");
    let run = run(&["--check-config", path.to_str().unwrap()], &[]);
    assert_ok(&run);
    let s = settings(&run);
    for (key, want) in [
        ("listen", "0.0.0.0:6432"),
        ("metrics_listen", "127.0.0.1:9127"),
        ("server.database", "launch"),
        ("pool.mode", "transaction"),
        ("users.app.role", "write"),
        ("users.app_ro.role", "read"),
        ("users.app.secret", "password"),
    ] {
        assert_eq!(get(&s, key).as_str(), Some(want), "{key}");
    }
    for (key, want) in [
        ("server.port", 5432),
        ("pool.default_pool_size", 100),
        ("pool.reserve_pool_size", 50),
        ("pool.max_db_connections", 100),
        ("pool.min_pool_size", 10),
        ("roles.read.command_timeout_ms", 10000),
    ] {
        assert_eq!(get(&s, key).as_u64(), Some(want), "{key}");
    }
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains("apppw") && !all.contains("approp"),
        "secret printed:\n{all}"
    );
    let w = warnings(&run);
    let reserve = w
        .iter()
        .find(|l| l.contains("reserve pool") && l.contains("max_db_connections (100)"))
        .unwrap_or_else(|| panic!("no reserve-pool warning in {w:#?}"));
    for part in [
        "default_pool_size (100) + reserve_pool_size (50)",
        "unusable",
        "never opens more than max_db_connections",
        "53300",
    ] {
        assert!(reserve.contains(part), "{part:?} missing from {reserve}");
    }
}

/// A sound config draws no warning; every kind of secret (plain, SCRAM verifier, md5
/// hash, file, environment, server password) is described by kind, never by value,
/// and unset keys show their defaults.
#[test]
fn clean_config_hides_every_secret() {
    let dir = TempDir::new("hide");
    let server_pw = dir.write("server.pw", "srv-secret-file\n");
    let b64 = |n: usize| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
    };
    let verifier = format!("SCRAM-SHA-256$4096:{}${}:{}", b64(16), b64(32), b64(32));
    let md5 = format!("md5{}", "0123456789abcdef".repeat(2));
    let users = format!(
        "users:\n  plain: {{ password: plain-secret-1, role: write }}\n  \
         verif: {{ password: \"{verifier}\", role: read }}\n  \
         hashed: {{ password: {md5}, auth: md5, role: read, server_password: srv-secret-2 }}\n  \
         fromenv: {{ password_env: LP_CLI_TEST_PW, role: write, \
         server_password_file: \"{}\" }}\n",
        server_pw.display()
    );
    let run = check(
        &config(POOL, ""),
        &users,
        &[],
        &[("LP_CLI_TEST_PW", "env-secret-3")],
    );
    assert_ok(&run);
    assert!(warnings(&run).is_empty(), "{}", run.stderr);
    let s = settings(&run);
    for (user, secret, login, auth) in [
        ("plain", "password", "password", "scram-sha-256"),
        (
            "verif",
            "scram-sha-256 verifier",
            "client's scram keys",
            "scram-sha-256",
        ),
        ("hashed", "md5 hash", "password", "md5"),
        ("fromenv", "password", "password", "scram-sha-256"),
    ] {
        let u = get(&s, &format!("users.{user}"));
        assert_eq!(get(u, "secret").as_str(), Some(secret), "{user}");
        assert_eq!(get(u, "server_login").as_str(), Some(login), "{user}");
        assert_eq!(get(u, "client_auth").as_str(), Some(auth), "{user}");
    }
    let all = format!("{}{}", run.stdout, run.stderr);
    let leaked = [
        "secret-1",
        "secret-2",
        "secret-3",
        "secret-file",
        &b64(32),
        &md5[3..],
    ];
    for secret in leaked {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    for (key, want) in [
        ("workers", 1),
        ("client_login_timeout_ms", 15000),
        ("shutdown_timeout_ms", 30000),
        ("max_client_message_bytes", 64 << 20),
        ("pool.max_db_connections", 100),
        ("pool.acquire_timeout_ms", 5000),
    ] {
        assert_eq!(get(&s, key).as_u64(), Some(want), "default of {key}");
    }
}

/// Unknown keys, bad values, impossible combinations and missing files are refused
/// with exit code 1 and a message naming the problem (and no secret), both by
/// `--check-config` and when starting with `--config`.
#[test]
fn bad_configs_are_refused_with_clear_messages() {
    let users = "users:\n  app: { password: hunter2-pw, role: write }\n";
    let user = |entry: &str| format!("users:\n  app: {{ {entry} }}\n");
    let md5 = format!("md5{}", "ab".repeat(16));
    // (config, users file, the error must contain these)
    #[rustfmt::skip]
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (config(POOL, "bogus_key: 1"), users.into(), vec!["unknown field `bogus_key`", "launch-proxy.yaml"]),
        (config(&format!("{POOL}, max_conns: 5"), ""), users.into(), vec!["unknown field `max_conns`"]),
        (config(POOL, ""), user("password: x, role: write, pasword: y"), vec!["unknown field `pasword`", "users.yaml"]),
        (config(&format!("{POOL}, mode: bogus"), ""), users.into(), vec!["unknown variant `bogus`"]),
        (config("default_pool_size: -1", ""), users.into(), vec!["default_pool_size", "-1"]),
        (config(&format!("{POOL}, acquire_timeout_ms: -5"), ""), users.into(), vec!["acquire_timeout_ms", "-5"]),
        (config(&format!("{POOL}, acquire_timeout_ms: 0"), ""), users.into(), vec!["acquire_timeout_ms must be greater than 0"]),
        (config(POOL, "workers: 0"), users.into(), vec!["workers: 0 is out of range"]),
        (config(POOL, "max_client_message_bytes: 100"), users.into(), vec!["max_client_message_bytes must be at least 8192"]),
        (config(POOL, "").replace("127.0.0.1:16432", "not-an-address"), users.into(), vec!["listen: \"not-an-address\" is not an address:port"]),
        (config(POOL, "").replace("127.0.0.1:16432", "127.0.0.1"), users.into(), vec!["listen: \"127.0.0.1\""]),
        (config(POOL, "").replace("19127", "16432"), users.into(), vec!["metrics_listen must differ from listen"]),
        (config("default_pool_size: 10, min_pool_size: 30", ""), users.into(), vec!["min_pool_size (30) cannot exceed pool.default_pool_size (10)"]),
        (config("default_pool_size: 10, min_pool_size: 5, max_db_connections: 3", ""), users.into(), vec!["min_pool_size (5) cannot exceed pool.max_db_connections (3)"]),
        (config(POOL, ""), user("password: hunter2-pw, password_env: HOME, role: write"), vec!["app", "give only one of password, password_file and password_env"]),
        (config(POOL, ""), user("password_env: LP_CLI_SURELY_UNSET, role: write"), vec!["environment variable LP_CLI_SURELY_UNSET is not set"]),
        (config(POOL, ""), user("password_file: no-such.pw, role: write"), vec!["password_file", "no-such.pw"]),
        (config(POOL, ""), user("role: write"), vec!["needs one of password, password_file or password_env"]),
        (config(POOL, ""), user(&format!("password: {md5}, role: write, server_password: hunter2-pw")), vec!["auth: md5"]),
        (config(POOL, ""), user(&format!("password: {md5}, auth: md5, role: write")), vec!["add server_password"]),
        (config(POOL, ""), user("password: \"SCRAM-SHA-256$4096:abc\", role: write"), vec!["SCRAM verifier", "invalid"]),
        (config(POOL, ""), user("password: x, role: admin"), vec!["unknown variant `admin`"]),
        (config(POOL, ""), user("password: x, role: read, auth: sha1"), vec!["unknown variant `sha1`"]),
        (config(POOL, ""), "users: {}\n".into(), vec!["lists no users"]),
        (config(POOL, "").replace("users.yaml", "missing-users.yaml"), users.into(), vec!["cannot read", "missing-users.yaml"]),
        (config(POOL, "pool_extra: [\n"), users.into(), vec!["launch-proxy.yaml"]),
    ];
    for (i, (cfg, users, wants)) in cases.iter().enumerate() {
        let dir = TempDir::new("bad");
        let path = dir.write("launch-proxy.yaml", cfg);
        dir.write("users.yaml", users);
        let path = path.to_str().unwrap();
        for mode in ["--check-config", "--config"] {
            let r = run(&[mode, path], &[]);
            let ctx = format!(
                "case {i} {mode}\nconfig:\n{cfg}\nusers:\n{users}\nstderr:\n{}",
                r.stderr
            );
            assert_eq!(r.code, Some(1), "{ctx}");
            for want in wants {
                assert!(r.stderr.contains(want), "{want:?} missing; {ctx}");
            }
            assert!(
                !r.stderr.contains("hunter2") && !r.stdout.contains("hunter2"),
                "{ctx}"
            );
            assert!(!r.stdout.contains("configuration OK"), "{ctx}");
        }
    }
    let r = run(&["--check-config", "/nonexistent/launch-proxy.yaml"], &[]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("cannot read /nonexistent/launch-proxy.yaml"),
        "{}",
        r.stderr
    );
    let r = run(&[], &[]);
    assert_eq!(r.code, Some(2), "no config given: {}", r.stderr);
    assert!(r.stderr.contains("--config"), "{}", r.stderr);
}

/// `--listen` / `--metrics-listen` and LAUNCH_PROXY_LISTEN / LAUNCH_PROXY_METRICS_LISTEN
/// override the config's addresses in the checked settings; the flag wins over the
/// variable, an empty metrics address disables metrics, and a bad override is an error.
#[test]
fn address_overrides_in_check_config() {
    let cfg = config(POOL, "");
    let users = "users:\n  app: { password: x, role: write }\n";
    let addrs = |run: &Run| {
        assert_ok(run);
        let s = settings(run);
        let text = |k| get(&s, k).as_str().unwrap().to_owned();
        (text("listen"), text("metrics_listen"))
    };
    let flags = [
        "--listen",
        "127.0.0.1:7001",
        "--metrics-listen",
        "127.0.0.1:7002",
    ];
    let env = [
        ("LAUNCH_PROXY_LISTEN", "127.0.0.1:7003"),
        ("LAUNCH_PROXY_METRICS_LISTEN", "127.0.0.1:7004"),
    ];
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    let base = pair("127.0.0.1:16432", "127.0.0.1:19127");
    assert_eq!(addrs(&check(&cfg, users, &[], &[])), base);
    let flagged = pair("127.0.0.1:7001", "127.0.0.1:7002");
    assert_eq!(addrs(&check(&cfg, users, &flags, &[])), flagged);
    let from_env = pair("127.0.0.1:7003", "127.0.0.1:7004");
    assert_eq!(addrs(&check(&cfg, users, &[], &env)), from_env);
    assert_eq!(
        addrs(&check(&cfg, users, &flags, &env)),
        flagged,
        "flag beats env"
    );
    let off = check(&cfg, users, &["--metrics-listen", ""], &[]);
    assert_eq!(addrs(&off), pair("127.0.0.1:16432", ""));
    let bad = check(&cfg, users, &["--listen", "localhost"], &[]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("listen: \"localhost\""),
        "{}",
        bad.stderr
    );
    let bad = check(&cfg, users, &[], &[("LAUNCH_PROXY_METRICS_LISTEN", "x:y")]);
    assert_eq!(bad.code, Some(1));
    assert!(
        bad.stderr.contains("metrics_listen: \"x:y\""),
        "{}",
        bad.stderr
    );
}

// ---------- a running proxy ----------

/// A proxy started by hand (ProxyProcess always passes address flags); killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Running {
    fn start(
        pg: &PgServer,
        listen: u16,
        metrics: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        Self::start_with(pg, listen, metrics, "", args, env)
    }

    /// `top`: lines appended to the config at top level.
    fn start_with(
        pg: &PgServer,
        listen: u16,
        metrics: u16,
        top: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Running {
        let dir = TempDir::new("run");
        let cfg = proxy_config(pg, "min_pool_size: 1")
            .replace("0.0.0.0:6432", &format!("127.0.0.1:{listen}"))
            .replace("127.0.0.1:9127", &format!("127.0.0.1:{metrics}"))
            + top;
        let path = dir.write("launch-proxy.yaml", &cfg);
        dir.write("users.yaml", USERS_YAML);
        let log = dir.0.join("proxy.log");
        let file = std::fs::File::create(&log).expect("create log");
        let mut cmd = Command::new(common::proxy_binary());
        for v in ENV_VARS {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null());
        if !env.iter().any(|(k, _)| *k == "LAUNCH_PROXY_CONFIG") {
            cmd.arg("--config").arg(&path);
        }
        cmd.stdout(file.try_clone().unwrap()).stderr(file);
        let child = cmd.spawn().expect("start launch-proxy");
        Running {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- launch-proxy log ---\n{}", self.log());
        }
    }
}

/// Holds 127.0.0.1:`port` so that a proxy trying to bind it would fail and exit.
fn hold(port: u16) -> std::net::TcpListener {
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold port")
}

/// Waits until the proxy accepts on `port`, failing early with its log if it exits.
fn wait_serving(proxy: &mut Running, port: u16, what: &str) {
    let deadline = Instant::now() + NO_HANG;
    while !wait_for_port(port, Duration::from_millis(200)) {
        let exited = proxy.child.try_wait().expect("try_wait");
        if exited.is_some() || Instant::now() > deadline {
            panic!(
                "{what}: not serving on {port} ({exited:?}); log:\n{}",
                proxy.log()
            );
        }
    }
}

fn get_metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(NO_HANG)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read metrics");
    text
}

async fn query_through(port: u16) -> String {
    let conn = format!("host=127.0.0.1 port={port} user=app password=apppw dbname=launch");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect through proxy");
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    row.get(0)
}

/// The environment variables move a running proxy's client and metrics listeners away
/// from the config's addresses (the config's ports stay closed) and it serves
/// PostgreSQL there; `--listen` beats LAUNCH_PROXY_LISTEN; LAUNCH_PROXY_CONFIG names
/// the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_overrides_on_a_running_proxy() {
    let pg = PgServer::start();
    let [cfg_port, cfg_metrics, env_port, env_metrics, flag_port, metrics3] =
        [(); 6].map(|_| free_port());
    let listen = |port| format!("127.0.0.1:{port}");
    let (env_listen, env_mlisten) = (listen(env_port), listen(env_metrics));
    let env = [
        ("LAUNCH_PROXY_LISTEN", env_listen.as_str()),
        ("LAUNCH_PROXY_METRICS_LISTEN", env_mlisten.as_str()),
    ];
    // Held ports: a proxy that tried to bind them would exit instead of serving.
    let held = [hold(cfg_port), hold(cfg_metrics)];
    let mut proxy = Running::start(&pg, cfg_port, cfg_metrics, &[], &env);
    wait_serving(&mut proxy, env_port, "LAUNCH_PROXY_LISTEN");
    assert_eq!(query_through(env_port).await, "app");
    let metrics = get_metrics(env_metrics);
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("launch_proxy_clients_accepted_total"),
        "{metrics}"
    );
    drop(proxy);

    let held_env = hold(env_port);
    let flag = listen(flag_port);
    let mut proxy = Running::start(&pg, cfg_port, cfg_metrics, &["--listen", &flag], &env);
    wait_serving(&mut proxy, flag_port, "--listen over LAUNCH_PROXY_LISTEN");
    assert_eq!(query_through(flag_port).await, "app");
    drop((proxy, held, held_env));

    let dir = TempDir::new("envcfg");
    let cfg = proxy_config(&pg, "min_pool_size: 1")
        .replace("0.0.0.0:6432", &flag)
        .replace("127.0.0.1:9127", &listen(metrics3));
    let path = dir.write("launch-proxy.yaml", &cfg);
    dir.write("users.yaml", USERS_YAML);
    let env = [("LAUNCH_PROXY_CONFIG", path.to_str().unwrap())];
    let mut proxy = Running::start(&pg, 0, 0, &[], &env);
    wait_serving(&mut proxy, flag_port, "LAUNCH_PROXY_CONFIG");
    assert_eq!(query_through(flag_port).await, "app");
    assert!(get_metrics(metrics3).starts_with("HTTP/1.1 200"));
}

/// Starting with the shipped settings logs the same reserve-pool warning as
/// `--check-config` and serves clients anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_warnings_are_logged_at_startup() {
    let pg = PgServer::start();
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 1"), USERS_YAML);
    let client = proxy.connect("app_ro", "approp").await.expect("login");
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app_ro");
    let log = proxy.log();
    let warning = log.lines().find(|l| {
        l.contains("WARN") && l.contains("reserve pool") && l.contains("max_db_connections (100)")
    });
    assert!(
        warning.is_some(),
        "no reserve-pool warning in the log:\n{log}"
    );
}

/// The scheduling policy (field 41 of /proc/PID/task/TID/stat) of each of a process's threads.
fn thread_policies(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    tasks
        .map(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
            // Fields after the command name, which ends at the last ')', start at field 3.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(41 - 3).unwrap().parse().unwrap()
        })
        .collect()
}

/// By default every thread of the proxy runs under SCHED_BATCH (3) and it serves clients;
/// `cpu_scheduling: normal` keeps them under SCHED_OTHER (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_scheduling_applies_to_every_thread() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    let pg = PgServer::start();
    for (top, policy) in [("", SCHED_BATCH), ("cpu_scheduling: normal\n", SCHED_OTHER)] {
        let [port, metrics] = [(); 2].map(|_| free_port());
        let mut proxy = Running::start_with(&pg, port, metrics, top, &[], &[]);
        wait_serving(&mut proxy, port, top);
        assert_eq!(query_through(port).await, "app");
        let policies = thread_policies(proxy.child.id());
        assert!(
            !policies.is_empty() && policies.iter().all(|p| *p == policy),
            "config {top:?}: thread policies {policies:?}, want all {policy}; log:\n{}",
            proxy.log()
        );
    }
}
