//! What an operator relies on: `--check-config` output free of secrets and refusing values
//! PostgreSQL would refuse, `/metrics` that is strict Prometheus text and counts every
//! error sent to a client, and signals (SIGTERM twice, systemd's STOPPING=1) that behave
//! as documented; checked against real PostgreSQL servers.

mod common;

use common::USERS_YAML;
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
