//! Unit tests for loading and validation.

use super::load::{load, LoadOverrides};
use super::{ClientSecret, ServerLogin};
use std::path::PathBuf;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(config: &str, users: &str) -> (Dir, PathBuf) {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    let dir = std::env::temp_dir().join(format!("lp-config-{}", u64::from_ne_bytes(b)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lp.yaml"), config).unwrap();
    std::fs::write(dir.join("users.yaml"), users).unwrap();
    let path = dir.join("lp.yaml");
    (Dir(dir), path)
}

const BASE: &str =
    "server: { host: 127.0.0.1, port: 5432, database: launch }\nusers_file: users.yaml\n";
const USERS: &str = "users:\n  app: { password: \"apppw\", role: write }\n";

fn load_str(config: &str, users: &str) -> Result<super::Settings, String> {
    let (_d, path) = write(config, users);
    load(&path, &LoadOverrides::default()).map_err(|e| e.to_string())
}

#[test]
fn defaults_are_the_seeds() {
    let s = load_str(BASE, USERS).unwrap();
    let p = &s.config.pool;
    assert_eq!(
        (p.max_client_conn, p.default_pool_size, p.min_pool_size),
        (2000, 100, 10)
    );
    assert_eq!(
        (
            p.reserve_pool_size,
            p.max_db_connections,
            p.max_user_connections
        ),
        (50, 100, 100)
    );
    assert_eq!(
        (
            p.acquire_timeout_ms,
            p.connect_timeout_ms,
            p.connect_retry_interval_ms
        ),
        (5000, 5000, 200)
    );
    assert_eq!((p.idle_timeout_ms, p.server_max_uses), (60_000, 7200));
    assert_eq!(s.config.roles.read.command_timeout_ms, 10_000);
    assert_eq!(s.config.roles.write.statement_timeout_ms, 60_000);
    assert!(s
        .warnings
        .iter()
        .any(|w| w.0.contains("reserve pool") && w.0.contains("max_db_connections")));
}

#[test]
fn shipped_config_loads_with_the_reserve_warning() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/launch-proxy.yaml");
    let s = load(&path, &LoadOverrides::default()).unwrap();
    assert_eq!(s.listen.port(), 6432);
    assert!(s.warnings.iter().any(|w| w.0.contains("reserve pool")));
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let e = load_str(&format!("{BASE}pool: {{ defualt_pool_size: 5 }}\n"), USERS).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
    let e = load_str(&format!("{BASE}pool: {{ mode: statement }}\n"), USERS).unwrap_err();
    assert!(e.contains("unknown variant"), "{e}");
    let e = load_str(&format!("{BASE}pool: {{ max_client_conn: -1 }}\n"), USERS).unwrap_err();
    assert!(
        e.contains("max_client_conn") || e.contains("invalid"),
        "{e}"
    );
    let e = load_str(&format!("{BASE}listen: nowhere\n"), USERS).unwrap_err();
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn impossible_combinations_are_errors() {
    let e = load_str(
        &format!("{BASE}pool: {{ min_pool_size: 20, default_pool_size: 10 }}\n"),
        USERS,
    )
    .unwrap_err();
    assert!(e.contains("min_pool_size"), "{e}");
    let e = load_str(
        BASE,
        "users:\n  a: { password: x, password_env: Y, role: read }\n",
    )
    .unwrap_err();
    assert!(e.contains("only one"), "{e}");
    let e = load_str(
        BASE,
        "users:\n  a: { password_env: LP_SURELY_UNSET_VAR, role: read }\n",
    )
    .unwrap_err();
    assert!(e.contains("LP_SURELY_UNSET_VAR"), "{e}");
    let e = load_str(
        BASE,
        "users:\n  a: { password: md5d41d8cd98f00b204e9800998ecf8427e, role: read }\n",
    )
    .unwrap_err();
    assert!(e.contains("md5"), "{e}");
    let e = load_str(BASE, "users: {}\n").unwrap_err();
    assert!(e.contains("no users"), "{e}");
}

#[test]
fn secrets_resolve_and_pick_the_server_login() {
    let s = load_str(BASE, USERS).unwrap();
    let app = &s.users["app"];
    assert!(matches!(app.secret, ClientSecret::Plain(_)));
    assert!(matches!(app.server_login, ServerLogin::Password(ref p) if p == "apppw"));
    assert!(app.scram_verifier.is_some());
    let v = crate::auth::scram::ScramVerifier::from_password("pw", None, 4096).to_string();
    let s = load_str(
        BASE,
        &format!("users:\n  ro: {{ password: \"{v}\", role: read }}\n"),
    )
    .unwrap();
    assert!(matches!(
        s.users["ro"].server_login,
        ServerLogin::ScramPassthrough
    ));
    let s = load_str(
        BASE,
        "users:\n  m: { password: apppw, role: read, auth: md5 }\n",
    )
    .unwrap();
    assert!(s.users["m"].scram_verifier.is_none());
}

#[test]
fn the_admin_console_is_for_tenant_less_users_on_a_database_of_its_own() {
    let key = "tenant: { signing_key: \"".to_owned() + &"ab".repeat(32) + "\" }\n";
    let users = "users:\n  app: { password: \"apppw\", role: write }\n  \
                 acme: { password: p, role: write, tenant: \"01HZY3M8Q5V6W7X8Y9Z0ABCDEF\", server_user: app }\n";
    let ok = load_str(&format!("{BASE}{key}admin: {{ users: [app] }}\n"), users).unwrap();
    assert_eq!(ok.config.admin.database, "pgbouncer");
    let e = load_str(
        &format!("{BASE}{key}admin: {{ stats_users: [acme] }}\n"),
        users,
    )
    .unwrap_err();
    assert!(e.contains("admin user \"acme\" has a tenant"), "{e}");
    let e = load_str(&format!("{BASE}admin: {{ database: launch }}\n"), USERS).unwrap_err();
    assert!(e.contains("admin.database"), "{e}");
    let warned = load_str(&format!("{BASE}admin: {{ users: [ghost] }}\n"), USERS).unwrap();
    assert!(
        warned
            .warnings
            .iter()
            .any(|w| w.to_string().contains("\"ghost\"")),
        "{:?}",
        warned.warnings
    );
}

#[test]
fn a_shared_port_wants_each_process_reachable_on_its_own() {
    let shared = format!("{BASE}so_reuseport: true\n");
    let s = load_str(&shared, USERS).unwrap();
    assert!(s.config.so_reuseport);
    assert_eq!(s.instance_listen, None);
    let warned = |s: &super::Settings| s.warnings.iter().any(|w| w.0.contains("instance_listen"));
    assert!(warned(&s), "{:?}", s.warnings);
    let full = format!(
        "{shared}instance_listen: \"127.0.0.1:6441\"\n\
         cancel: {{ host_id: 1, peers: {{ 1: \"127.0.0.1:6441\", 2: \"127.0.0.1:6442\" }} }}\n"
    );
    let s = load_str(&full, USERS).unwrap();
    assert_eq!(s.instance_listen, Some("127.0.0.1:6441".parse().unwrap()));
    assert!(!warned(&s), "{:?}", s.warnings);
    let e = load_str(
        &format!("{BASE}instance_listen: \"{}\"\n", s.config.listen),
        USERS,
    )
    .unwrap_err();
    assert!(e.contains("instance_listen must differ"), "{e}");
    let e = load_str(&format!("{BASE}instance_listen: nowhere\n"), USERS).unwrap_err();
    assert!(e.contains("instance_listen"), "{e}");
    // Without so_reuseport nothing is said: one process per port, keys never go astray.
    let s = load_str(BASE, USERS).unwrap();
    assert!(!warned(&s) && !s.config.so_reuseport);
}
