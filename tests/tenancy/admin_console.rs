//! The admin console and tenants: it shows each client's tenant to operators, a tenant's
//! login cannot open it, and a tenant session's own SHOW POOLS or PAUSE goes to
//! PostgreSQL as SQL, never to the console.

use super::*;

pub(super) const OPS: &str = "  ops: { password: \"opspw\", role: write, server_user: app }\n";

pub(super) fn with_console(config: String) -> String {
    config + "admin: { users: [ops] }\n"
}

pub(super) async fn console_as(env: &Env, user: &str) -> Result<Client, Error> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password={} dbname=pgbouncer",
        env.proxy.port,
        pw(user)
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_tenants_and_tenants_never_reach_the_console() {
    let ids = [T1, T2, T3].map(String::from);
    let env = Env::start("", "", OPS, &ids, with_console).await;
    let t1 = env.login("t1").await;
    let t2 = env.login("t2").await;
    run(&t1, "BEGIN").await.expect("BEGIN");
    assert_eq!(
        col(&t1, "SELECT count(*) FROM base_entity").await,
        [SEED.to_string()]
    );
    assert_eq!(col(&t2, "SELECT 1").await, ["1"]);

    for user in ["t1", "t2", "app"] {
        let err = console_as(&env, user).await.expect_err(user);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{user}: {err:?}"
        );
    }

    let ops = console_as(&env, "ops")
        .await
        .expect("ops logs in to the console");
    let rows = ops
        .simple_query("SHOW CLIENTS")
        .await
        .expect("SHOW CLIENTS");
    let clients: Vec<(String, String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            Msg::Row(r) => Some((
                r.get("user").unwrap_or("").to_owned(),
                r.get("tenant").unwrap_or("NULL").to_owned(),
                r.get("state").unwrap_or("").to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert!(
        clients.contains(&("t1".into(), T1.into(), "active".into())),
        "{clients:?}"
    );
    assert!(
        clients.contains(&("t2".into(), T2.into(), "idle".into())),
        "{clients:?}"
    );
    assert_eq!(clients.len(), 2, "{clients:?}");

    let rows = ops
        .simple_query("SHOW SERVERS")
        .await
        .expect("SHOW SERVERS");
    let linked: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            Msg::Row(r) if r.get("state") == Some("active") => Some((
                r.get("client_user").unwrap_or("NULL").to_owned(),
                r.get("tenant").unwrap_or("NULL").to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(linked, [("t1".to_owned(), T1.to_owned())]);

    // SHOW TENANTS: t1 holds a server connection, t2 is idle, busiest first.
    let rows = ops
        .simple_query("SHOW TENANTS")
        .await
        .expect("SHOW TENANTS");
    let tenants: Vec<[String; 4]> = rows
        .iter()
        .filter_map(|m| match m {
            Msg::Row(r) => Some(
                ["tenant", "clients", "active", "idle"]
                    .map(|c| r.get(c).unwrap_or("NULL").to_owned()),
            ),
            _ => None,
        })
        .collect();
    let row = |t: &str, n: &str, a: &str, i: &str| [t, n, a, i].map(str::to_owned);
    assert_eq!(tenants, [row(T1, "1", "1", "0"), row(T2, "1", "0", "1")]);

    // The same in Prometheus's terms (a bounded set of series, see metrics::tenants).
    let metrics = env.proxy.metrics();
    for line in [
        format!("launch_proxy_tenant_clients{{tenant=\"{T1}\",state=\"active\"}} 1"),
        format!("launch_proxy_tenant_clients{{tenant=\"{T2}\",state=\"idle\"}} 1"),
        "launch_proxy_tenant_clients{tenant=\"other\",state=\"active\"} 0".to_owned(),
        "launch_proxy_tenants_connected 2".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }

    // No secret reaches the console: not the signing key, not a password.
    for what in ["CONFIG", "USERS", "DATABASES"] {
        let rows = ops.simple_query(&format!("SHOW {what}")).await.expect(what);
        for m in &rows {
            if let Msg::Row(r) = m {
                for i in 0..r.len() {
                    let v = r.get(i).unwrap_or("");
                    assert!(
                        !v.contains(&env.key) && !v.contains("pw"),
                        "SHOW {what} shows a secret: {v}"
                    );
                }
            }
        }
    }

    // On the tenant's own database the console's words are SQL for PostgreSQL.
    for sql in ["SHOW POOLS", "PAUSE", "SHOW CLIENTS", "RELOAD", "SHUTDOWN"] {
        let err = run(&t2, sql).await.expect_err(sql);
        assert!(
            err.contains("42704") || err.contains("42601"),
            "{sql} reached something other than PostgreSQL's parser: {err}"
        );
    }
    let pools = ops.simple_query("SHOW POOLS").await.expect("SHOW POOLS");
    let paused = pools
        .iter()
        .any(|m| matches!(m, Msg::Row(r) if r.get("paused") == Some("yes")));
    assert!(!paused, "a tenant's PAUSE paused a pool");
    run(&t1, "COMMIT").await.expect("COMMIT");
    env.check_own(&t1, T1, "t1").await;
    env.check_own(&t2, T2, "t2").await;
}
