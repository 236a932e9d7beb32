//! Checks the integration-test harness itself (tests/common): throwaway PostgreSQL
//! clusters, the shipped config files it mirrors, and the schema migration.
//! The proxy binary is not started here.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{proxy_config, PgServer, DEFAULT_POOL, USERS_YAML};

fn app_conn_string(pg: &PgServer, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=launch",
        pg.port
    )
}

async fn connect(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[test]
fn server_starts_with_roles_and_database() {
    let pg = PgServer::start();
    assert!(pg.is_running());
    assert!(pg.data_dir.join("PG_VERSION").is_file());

    let roles = pg.psql(
        "postgres",
        "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles \
         WHERE rolname IN ('app', 'app_ro') ORDER BY rolname",
    );
    assert_eq!(roles, "app|t|f\napp_ro|t|f");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'launch'"
        ),
        "1"
    );
    assert_eq!(pg.psql("postgres", "SHOW max_connections"), "300");
    assert_eq!(pg.psql("postgres", "SHOW fsync"), "off");
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(
        pg.psql("postgres", "SHOW password_encryption"),
        "scram-sha-256"
    );
    let version = pg.server_version();
    eprintln!(
        "PostgreSQL {version} from {}",
        common::pg_bin_dir().display()
    );
    if std::env::var_os("LP_PG_BIN").is_none() && common::pg_bin_dir().ends_with("native/bin") {
        assert!(version.starts_with("17.4"), "npm build reports {version}");
    }
}

#[test]
fn verifier_is_scram() {
    let pg = PgServer::start();
    for role in ["app", "app_ro"] {
        let v = pg.verifier(role);
        assert!(
            v.starts_with("SCRAM-SHA-256$4096:") && v.contains('$') && v.contains(':'),
            "verifier of {role}: {v:?}"
        );
    }
    assert_eq!(pg.verifier("no_such_role"), "");
}

#[tokio::test]
async fn app_roles_log_in_with_scram_and_create_tables() {
    let pg = PgServer::start();
    let app = connect(&app_conn_string(&pg, "app", "apppw"))
        .await
        .expect("app logs in with its password");
    app.batch_execute("CREATE TABLE smoke (id int PRIMARY KEY); INSERT INTO smoke VALUES (1)")
        .await
        .expect("app creates a table in launch.public");
    let row = app
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app");

    let ro = connect(&app_conn_string(&pg, "app_ro", "approp"))
        .await
        .expect("app_ro logs in");
    ro.batch_execute("CREATE TABLE smoke_ro (id int)")
        .await
        .expect("app_ro may create tables too");

    let err = connect(&app_conn_string(&pg, "app", "wrong"))
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err}"
    );

    assert_eq!(pg.server_backend_count("app"), 1);
    assert_eq!(pg.server_backend_count("app_ro"), 1);
    drop(ro);
    // The connection task needs the runtime to send Terminate: wait asynchronously.
    let mut gone = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if pg.server_backend_count("app_ro") == 0 {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "app_ro backend should go away after the client is dropped"
    );

    let su = pg.superuser("launch").await;
    let n: i32 = su
        .query_one("SELECT id FROM smoke", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_eq!(
        pg.superuser_conn_string("launch"),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=launch",
            pg.port
        )
    );
}

#[tokio::test]
async fn kill_and_restart_keep_port_and_data() {
    let mut pg = PgServer::start();
    let port = pg.port;
    pg.psql(
        "launch",
        "CREATE TABLE survives (v text); INSERT INTO survives VALUES ('x'); CHECKPOINT;",
    );
    let client = pg.superuser("launch").await;

    pg.kill();
    assert!(!pg.is_running());
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "a connection must not survive the crash"
    );

    pg.restart();
    assert!(pg.is_running());
    assert_eq!(pg.port, port);
    assert_eq!(pg.psql("launch", "SELECT v FROM survives"), "x");
    let client = pg.superuser("launch").await;
    let v: String = client
        .query_one("SELECT v FROM survives", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "x");

    pg.stop();
    assert!(!pg.is_running());
    pg.stop(); // idempotent
    pg.restart();
    assert_eq!(pg.psql("postgres", "SELECT 1"), "1");
    pg.restart(); // restart of a running server: stop + start
    assert!(pg.is_running());
}

#[test]
fn two_servers_run_side_by_side() {
    let a = PgServer::start();
    let b = PgServer::start_with("max_connections = 50\nwork_mem = '8MB'");
    assert_ne!(a.port, b.port);
    assert_ne!(a.data_dir, b.data_dir);
    a.psql("launch", "CREATE TABLE only_in_a (x int)");
    assert_eq!(
        b.psql(
            "launch",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"
        ),
        "0"
    );
    assert_eq!(b.psql("postgres", "SHOW max_connections"), "50");
    assert_eq!(b.psql("postgres", "SHOW work_mem"), "8MB");
    assert_eq!(a.psql("postgres", "SHOW max_connections"), "300");

    let dir = b.data_dir.clone();
    drop(b);
    assert!(!dir.exists(), "drop removes the server directory");
    assert!(a.is_running());
}

#[test]
#[should_panic(expected = "psql on database launch failed")]
fn psql_panics_on_sql_error() {
    let pg = PgServer::start();
    pg.psql("launch", "SELECT * FROM no_such_table");
}

/// `key: value` pairs of a YAML block, comments stripped.
fn yaml_pairs<'a>(lines: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    lines
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The indented lines under the top-level `section:` key.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != format!("{name}:"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter(|l| l.starts_with("  "))
        .collect()
}

#[test]
fn shipped_config_matches_harness_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/launch-proxy.yaml")).unwrap();
    let expected: BTreeMap<String, String> = DEFAULT_POOL
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(yaml_pairs(section(&shipped, "pool").into_iter()), expected);

    let pg_port = 5432;
    let shipped_server = shipped
        .lines()
        .find(|l| l.starts_with("server:"))
        .expect("server line");
    assert_eq!(
        shipped_server,
        format!("server: {{ host: 127.0.0.1, port: {pg_port}, database: launch }}")
    );
    for top in ["listen:", "metrics_listen:", "users_file:", "roles:"] {
        assert!(shipped.lines().any(|l| l.starts_with(top)), "{top} missing");
    }
    // The roles block is identical (comments aside).
    let strip = |lines: Vec<&str>| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split(" #").next().unwrap().trim_end().to_string())
            .collect()
    };
    let pg = PgServer::start();
    let generated = proxy_config(&pg, "");
    assert_eq!(
        strip(section(&shipped, "roles")),
        strip(section(&generated, "roles"))
    );

    let users = std::fs::read_to_string(root.join("config/users.yaml")).unwrap();
    assert_eq!(
        yaml_pairs(section(&users, "users").into_iter()),
        yaml_pairs(section(USERS_YAML, "users").into_iter())
    );
}

#[test]
fn proxy_config_merges_pool_overrides() {
    let pg = PgServer::start();
    let text = proxy_config(
        &pg,
        "default_pool_size: 5\nacquire_timeout_ms: 500\n# comment\nnew_knob: true\n",
    );
    assert!(text.contains(&format!("port: {}, database: launch", pg.port)));
    let pool = yaml_pairs(section(&text, "pool").into_iter());
    assert_eq!(pool["default_pool_size"], "5");
    assert_eq!(pool["acquire_timeout_ms"], "500");
    assert_eq!(pool["new_knob"], "true");
    assert_eq!(pool["min_pool_size"], "10");
    // Every key appears once: YAML parsers reject duplicates.
    let keys: Vec<&str> = section(&text, "pool")
        .iter()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "{text}");
    assert!(text.contains("users_file: users.yaml"));
}

#[tokio::test]
async fn migrations_apply_and_generate_ulids() {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    pg.apply_migrations("launch"); // re-runnable

    let ulid = pg.psql("launch", "SELECT generate_ulid()");
    assert_eq!(ulid.len(), 26, "{ulid}");
    assert!(
        ulid.chars()
            .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))),
        "{ulid}"
    );
    // ULIDs sort by creation time.
    let ordered = pg.psql(
        "launch",
        "SELECT bool_and(a < b) FROM (SELECT generate_ulid() AS a, pg_sleep(0.002), \
         generate_ulid() AS b FROM generate_series(1, 5)) s",
    );
    assert_eq!(ordered, "t");
    let parts = pg.psql(
        "launch",
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_log'::regclass",
    );
    assert_eq!(parts, "5", "current month + 3 ahead + default");
    // Tenant isolation itself is proven in tests/tenancy_db.rs and tests/tenancy/.
}
