//! The admin console against a real PostgreSQL: operators log in to the `pgbouncer`
//! database and read pools, clients and totals, pause and resume the pools, reload the
//! users file and shut the proxy down; everyone else is refused, and a console session
//! takes only its own commands.

use crate::common;

use common::client::{app, backend_pid, blocking, eventually, one, psql, try_col, LIMIT};
use common::raw::{frame, pbe, q, sync, z, Raw};
use common::{proxy_config, PgServer, ProxyProcess};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::timeout;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Error, NoTls, SimpleQueryMessage};

const USERS: &str = "users:
  app:     { password: \"apppw\", role: write }
  app_ro:  { password: \"approp\", role: read }
  ops:     { password: \"opspw\", role: write, server_user: app }
  watcher: { password: \"watchpw\", role: read, server_user: app_ro }
  opsm:    { password: \"opsmpw\", role: write, server_user: app, auth: md5 }
";

const ADMIN: &str = "admin: { users: [ops, opsm], stats_users: [watcher] }\n";

fn start(pg: &PgServer, pool: &str) -> ProxyProcess {
    ProxyProcess::start(&(proxy_config(pg, pool) + ADMIN), USERS)
}

async fn console_as(proxy: &ProxyProcess, user: &str, pw: &str) -> Result<Client, Error> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password={pw} dbname=pgbouncer application_name=runbook",
        proxy.port
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn console(proxy: &ProxyProcess) -> Client {
    console_as(proxy, "ops", "opspw")
        .await
        .expect("ops logs in to the console")
}

/// The rows of a SHOW, each as column name → value.
async fn show(c: &Client, what: &str) -> Vec<HashMap<String, Option<String>>> {
    let msgs = timeout(LIMIT, c.simple_query(&format!("SHOW {what}")))
        .await
        .unwrap_or_else(|_| panic!("SHOW {what} hangs"))
        .unwrap_or_else(|e| panic!("SHOW {what}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn field<'a>(row: &'a HashMap<String, Option<String>>, name: &str) -> &'a str {
    row.get(name)
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
        .as_deref()
        .unwrap_or("NULL")
}

fn pool_row(
    rows: &[HashMap<String, Option<String>>],
    pool: &str,
) -> HashMap<String, Option<String>> {
    rows.iter()
        .find(|r| field(r, "user") == pool)
        .unwrap_or_else(|| panic!("no row for pool {pool} in {rows:?}"))
        .clone()
}

/// The `value` column of the row whose `key` column holds `name`.
fn lookup(
    rows: &[HashMap<String, Option<String>>],
    key: &str,
    name: &str,
    value: &str,
) -> Option<String> {
    rows.iter()
        .find(|r| field(r, key) == name)
        .map(|r| field(r, value).to_owned())
}

/// A client whose open transaction holds a server connection.
async fn in_transaction(proxy: &ProxyProcess) -> common::client::Conn {
    let c = app(proxy).await;
    try_col(&c.client, "BEGIN").await.expect("BEGIN");
    assert_eq!(one(&c.client, "SELECT 'in'").await, "in");
    c
}

/// The SQLSTATE a console login of `user` is refused with.
async fn refusal(proxy: &ProxyProcess, user: &str, pw: &str) -> SqlState {
    let err = console_as(proxy, user, pw)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} got the console"));
    err.code().cloned().unwrap_or_else(|| panic!("{err:?}"))
}

fn code(e: &Error) -> Option<&SqlState> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_read_pools_clients_and_totals() {
    let pg = PgServer::start();
    let proxy = start(&pg, "min_pool_size: 0");
    let busy = in_transaction(&proxy).await;
    let idle = app(&proxy).await;
    assert_eq!(one(&idle.client, "SELECT 1").await, "1");

    let ops = console(&proxy).await;
    let pools = show(&ops, "POOLS").await;
    let p = pool_row(&pools, "app");
    assert_eq!(field(&p, "database"), "launch");
    assert_eq!(field(&p, "cl_active"), "2", "{p:?}");
    assert_eq!(field(&p, "cl_waiting"), "0", "{p:?}");
    assert_eq!(
        field(&p, "sv_active"),
        "1",
        "the open transaction holds one: {p:?}"
    );
    assert_eq!(field(&p, "pool_mode"), "transaction");
    assert_eq!(field(&p, "max_active"), "8");
    assert_eq!(field(&p, "paused"), "no");
    assert_eq!(field(&pool_row(&pools, "app_ro"), "cl_active"), "0");

    let clients = show(&ops, "CLIENTS").await;
    assert_eq!(
        clients.len(),
        2,
        "the console itself is not a pooled client: {clients:?}"
    );
    let states: Vec<&str> = clients.iter().map(|r| field(r, "state")).collect();
    assert!(
        states.contains(&"active") && states.contains(&"idle"),
        "{states:?}"
    );
    for c in &clients {
        assert_eq!(field(c, "user"), "app");
        assert_eq!(field(c, "pool"), "app");
        assert_eq!(field(c, "addr"), "127.0.0.1");
        assert_eq!(field(c, "tenant"), "NULL");
        assert!(field(c, "connect_time").ends_with(" UTC"), "{c:?}");
    }

    // SHOW SERVERS: the backend of the open transaction, linked to its client.
    let busy_pid = lookup(&clients, "state", "active", "pid").unwrap();
    let backend = backend_pid(&pg, "usename = 'app' AND state = 'idle in transaction'").await;
    let servers = show(&ops, "SERVERS").await;
    let held = servers
        .iter()
        .find(|r| field(r, "state") == "active")
        .unwrap_or_else(|| panic!("no active server: {servers:?}"));
    assert_eq!(field(held, "remote_pid"), backend, "{servers:?}");
    assert_eq!(field(held, "link"), busy_pid, "{servers:?}");
    assert_eq!(field(held, "client_user"), "app");
    assert_eq!(field(held, "user"), "app");
    assert!(
        servers
            .iter()
            .all(|r| field(r, "state") == "active" || field(r, "link") == "NULL"),
        "an idle server linked to a client: {servers:?}"
    );
    let open = blocking(|| pg.server_backend_count("app"));
    assert_eq!(servers.len() as i64, open, "{servers:?}");

    let before = pool_row(&show(&ops, "STATS").await, "app");
    try_col(&busy.client, "COMMIT").await.expect("COMMIT");
    for _ in 0..3 {
        one(&idle.client, "SELECT 2").await;
    }
    let after = pool_row(&show(&ops, "STATS").await, "app");
    let count =
        |r: &HashMap<String, Option<String>>, k: &str| -> u64 { field(r, k).parse().unwrap() };
    assert!(
        count(&after, "total_xact_count") >= count(&before, "total_xact_count") + 4,
        "{before:?} -> {after:?}"
    );
    assert!(count(&after, "total_received") > count(&before, "total_received"));
    let p = pool_row(&show(&ops, "POOLS").await, "app");
    assert_eq!(field(&p, "sv_active"), "0", "{p:?}");
    assert_ne!(field(&p, "sv_idle"), "0", "{p:?}");

    let version = show(&ops, "VERSION").await;
    assert!(field(&version[0], "version").starts_with("launch-proxy "));
    let users: Vec<String> = show(&ops, "USERS")
        .await
        .iter()
        .map(|r| field(r, "name").to_owned())
        .collect();
    assert_eq!(users, ["app", "app_ro", "ops", "opsm", "watcher"]);
    let config = show(&ops, "CONFIG").await;
    let setting = |k: &str| lookup(&config, "key", k, "value");
    assert_eq!(setting("pool.max_active").as_deref(), Some("8"));
    assert_eq!(setting("admin.database").as_deref(), Some("pgbouncer"));
    let lists = show(&ops, "LISTS").await;
    let item = |k: &str| lookup(&lists, "list", k, "items");
    assert_eq!(item("logged_in_clients").as_deref(), Some("2"));
    assert_eq!(item("pools").as_deref(), Some("2"));
    assert!(show(&ops, "HELP").await.len() >= 10);

    // Several commands in one Query answer in turn; a bad one ends the list with 42601.
    let msgs = ops
        .simple_query("SHOW VERSION; SHOW LISTS")
        .await
        .expect("two SHOWs");
    let completes = msgs
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 2);
    let err = ops.simple_query("SHOW SERVERZ").await.expect_err("unknown");
    assert_eq!(code(&err), Some(&SqlState::SYNTAX_ERROR), "{err:?}");
    let err = ops
        .simple_query("SELECT * FROM pg_class")
        .await
        .expect_err("not a command");
    assert_eq!(code(&err), Some(&SqlState::SYNTAX_ERROR), "{err:?}");
    // The extended protocol is refused, and the session goes on.
    let err = ops
        .query("SHOW POOLS", &[])
        .await
        .expect_err("extended protocol");
    assert_eq!(
        code(&err),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{err:?}"
    );
    assert_eq!(show(&ops, "VERSION").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_users_get_the_console_and_stats_users_only_look() {
    let pg = PgServer::start();
    let proxy = start(&pg, "min_pool_size: 0");

    assert_eq!(
        refusal(&proxy, "app", "apppw").await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    for (user, pw) in [("ops", "wrong"), ("nobody", "x")] {
        assert_eq!(refusal(&proxy, user, pw).await, SqlState::INVALID_PASSWORD);
    }

    let watcher = console_as(&proxy, "watcher", "watchpw")
        .await
        .expect("stats user logs in");
    assert_eq!(show(&watcher, "POOLS").await.len(), 2);
    for cmd in [
        "PAUSE",
        "RESUME",
        "RELOAD",
        "SHUTDOWN",
        "RECONNECT",
        "KILL_CLIENT 1",
        "KILL_TENANT 01JBXTENANT1000000000000T1",
    ] {
        let err = watcher.simple_query(cmd).await.expect_err(cmd);
        assert_eq!(
            code(&err),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{cmd}: {err:?}"
        );
    }
    assert_eq!(
        show(&watcher, "VERSION").await.len(),
        1,
        "the session goes on"
    );
    let p = pool_row(&show(&watcher, "POOLS").await, "app");
    assert_eq!(field(&p, "paused"), "no", "a refused PAUSE changed nothing");

    // psql, the operator's usual client, reads the tables.
    let out = blocking(|| {
        psql(
            proxy.port,
            "dbname=pgbouncer user=watcher",
            "watchpw",
            "SHOW POOLS",
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("launch|app|")),
        "{stdout}"
    );

    // Operators are ordinary users of the database too.
    let ops_db = proxy.connect("ops", "opspw").await.expect("ops on launch");
    assert_eq!(one(&ops_db, "SELECT current_user::text").await, "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_answers_once_server_connections_closed_and_resume_lets_clients_run() {
    let pg = PgServer::start();
    let proxy = start(&pg, "min_pool_size: 2\nacquire_timeout_ms: 60000");
    let in_tx = in_transaction(&proxy).await;

    let ops = console(&proxy).await;
    let mut pause = tokio::spawn(async move {
        let done = ops.simple_query("PAUSE").await.map(|_| ());
        (ops, done)
    });
    let early = timeout(Duration::from_secs(1), &mut pause).await;
    assert!(
        early.is_err(),
        "PAUSE answered while a transaction held a connection"
    );
    let late = app(&proxy).await;
    let mut waiting = tokio::spawn(async move { one(&late.client, "SELECT 'resumed'").await });
    assert!(
        timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "ran while paused"
    );
    try_col(&in_tx.client, "COMMIT")
        .await
        .expect("the open transaction finishes");
    let (ops, done) = timeout(LIMIT, pause).await.expect("PAUSE answers").unwrap();
    done.expect("PAUSE");
    assert_eq!(
        blocking(|| pg.server_backend_count("app")),
        0,
        "PAUSE answered with connections open"
    );
    assert!(
        show(&ops, "SERVERS").await.is_empty(),
        "PAUSE left servers listed"
    );
    assert_eq!(
        field(&pool_row(&show(&ops, "POOLS").await, "app"), "cl_waiting"),
        "1"
    );

    ops.simple_query("RESUME").await.expect("RESUME");
    let resumed = timeout(LIMIT, waiting)
        .await
        .expect("still waiting after RESUME");
    assert_eq!(resumed.unwrap(), "resumed");

    // One pool by its login; a name that is neither a pool nor the database is 3D000.
    ops.simple_query("PAUSE app_ro")
        .await
        .expect("PAUSE app_ro");
    let pools = show(&ops, "POOLS").await;
    assert_eq!(field(&pool_row(&pools, "app_ro"), "paused"), "yes");
    assert_eq!(field(&pool_row(&pools, "app"), "paused"), "no");
    assert_eq!(one(&in_tx.client, "SELECT 'app runs'").await, "app runs");
    ops.simple_query("RESUME launch")
        .await
        .expect("RESUME the database");
    assert_eq!(
        field(&pool_row(&show(&ops, "POOLS").await, "app_ro"), "paused"),
        "no"
    );
    let err = ops
        .simple_query("PAUSE nowhere")
        .await
        .expect_err("no such pool");
    assert_eq!(code(&err), Some(&SqlState::INVALID_CATALOG_NAME), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_shutdown_from_the_console() {
    let pg = PgServer::start();
    let mut proxy = start(&pg, "min_pool_size: 0");
    let ops = console(&proxy).await;
    assert!(proxy.connect("late", "latepw").await.is_err());
    let added =
        format!("{USERS}  late: {{ password: \"latepw\", role: write, server_user: app }}\n");
    std::fs::write(proxy.dir.join("users.yaml"), &added).expect("write users file");
    ops.simple_query("RELOAD").await.expect("RELOAD");
    let late = proxy
        .connect("late", "latepw")
        .await
        .expect("a reloaded user logs in");
    assert_eq!(one(&late, "SELECT current_user::text").await, "app");

    // The admin lists come with a reload: `late` gets the console, `opsm` loses it.
    let config = proxy.dir.join("launch-proxy.yaml");
    let text = std::fs::read_to_string(&config).expect("read the config");
    assert!(text.contains(ADMIN), "{text}");
    let text = text.replace("users: [ops, opsm]", "users: [ops, late]");
    std::fs::write(&config, text).expect("write the config");
    ops.simple_query("RELOAD").await.expect("RELOAD");
    let late_console = console_as(&proxy, "late", "latepw")
        .await
        .expect("late opens the console after the reload");
    assert_eq!(show(&late_console, "VERSION").await.len(), 1);
    let refused = console_as(&proxy, "opsm", "opsmpw")
        .await
        .expect_err("opsm left admin.users");
    assert_eq!(code(&refused), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // A users file that cannot load is reported, and the users loaded before stay.
    std::fs::write(proxy.dir.join("users.yaml"), "users: [").expect("write users file");
    let err = ops.simple_query("RELOAD").await.expect_err("a broken file");
    assert_eq!(err.code().map(|c| c.code()), Some("F0000"), "{err:?}");
    assert!(proxy.connect("late", "latepw").await.is_ok());

    ops.simple_query("SHUTDOWN").await.expect("SHUTDOWN");
    let exited = blocking(|| proxy.wait_exit(LIMIT));
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}\n{}",
        proxy.log()
    );
    assert!(eventually(LIMIT, || proxy.log().contains("admin console: SHUTDOWN")).await);
}

/// Malformed or unsupported input on the console gets PostgreSQL's answers, and the proxy
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_answers_bad_input_like_postgresql() {
    let pg = PgServer::start();
    let proxy = start(&pg, "min_pool_size: 0");
    let port = proxy.port;
    let login = || Raw::try_login_to(port, "opsm", "opsmpw", "pgbouncer").expect("opsm logs in");
    blocking(|| {
        let mut c = login();
        // An extended-protocol batch: one 0A000, the rest skipped up to its Sync.
        assert_eq!(
            c.sum(&[pbe("SHOW POOLS", &[]), sync()].concat()),
            "E[0A000]Zi"
        );
        assert_eq!(c.sum(&q("")), "IZi");
        assert_eq!(c.sum(&q("show version;")), "TDC[SHOW]Zi");
        assert_eq!(
            c.sum(&q("SHOW VERSION; BOGUS; SHOW LISTS")),
            "TDC[SHOW]E[42601]Zi"
        );
        // CopyData outside a COPY is ignored, as PostgreSQL does.
        c.send(&frame(b'd', b"stray"));
        assert_eq!(c.sum(&q("SHOW VERSION")), "TDC[SHOW]Zi");
        assert_eq!(c.sum(&frame(b'F', &[0; 10])), "E[0A000]Zi");
        assert_eq!(c.sum(&sync()), "Zi");

        let mut c = login();
        c.send(&frame(b'Q', &z(&"x".repeat(70_000))));
        assert_eq!(c.expect_fatal(), "08P01");
        let mut c = login();
        c.send(&[b'Q', 0, 0, 0, 2]);
        assert_eq!(c.expect_fatal(), "08P01");
        let mut c = login();
        c.send(&frame(b'Z', b""));
        assert_eq!(c.expect_fatal(), "08P01");

        let mut c = login();
        assert_eq!(c.sum(&q("SHOW VERSION")), "TDC[SHOW]Zi");
    });
    let app = app(&proxy).await;
    assert_eq!(
        one(&app.client, "SELECT 'still serving'").await,
        "still serving"
    );
}

/// At max_client_conn the console still opens for operators (and only for them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_opens_when_the_proxy_is_full() {
    let pg = PgServer::start();
    let proxy = start(&pg, "min_pool_size: 0\nmax_client_conn: 2");
    let (a, b) = (app(&proxy).await, app(&proxy).await);
    let err = common::client::connect(&proxy, "app", "apppw")
        .await
        .err()
        .expect("a third client is over max_client_conn");
    assert_eq!(code(&err), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err:?}");

    let ops = console(&proxy).await;
    let p = pool_row(&show(&ops, "POOLS").await, "app");
    assert_eq!(field(&p, "cl_active"), "2", "{p:?}");
    assert_eq!(
        refusal(&proxy, "app", "apppw").await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(one(&a.client, "SELECT 'a'").await, "a");
    assert_eq!(one(&b.client, "SELECT 'b'").await, "b");
}

/// RECONNECT closes the idle server connections at once and one in use when its
/// transaction ends; later transactions run on new backends, which start with the role's
/// settings as they are now. A name that is neither a pool nor the database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_every_server_connection_after_its_transaction() {
    let pg = PgServer::start();
    let proxy = start(&pg, "default_pool_size: 4\nmin_pool_size: 2\nmax_active: 0");
    let (holder, other) = (app(&proxy).await, app(&proxy).await);
    holder.client.batch_execute("BEGIN").await.unwrap();
    let pid = "SELECT pg_backend_pid()::text";
    let held = one(&holder.client, pid).await;
    let idle = one(&other.client, pid).await;
    assert_ne!(held, idle);
    pg.psql("launch", "ALTER ROLE app SET work_mem = '7MB'");

    let ops = console(&proxy).await;
    assert!(ops.simple_query("RECONNECT nosuchpool").await.is_err());
    timeout(LIMIT, ops.simple_query("RECONNECT app"))
        .await
        .expect("RECONNECT answers at once")
        .expect("RECONNECT");
    let pg = &pg;
    let gone = |pid: &str| {
        let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
        move || pg.psql("launch", &sql) == "0"
    };
    assert!(
        eventually(LIMIT, gone(&idle)).await,
        "the idle connection stayed open"
    );

    // The open transaction goes on where it was; the other client gets a new backend.
    assert_eq!(one(&holder.client, pid).await, held);
    let now = one(
        &other.client,
        "SELECT pg_backend_pid() || ' ' || current_setting('work_mem')",
    )
    .await;
    assert!(
        now.ends_with(" 7MB") && !now.starts_with(&format!("{idle} ")),
        "{now}"
    );
    holder.client.batch_execute("COMMIT").await.unwrap();
    assert!(
        eventually(LIMIT, gone(&held)).await,
        "the held connection outlived its transaction"
    );
    let next = one(&holder.client, pid).await;
    assert_ne!(next, held);
    // The warm minimum opens again.
    assert!(eventually(LIMIT, || pg.server_backend_count("app") >= 2).await);
}
