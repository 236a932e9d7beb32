//! What an operator relies on: `--check-config` output free of secrets and refusing values
//! PostgreSQL would refuse, `/metrics` that is strict Prometheus text and counts every
//! error sent to a client, and signals (SIGTERM twice, systemd's STOPPING=1) that behave
//! as documented; checked against real PostgreSQL servers.

mod common;

use common::client::connect;
use common::{proxy_config, PgServer, ProxyProcess, USERS_YAML};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_launch-proxy");

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
    let out = Command::new(BIN)
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
        let role = format!(
            "{{ command_timeout_ms: 0, statement_timeout_ms: 0, idle_in_transaction_timeout_ms: 0 }}"
        )
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
