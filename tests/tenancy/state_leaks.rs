//! What one tenant could leave on, or do to, the server connections and backends other tenants use: found by a red-team review, each now refused or undone.

use super::*;

/// What a tenant sets for its session in ways the proxy does not follow (parameters it does
/// not track, transaction characteristics, set_config) is undone before another tenant's
/// transaction starts: the next tenant's write neither runs read-only nor misses its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_defaults_do_not_reach_the_next_tenant() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let insert =
        format!("INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')");
    let mut leaks = Vec::new();
    for sql in [
        "SET default_transaction_read_only = on",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SELECT set_config('default_transaction_read_only', 'on', false)",
        "SELECT set_config('search_path', 'pg_catalog', false)",
        "SET search_path = pg_catalog",
    ] {
        col(&a, sql).await;
        let got = run(&b, &insert).await;
        println!("t1 ran {sql:?}; t2's INSERT: {got:?}");
        col(&a, "RESET ALL").await; // t1 cleans up for the next round
        if got.is_err() {
            leaks.push(sql);
        }
    }
    assert!(leaks.is_empty(), "LEAK: t1's {leaks:?} broke t2's INSERT");
}

/// Every tenant's server connections log in as the same role: no tenant may change its
/// settings (which every later connection would start with) or its password (which would
/// lock every tenant out). The guard refuses ALTER ROLE; a DO block cannot run it either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_role_cannot_be_altered() {
    let env = Env::new(&format!("{SOLO}\nserver_max_uses: 1")).await;
    let a = env.login("t1").await;
    let got = run(
        &a,
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on",
    )
    .await;
    println!("t1 ALTER ROLE ... SET: {got:?}");
    let b = env.login("t2").await;
    let insert =
        format!("INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')");
    let got_b = run(&b, &insert).await;
    println!("t2's INSERT on a new server connection: {got_b:?}");
    let pw = run(
        &a,
        "BEGIN READ WRITE; ALTER ROLE CURRENT_USER PASSWORD 'pwned'; COMMIT",
    )
    .await;
    println!("t1 ALTER ROLE ... PASSWORD: {pw:?}");
    let got_c = run(&b, "SELECT count(*) FROM base_entity").await;
    println!("t2's next SELECT: {got_c:?}");
    let hidden = "DO $$BEGIN EXECUTE 'ALTER ROLE CURRENT_USER PASSWORD ''pwned'''; END$$";
    let hidden = run(&a, hidden).await;
    for refused in [&got, &pw] {
        assert!(
            refused.as_ref().is_err_and(|e| e.starts_with(ROLE_GUARD)),
            "{refused:?}"
        );
    }
    assert!(
        hidden.as_ref().is_err_and(|e| e.starts_with(NO_DO)),
        "{hidden:?}"
    );
    assert!(
        got_b.is_ok() && got_c.is_ok(),
        "LEAK: t1 changed the shared role for t2"
    );
}

/// pg_cancel_backend and pg_terminate_backend would reach other tenants' backends (the
/// same role `app`; pids from pg_stat_get_backend_pid): migrations/0006 revokes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tenant_can_signal_another_tenants_backend() {
    let env = Env::new("").await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let others = "SELECT count(pg_catalog.FN(pg_stat_get_backend_pid(s))) FROM pg_stat_get_backend_idset() s \
                  WHERE pg_stat_get_backend_userid(s) = 'app'::regrole AND pg_stat_get_backend_pid(s) <> pg_backend_pid()";
    let slow = b.simple_query("SELECT tenant_id FROM base_entity, pg_sleep(3)");
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        run(&a, &others.replace("FN", "pg_cancel_backend")).await
    };
    let (slow, cancelled) = tokio::join!(slow, cancel);
    let slow = slow.map(|_| "ok".to_owned()).map_err(|e| show(&e));
    println!("t1 cancels {cancelled:?}; t2's query: {slow:?}");
    col(&b, "BEGIN; SELECT 1").await;
    let killed = run(&a, &others.replace("FN", "pg_terminate_backend")).await;
    let after = run(&b, "SELECT count(*) FROM base_entity").await;
    println!("t1 terminates {killed:?}; t2's open transaction: {after:?}");
    for refused in [&cancelled, &killed] {
        let denied = "42501 permission denied for function pg_";
        assert!(
            refused.as_ref().is_err_and(|e| e.starts_with(denied)),
            "{refused:?}"
        );
    }
    assert!(
        slow.is_ok() && after.is_ok(),
        "LEAK: t1 cancelled/terminated t2's work"
    );
}

/// Session values the proxy applies again are written as `E'...'` literals, which read the
/// same whatever standard_conforming_strings is: on a server connection another client
/// left with it off, a plain `'...\'` would not end, and the text of the next value would
/// run as SQL, past the guard, the PREPARE/DEALLOCATE refusal and the cursor tracking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplied_values_run_no_sql() {
    let env = Env::new(SOLO).await;
    let (y, b) = (env.login("t1").await, env.login("t2").await);
    let st = b
        .prepare("SELECT tenant_id::text FROM base_entity")
        .await
        .unwrap();
    col(&y, "SET standard_conforming_strings = off").await;
    let mut config: tokio_postgres::Config =
        env.proxy.conn_string("t1", &pw("t1")).parse().unwrap();
    config.options(r"-c foo.a=\\ -c foo.b=;DEALLOCATE\ ALL;DECLARE\ planted\ CURSOR\ WITH\ HOLD\ FOR\ SELECT\ 1;SET\ app.tenant_id=x;--");
    let (x, conn) = config.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let seen = col(&x, "SELECT current_setting('app.tenant_id')").await;
    let cursors = col(&b, "SELECT name FROM pg_cursors").await;
    let rows = texts(b.query(&st, &[]).await);
    println!(
        "t1 sees app.tenant_id {seen:?}; t2 sees cursors {cursors:?}, its statement: {rows:?}"
    );
    assert!(
        seen == [T1] && cursors.is_empty() && rows.is_ok(),
        "LEAK: hidden SQL ran"
    );
}

/// A FunctionCall message calls any function by OID, past the statement guard: it is
/// refused, and the tenant stays the client's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_of_set_config_is_refused() {
    let env = Env::new(SOLO).await;
    let mut w = Wire::login(env.proxy.port, "t1m");
    let mut body = 2078u32.to_be_bytes().to_vec(); // set_config(text, text, bool)
    body.extend([0, 1, 0, 0]); // one format code: text
    body.extend([0, 3]);
    for arg in ["app.tenant_id", T2, "false"] {
        body.extend((arg.len() as u32).to_be_bytes());
        body.extend(arg.as_bytes());
    }
    body.extend([0, 0]);
    w.send(b'F', &body);
    let refused = w.results().expect_err("FunctionCall refused");
    assert!(refused.starts_with("0A000"), "{refused}");
    let after = w.query(
        "SELECT current_setting('app.tenant_id') || ' ' || coalesce(launch.current_tenant(), '-')",
    );
    assert_eq!(after, Ok(vec![format!("{T1} {T1}")]));
}

/// A client encoding whose multi-byte characters can hold a backslash byte (SJIS, BIG5, ...)
/// would hide statements from the guard's lexer (`E'\x95\\'; ALTER ROLE ...`): refused at
/// login whichever startup parameter asks for it, as PostgreSQL takes any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_client_encodings_are_refused_in_every_spelling() {
    let env = Env::new(SOLO).await;
    for extra in [
        ("client_encoding", "SJIS"),
        ("Client_Encoding", "SJIS"),
        ("options", "-c client_encoding=SJIS"),
        ("options", "-cclient_encoding=big5"),
        ("options", "--client-encoding=GBK"),
        ("options", "-c CLIENT_ENCODING=sjis"),
    ] {
        let got = Wire::login_with(env.proxy.port, "t1m", &[extra]).map(|_| ());
        assert!(
            got.as_ref().is_err_and(|e| e.starts_with("0A000")),
            "{extra:?}: {got:?}"
        );
    }
    let mut w = Wire::login_with(
        env.proxy.port,
        "t1m",
        &[("options", "-c client_encoding=LATIN1")],
    )
    .expect("an ASCII-safe encoding");
    assert_eq!(
        w.query("SHOW client_encoding"),
        Ok(vec!["LATIN1".to_owned()])
    );
}

/// A client's SET values follow it across a tenant switch, written anew (non-ASCII and `$`
/// identifiers, quoted identifiers); one the proxy cannot write again (a backslash in a
/// plain string) is not followed, and neither kind reaches the next client of the same
/// tenant on the same server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_values_follow_their_client_and_no_one_else() {
    let env = Env::new(SOLO).await;
    let (a, a2, b) = (
        env.login("t1").await,
        env.login("t1m").await,
        env.login("t2").await,
    );
    let default = col(&a2, "SHOW search_path").await;
    let mut bad = Vec::new();
    for (set, followed) in [
        ("SET search_path TO café, public", true),
        ("SET search_path TO my$schema", true),
        (r#"SET search_path TO "a""b""#, true),
        (r"SET search_path TO 'C:\dir'", false),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            false,
        ),
    ] {
        col(&a, set).await;
        let own = col(&a, "SHOW search_path").await;
        let other = col(&a2, "SHOW search_path").await;
        let insert = format!(
            "INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')"
        );
        let write = run(&a2, &insert).await;
        col(&b, "SELECT 1").await;
        let after = col(&a, "SHOW search_path").await;
        if other != default || write.is_err() {
            bad.push(format!("{set}: LEAK to t1m: {other:?} {write:?}"));
        }
        if followed && after != own {
            bad.push(format!("{set}: {own:?} lost after a switch: {after:?}"));
        }
        col(&a, "RESET ALL").await;
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// SET TIME ZONE forms after a tenant switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_zone_forms_survive_a_switch() {
    let env = Env::new(SOLO).await;
    let (a, b) = (env.login("t1").await, env.login("t2").await);
    let mut bad = Vec::new();
    for set in [
        "SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE",
        "SET TIME ZONE -5",
        "SET TIME ZONE 'America/New_York'",
        "SET datestyle = sql, dmy",
        "SET intervalstyle = iso_8601",
        "SET application_name = 'x\\y'",
    ] {
        col(&a, set).await;
        let before = col(&a, "SELECT current_setting('TimeZone')||' '||current_setting('DateStyle')||' '||current_setting('IntervalStyle')||' '||current_setting('application_name')").await;
        let other = run(&b, "SELECT 1").await;
        let after = run(&a, "SELECT current_setting('TimeZone')||' '||current_setting('DateStyle')||' '||current_setting('IntervalStyle')||' '||current_setting('application_name')").await;
        println!("{set:?}: before {before:?} other {other:?} after {after:?}");
        if after != Ok(before) || other.is_err() {
            bad.push(set);
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// A refused Query inside an aborted transaction block: PostgreSQL answers 25P02 to any
/// statement there; and statements pipelined after a refused Query still run as they would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_queries_in_pipelines() {
    let env = Env::new(SOLO).await;
    let mut w = Wire::login(env.proxy.port, "t1m");
    // Pipelined simple Queries.
    for q in [
        "BEGIN",
        "SELECT 1/0",
        "ALTER ROLE CURRENT_USER SET work_mem = '1MB'",
        "SELECT 2",
        "ROLLBACK",
    ] {
        w.send(b'Q', &cstr(q));
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(w.results());
    }
    println!("in aborted block: {got:?}");
    for q in [
        "ALTER USER CURRENT_USER SET work_mem = '1MB'",
        "SELECT 3",
        "SELECT alter_ego FROM (SELECT 1 alter_ego) s",
    ] {
        w.send(b'Q', &cstr(q));
    }
    let mut got2 = Vec::new();
    for _ in 0..3 {
        got2.push(w.results());
    }
    println!("pipelined after refusal: {got2:?}");
    assert_eq!(got2[1], Ok(vec!["3".to_owned()]));
    assert_eq!(got2[2], Ok(vec!["1".to_owned()]));
    assert!(
        got[2].as_ref().is_err_and(|e| e.starts_with("25P02")),
        "{:?}",
        got[2]
    );
}

/// A named statement that changes a setting the proxy does not follow marks its server
/// connection each time it runs, not only when its text was parsed: the next client of
/// the same tenant starts clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_set_does_not_reach_the_next_client() {
    let env = Env::new(SOLO).await;
    let (a, a2) = (env.login("t1").await, env.login("t1m").await);
    let insert =
        format!("INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')");
    for sql in [
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SELECT set_config('default_transaction_read_only', 'on', false)",
    ] {
        let st = a.prepare(sql).await.unwrap();
        // t1m's transaction runs the switch for what the Parse left, and owns the connection.
        run(&a2, &insert).await.unwrap();
        a.execute(&st, &[]).await.unwrap();
        let got = run(&a2, &insert).await;
        assert!(
            got.is_ok(),
            "LEAK: t1's prepared {sql:?} reached t1m: {got:?}"
        );
    }
}
