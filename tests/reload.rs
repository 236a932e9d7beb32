//! SIGHUP reloads the users file against a real PostgreSQL: new logins see added, removed
//! and changed users at once, sessions keep the user they logged in as, and a reload that
//! the running pools cannot take (a pool's server login changed) or a file that does not
//! load leaves the users as they were, the proxy serving throughout.

use crate::common;

use common::{proxy_config, PgServer, ProxyProcess};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

const POOL_LOGINS: &str = "users:
  app:    { password: \"apppw\", role: write }
  app_ro: { password: \"approp\", role: read }
";

fn users(extra: &str) -> String {
    format!("{POOL_LOGINS}{extra}")
}

/// Writes `yaml` as the users file, sends SIGHUP and waits for the `n`th log line that
/// says how a reload went; returns that line.
async fn reload(proxy: &ProxyProcess, yaml: &str, n: usize) -> String {
    std::fs::write(proxy.dir.join("users.yaml"), yaml).expect("write users file");
    proxy.signal("HUP");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let log = proxy.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("SIGHUP: users"))
            .collect();
        if let Some(line) = lines.get(n - 1) {
            return line.to_string();
        }
        assert!(Instant::now() < end, "no reload logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn who(proxy: &ProxyProcess, user: &str, pw: &str) -> Result<String, SqlState> {
    let c = proxy.connect(user, pw).await;
    let c = c.map_err(|e| e.code().cloned().unwrap_or(SqlState::CONNECTION_FAILURE))?;
    let row = c.query_one("SELECT current_user::text", &[]).await;
    Ok(row.expect("a query after login").get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_users_file_for_new_logins() {
    let pg = PgServer::start();
    let before = users(
        "  ops:  { password: \"opspw\", role: write, server_user: app }
  gone: { password: \"gonepw\", role: read, server_user: app_ro }
",
    );
    let proxy = ProxyProcess::start(&proxy_config(&pg, "min_pool_size: 1"), &before);
    let kept = proxy.connect("gone", "gonepw").await.expect("gone logs in");
    assert_eq!(who(&proxy, "ops", "opspw").await, Ok("app".into()));

    let after = users(
        "  ops:   { password: \"newpw\", role: write, server_user: app }
  fresh: { password: \"freshpw\", role: read, server_user: app_ro }
",
    );
    let line = reload(&proxy, &after, 1).await;
    assert!(line.contains("users file reloaded"), "{line}");
    let refused = Err(SqlState::INVALID_PASSWORD);
    assert_eq!(who(&proxy, "ops", "opspw").await, refused, "old password");
    assert_eq!(who(&proxy, "ops", "newpw").await, Ok("app".into()));
    assert_eq!(who(&proxy, "fresh", "freshpw").await, Ok("app_ro".into()));
    assert_eq!(who(&proxy, "gone", "gonepw").await, refused, "removed user");
    let row = kept.query_one("SELECT 'still here'", &[]).await;
    assert_eq!(
        row.expect("session of a removed user").get::<_, &str>(0),
        "still here"
    );

    // A pool's own server login changing (its password, which the pool logs in with) needs
    // a restart: the reload is refused as a whole, `fresh` stays and `late` never comes.
    let changed_login = after.replace("approp", "other")
        + "  late: { password: \"latepw\", role: read, server_user: app_ro }\n";
    let line = reload(&proxy, &changed_login, 2).await;
    assert!(
        line.contains("not reloaded") && line.contains("app_ro"),
        "{line}"
    );
    assert_eq!(who(&proxy, "late", "latepw").await, refused);
    assert_eq!(who(&proxy, "fresh", "freshpw").await, Ok("app_ro".into()));
    assert_eq!(who(&proxy, "app_ro", "approp").await, Ok("app_ro".into()));

    let line = reload(&proxy, "users: [not, a, map]\n", 3).await;
    assert!(line.contains("not reloaded"), "{line}");
    assert_eq!(who(&proxy, "ops", "newpw").await, Ok("app".into()));
}
