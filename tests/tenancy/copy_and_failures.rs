//! COPY, suspended tenants, a failed switch, the guard turned off, a first transaction
//! rolled back.

use super::*;

/// psql through the proxy: `(ok, stdout, stderr)`; `stdin` feeds COPY FROM STDIN.
fn psql(env: &Env, user: &str, sql: &str, stdin: &str) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(psql_bin());
    let args = "-X -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c";
    cmd.args(args.split(' ')).arg(sql);
    cmd.arg(env.proxy.conn_string(user, &pw(user)));
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("run psql");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// COPY TO STDOUT (psql) yields own rows only. (Under row-level security COPY reads `ONLY`
/// the named table: the partitioned audit_log gives no row; the query form reads them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_only_own_rows() {
    let env = Env::new("").await;
    let both = "SELECT tenant_id FROM base_entity UNION ALL SELECT tenant_id FROM audit_log";
    for (sql, n) in [
        ("COPY base_entity (tenant_id) TO STDOUT".to_owned(), SEED),
        ("COPY audit_log (tenant_id) TO STDOUT".to_owned(), 0),
        (format!("COPY ({both}) TO STDOUT"), 2 * SEED),
    ] {
        let (ok, out, err) = blocking(|| psql(&env, "t2", &sql, ""));
        assert!(ok, "{sql}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.iter().all(|l| *l == T2), "LEAK: {sql}: {lines:?}");
        assert_eq!(lines.len(), n, "{sql}");
    }
}

/// COPY FROM STDIN (psql) of another tenant's rows is refused: PostgreSQL refuses COPY FROM
/// into tables under row-level security (0A000); the same row by INSERT meets the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_with_other_tenant_refused() {
    let env = Env::new("").await;
    let before = env.all_rows().await;
    let base = "base_entity (tenant_id, created_by, updated_by)";
    let audit_cols = "audit_log (tenant_id, entity_id, entity_type, action, performed_by)";
    for (table, data) in [
        (base.to_owned(), format!("{T2}\t{ACTOR}\t{ACTOR}\n")),
        (
            audit_cols.to_owned(),
            format!("{T2}\t{ACTOR}\tx\tx\t{ACTOR}\n"),
        ),
    ] {
        let sql = format!("COPY {table} FROM STDIN");
        let (ok, _, err) = blocking(|| psql(&env, "t1", &sql, &data));
        let refused = err.contains("0A000: COPY FROM not supported with row-level security");
        assert!(!ok && refused, "{sql}: {err}");
    }
    let insert = format!("INSERT INTO {base} VALUES ('{T2}', '{ACTOR}', '{ACTOR}')");
    let (ok, _, err) = blocking(|| psql(&env, "t1", &insert, ""));
    let refused = err.contains("42501: new row violates row-level security");
    assert!(!ok && refused, "{err}");
    assert_eq!(env.all_rows().await, before, "rows changed");
}

/// A suspended tenant is refused at login (28000 "is not active"), and its connected client
/// from its next transaction once the status cache (200 ms) expires; others are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_tenant_refused_at_login_and_next_transaction() {
    let ids = [T1, T2, T3].map(String::from);
    let env = Env::start("", ", status_cache_ms: 200", "", &ids, |c| c).await;
    let c3 = env.login("t3").await;
    env.check_own(&c3, T3, "t3 active").await;
    let status = |s: &str| format!("UPDATE tenants SET status = '{s}' WHERE id = '{T3}'");
    env.su1(&status("suspended")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = |e: &str| e.starts_with("28000") && e.contains("is not active");
    let err = show(&env.try_login("t3").await.expect_err("login refused"));
    assert!(refused(&err), "login: {err}");
    let err = fails(&c3, "SELECT tenant_id FROM base_entity").await;
    assert!(refused(&err), "connected: {err}");
    env.check_own(&env.login("t1").await, T1, "t1").await;
    env.su1(&status("active")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.check_own(&env.login("t3").await, T3, "t3 again").await;
}

/// Tenant 1 makes the prelude fail on the connection it leaves: thousands of session advisory
/// locks make pg_advisory_unlock_all() slow, and a tiny statement_timeout or
/// transaction_timeout set by set_config() (invisible to the proxy) cuts it. Tenant 2's INSERT
/// must then not run with tenant 1's signed settings. (This was a PROXY BUG: the INSERT went
/// out in the same write as the prelude and landed among tenant 1's rows; fixed in 3e5bff8.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_prelude_does_not_run_next_tenant_statement_as_previous_tenant() {
    let env = Env::new(SOLO).await;
    grant_session_locks(&env).await;
    let a = env.login("t1").await;
    let values = format!("VALUES ('{T2}', '{T2}') RETURNING tenant_id");
    let insert = format!("INSERT INTO base_entity (created_by, updated_by) {values}");
    let set = |name: &str, v: &str| format!("SELECT set_config('{name}', '{v}', false)");
    let by_t2 = format!("SELECT count(*) FROM base_entity WHERE created_by = '{T2}'");
    let misplaced = format!("{by_t2} AND tenant_id <> '{T2}'");
    let mut failures = 0;
    for (locks, ms) in [(10000, 2), (14000, 3), (16000, 1)] {
        for timeout in ["statement_timeout", "transaction_timeout"] {
            let b = env.login("t2").await;
            env.check_own(&b, T2, "t2 before").await;
            col(&a, &set(timeout, "0")).await;
            let lock = "SELECT count(pg_advisory_lock(g)) FROM generate_series(1, ";
            col(&a, &format!("{lock}{locks}) g")).await;
            col(&a, &set(timeout, &format!("{ms}ms"))).await;
            let got = run(&b, &insert).await;
            println!("{locks} locks, {timeout} {ms} ms: tenant 2's INSERT: {got:?}");
            failures += usize::from(got.is_err());
            if env.su1(&misplaced).await != "0" {
                let seen = col(&a, &by_t2).await;
                panic!("LEAK: tenant 2's INSERT ran as tenant 1, which reads {seen:?} rows");
            }
        }
    }
    println!("the prelude failed {failures} times; no statement of tenant 2 ran as tenant 1");
    // A 1 ms transaction_timeout over thousands of unlocks ends the prelude's transaction:
    // without a failure this test would prove nothing about the pipelined prelude.
    assert!(failures > 0, "the prelude never failed");
}

/// With `tenant.statement_guard: false` (the comparison run of scripts/bench-compare) a
/// client's SET of the tenant reaches PostgreSQL, and the database still trusts no tenant
/// without its signature: the forged tenant sees no row of anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_guard_a_forged_tenant_still_sees_nothing() {
    let ids = [T1, T2, T3].map(String::from);
    let env = Env::start(SOLO, ", statement_guard: false", "", &ids, |c| c).await;
    let a = env.login("t1").await;
    env.check_own(&a, T1, "t1").await;
    col(&a, &format!("SET app.tenant_id = '{T2}'")).await;
    let seen = "SELECT count(*) || ' ' || coalesce(launch.current_tenant(), '-') FROM base_entity";
    assert_eq!(
        col(&a, seen).await,
        ["0 -"],
        "a forged tenant must see nothing"
    );
    let other = format!("SELECT count(*) FROM base_entity WHERE tenant_id = '{T2}'");
    assert_eq!(
        env.su1(&other).await.parse::<i64>().map(|n| n > 0),
        Ok(true)
    );
}

/// The prelude is pipelined with the client's first transaction on a connection but runs in
/// a transaction of its own: a client whose first transaction there rolls back (simple
/// Query, separate messages, or extended protocol) still has its tenant afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_first_transaction_keeps_the_tenant() {
    let env = Env::new(SOLO).await;
    let a = env.login("t1").await;
    let b = env.login("t2").await;
    let mine = "SELECT coalesce(launch.current_tenant(), '-')";
    for round in 0..3 {
        env.check_own(&a, T1, "t1").await;
        match round {
            0 => drop(col(&b, &format!("BEGIN; {mine}; ROLLBACK")).await),
            1 => {
                col(&b, "BEGIN").await;
                assert_eq!(col(&b, mine).await, [T2]);
                col(&b, "ROLLBACK").await;
            }
            _ => {
                use tokio::time::timeout;
                let begin = timeout(LIMIT, b.execute("BEGIN", &[])).await;
                begin.expect("hangs").expect("BEGIN");
                let row = timeout(LIMIT, b.query_one(mine, &[])).await;
                assert_eq!(row.expect("hangs").expect(mine).get::<_, String>(0), T2);
                let end = timeout(LIMIT, b.execute("ROLLBACK", &[])).await;
                end.expect("hangs").expect("ROLLBACK");
            }
        }
        env.check_own(&b, T2, &format!("t2 after its rollback (round {round})"))
            .await;
    }
}
