//! The proxy checks every server login of a pool tenants run on: a PostgreSQL role that
//! row-level security does not bind (superuser, BYPASSRLS, a member of such a role, the
//! owner of a table whose security is not forced) is refused, loudly, before any tenant's
//! statement runs on it; fixing the grant brings the pool back.

use super::*;

/// A pool that finds out within a second, and clients that give up within two.
const QUICK: &str = "min_pool_size: 0\nacquire_timeout_ms: 2000\nconnect_retry_interval_ms: 100";

/// Ends the pool's open connections to PostgreSQL, so that the next transaction logs in anew.
async fn drop_server_connections(env: &Env) {
    let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'app'";
    run(&env.su, sql).await.expect("terminate app backends");
    let gone = common::client::eventually(LIMIT, || env._pg.server_backend_count("app") == 0).await;
    assert!(gone, "app backends survived pg_terminate_backend");
}

/// A new session of t1 and its first statement: the client, or the error of either (the
/// login itself may need no server connection: parameters and tenant status are cached),
/// as `SQLSTATE message detail`.
async fn try_t1(env: &Env) -> Result<Client, String> {
    let c = env
        .try_login("t1")
        .await
        .map(|(c, _)| c)
        .map_err(|e| full(&e))?;
    c.simple_query("SELECT 1").await.map_err(|e| full(&e))?;
    Ok(c)
}

/// `SQLSTATE message detail` of an error.
fn full(e: &Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{} {} {}",
            d.code().code(),
            d.message(),
            d.detail().unwrap_or("")
        ),
        None => format!("(no server error) {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_that_row_level_security_does_not_bind_are_refused() {
    let env = Env::start(QUICK, "", "", &[T1, T2, T3].map(String::from), |c| c).await;
    let owned = "CREATE TABLE lp_owned (tenant_id text); ALTER TABLE lp_owned OWNER TO app; \
                 ALTER TABLE lp_owned ENABLE ROW LEVEL SECURITY";
    let forced = "CREATE TABLE lp_forced (tenant_id text); ALTER TABLE lp_forced OWNER TO app; \
                  ALTER TABLE lp_forced ENABLE ROW LEVEL SECURITY; \
                  ALTER TABLE lp_forced FORCE ROW LEVEL SECURITY";
    let cases = [
        (
            "ALTER ROLE app BYPASSRLS",
            "ALTER ROLE app NOBYPASSRLS",
            "has BYPASSRLS",
        ),
        (
            "ALTER ROLE app SUPERUSER",
            "ALTER ROLE app NOSUPERUSER",
            "is a superuser",
        ),
        (
            "CREATE ROLE lp_bypass NOLOGIN BYPASSRLS; GRANT lp_bypass TO app",
            "DROP ROLE lp_bypass",
            "can become a role",
        ),
        (owned, "DROP TABLE lp_owned", "owns lp_owned"),
        // Forced or not, its owner can turn a table's row level security off; a table of
        // its own without row level security is no bypass.
        (
            forced,
            "ALTER TABLE lp_forced DISABLE ROW LEVEL SECURITY",
            "owns lp_forced",
        ),
    ];
    for (grant, undo, why) in cases {
        // A session that logged in before the grant (the refusal ends it: 57P03 is FATAL).
        let t1 = env.login("t1").await;
        run(&env.su, grant).await.expect(grant);
        drop_server_connections(&env).await;
        let refused = try_t1(&env)
            .await
            .err()
            .unwrap_or_else(|| panic!("{grant}: t1 ran a statement"));
        assert!(refused.starts_with("57P03"), "{grant}: {refused}");
        assert!(refused.contains(why), "{grant}: {refused}");
        assert!(refused.contains("row-level security"), "{grant}: {refused}");
        let err = run(&t1, "SELECT count(*) FROM base_entity").await;
        assert!(
            err.as_ref().is_err_and(|e| e.starts_with("57P03")),
            "{grant}: t1's session ran a statement: {err:?}"
        );
        // A retry may be logging in while the clients wait; once none waits, none stays.
        let closed =
            common::client::eventually(LIMIT, || env._pg.server_backend_count("app") == 0).await;
        assert!(closed, "{grant}: a refused login stayed open");

        run(&env.su, undo).await.expect(undo);
        let t1_again = try_t1(&env)
            .await
            .unwrap_or_else(|e| panic!("after {undo}: {e}"));
        env.check_own(&t1_again, T1, "t1").await;
    }
    let log = env.proxy.log();
    assert!(
        log.contains("row-level security would not isolate the tenants"),
        "{log}"
    );
}

/// A pool no tenant runs on (operators, migrations) is not checked: its login may bypass
/// row-level security.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_without_tenants_are_not_checked() {
    let pg = blocking(PgServer::start);
    pg.psql("postgres", "ALTER ROLE app BYPASSRLS");
    let key = random_hex(32);
    let config = proxy_config(&pg, QUICK) + &format!("tenant: {{ signing_key: \"{key}\" }}\n");
    let proxy = blocking(|| ProxyProcess::start(&config, common::USERS_YAML));
    let c = proxy.connect("app", "apppw").await.expect("app logs in");
    assert_eq!(col(&c, "SELECT current_user::text").await, ["app"]);

    // A reload cannot bring tenants to it: its logins were never checked.
    let users = format!(
        "{}{}",
        common::USERS_YAML,
        user_line("t1", T1, "write", "app", "")
    );
    std::fs::write(proxy.dir.join("users.yaml"), users).expect("write users file");
    proxy.signal("HUP");
    let refused = common::client::eventually(LIMIT, || {
        proxy
            .log()
            .contains("brings tenants to the pool of \"app\"")
    })
    .await;
    assert!(refused, "{}", proxy.log());
    let t1 = proxy.connect("t1", "t1pw").await;
    assert!(t1.is_err(), "t1 was loaded");
}
