//! Tenant isolation enforced by PostgreSQL itself (migrations/*.sql, docs/tenancy.md),
//! tested directly against the server, without the proxy: the signed tenant context
//! (`app.tenant_id` + `app.tenant_sig`) read by `launch.current_tenant()`, forced
//! row-level security on every tenant table, what the application roles may and may
//! not do, the signing key store and its rotation, audit_log partitions and
//! `launch.tenant_status()`.
//!
//! Sessions start the way launch-proxy starts them:
//! `SET app.tenant_id = '<ULID>'; SET app.tenant_sig = '<hex HMAC-SHA256>'`, with the
//! HMAC computed here by the same crates the proxy uses.

mod common;

use common::PgServer;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// The proxy's `tenant.signing_key`: hex of 32 random bytes.
const KEY: &str = "5f3c9a0e7b1d24c6a8e0f2b4d6c8e1a3957b3d1f0c2e4a6b8d0f1e3c5a7b9d2e";
const TENANT_A: &str = "01JBXTENANTA0000000000000A";
const TENANT_B: &str = "01JBXTENANTB0000000000000B";
const ACTOR: &str = "01JBXACT0R00000000000000C1";
/// Tenant tables and how many rows of each tenant `seed` puts in them.
const TABLES: [&str; 3] = ["tenants", "base_entity", "audit_log"];
const SEEDED: [i64; 3] = [1, 2, 2];

// ------------------------------------------------------------------------- helpers

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// What the proxy sends as `app.tenant_sig`: lowercase hex HMAC-SHA256(key, tenant).
fn sign(key_hex: &str, tenant: &str) -> String {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&unhex(key_hex))
        .expect("HMAC takes keys of any length");
    mac.update(tenant.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// A fresh server with the migrations applied, the signing key provisioned and two
/// tenants with rows in every table.
fn setup() -> PgServer {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    provision_key(&pg, KEY);
    seed(&pg);
    pg
}

fn provision_key(pg: &PgServer, key: &str) {
    pg.psql("launch", &format!("SELECT launch.set_signing_key('{key}')"));
}

/// Tenants A and B, two base_entity rows each and one audit_log row per entity, all
/// written by the superuser (which is not subject to row-level security).
fn seed(pg: &PgServer) {
    pg.psql(
        "launch",
        &format!(
            "INSERT INTO tenants (id, name, domain, created_by, updated_by) VALUES
                 ('{TENANT_A}', 'A', 'a.example', '{ACTOR}', '{ACTOR}'),
                 ('{TENANT_B}', 'B', 'b.example', '{ACTOR}', '{ACTOR}');
             INSERT INTO base_entity (tenant_id, created_by, updated_by)
                 SELECT id, '{ACTOR}', '{ACTOR}' FROM tenants, generate_series(1, 2);
             INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by)
                 SELECT tenant_id, id, 'base_entity', 'create', '{ACTOR}' FROM base_entity;"
        ),
    );
}

async fn connect(pg: &PgServer, user: &str) -> Client {
    let password = match user {
        "app" => "apppw",
        "app_ro" => "approp",
        other => panic!("no password for {other}"),
    };
    let conn = format!(
        "host=127.0.0.1 port={} user={user} password={password} dbname=launch",
        pg.port
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The prelude launch-proxy sends before a client's statements.
async fn prelude(c: &Client, tenant: &str, sig: &str) {
    c.batch_execute(&format!(
        "SET app.tenant_id = '{tenant}'; SET app.tenant_sig = '{sig}'"
    ))
    .await
    .unwrap();
}

/// A session of `user` signed in as `tenant` with the test key.
async fn tenant_session(pg: &PgServer, user: &str, tenant: &str) -> Client {
    let c = connect(pg, user).await;
    prelude(&c, tenant, &sign(KEY, tenant)).await;
    c
}

async fn scalar_i64(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn scalar_text(c: &Client, sql: &str) -> Option<String> {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Row counts of the tenant tables as this session sees them.
async fn visible(c: &Client) -> [i64; 3] {
    let mut counts = [0; 3];
    for (n, table) in counts.iter_mut().zip(TABLES) {
        *n = scalar_i64(c, &format!("SELECT count(*) FROM {table}")).await;
    }
    counts
}

async fn current_tenant(c: &Client) -> Option<String> {
    scalar_text(c, "SELECT launch.current_tenant()").await
}

/// The SQLSTATE of a statement that must fail.
async fn fails(c: &Client, sql: &str) -> SqlState {
    let err = c
        .batch_execute(sql)
        .await
        .expect_err(&format!("must fail: {sql}"));
    err.code()
        .unwrap_or_else(|| panic!("{sql}: not a server error: {err}"))
        .clone()
}

/// Rows affected by a statement that must succeed.
async fn affected(c: &Client, sql: &str) -> u64 {
    c.execute(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The superuser's view of the data: per tenant, rows in each table, and a digest of
/// everything that a tenant could have changed.
fn snapshot(pg: &PgServer) -> String {
    pg.psql(
        "launch",
        "SELECT (SELECT string_agg(concat_ws(':', id, name, domain, status, version), ',' ORDER BY id)
                 FROM tenants),
                (SELECT string_agg(concat_ws(':', id, tenant_id, version, is_active), ',' ORDER BY id)
                 FROM base_entity),
                (SELECT string_agg(concat_ws(':', id, tenant_id, action), ',' ORDER BY id)
                 FROM audit_log)",
    )
}

// --------------------------------------------------------------- schema and roles

#[tokio::test]
async fn migrations_apply_twice_and_everything_belongs_to_the_owner() {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    pg.apply_migrations("launch");
    provision_key(&pg, KEY);
    seed(&pg);
    // Re-applying on a database with data and a key keeps both.
    pg.apply_migrations("launch");
    let app = tenant_session(&pg, "app", TENANT_A).await;
    assert_eq!(visible(&app).await, SEEDED);

    let roles = pg.psql(
        "launch",
        "SELECT rolname, rolcanlogin, rolsuper, rolbypassrls, rolcreaterole FROM pg_roles
         WHERE rolname IN ('launch_owner', 'app', 'app_ro') ORDER BY rolname",
    );
    assert_eq!(roles, "app|t|f|f|f\napp_ro|t|f|f|f\nlaunch_owner|f|f|f|f");

    let not_owned = pg.psql(
        "launch",
        "SELECT string_agg(what, ', ') FROM (
             SELECT c.oid::regclass::text AS what FROM pg_class c
             WHERE c.relnamespace IN ('public'::regnamespace, 'launch'::regnamespace,
                                      'launch_private'::regnamespace)
               AND pg_get_userbyid(c.relowner) <> 'launch_owner'
             UNION ALL
             SELECT p.oid::regprocedure::text FROM pg_proc p
             WHERE p.pronamespace IN ('public'::regnamespace, 'launch'::regnamespace)
               AND pg_get_userbyid(p.proowner) <> 'launch_owner'
             UNION ALL
             SELECT nspname FROM pg_namespace
             WHERE nspname IN ('launch', 'launch_private')
               AND pg_get_userbyid(nspowner) <> 'launch_owner') o",
    );
    assert_eq!(not_owned, "", "objects not owned by launch_owner");

    // Every table in public, partitions included, enables and forces row-level security.
    let unforced = pg.psql(
        "launch",
        "SELECT string_agg(relname, ', ') FROM pg_class
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')
           AND NOT (relrowsecurity AND relforcerowsecurity)",
    );
    assert_eq!(unforced, "");
    let tables = pg.psql(
        "launch",
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace \
         AND relkind IN ('r', 'p')",
    );
    assert!(tables.parse::<i64>().unwrap() >= 7, "{tables} tables"); // 3 + 4 partitions

    // The proxy can run the role check through its own pool: no problems.
    for user in ["app", "app_ro"] {
        let c = connect(&pg, user).await;
        let problems: Vec<String> = c
            .query(
                "SELECT role_name || ': ' || problem FROM launch.check_app_roles()",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[tokio::test]
async fn check_app_roles_reports_unsafe_roles_and_reapplying_repairs_them() {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    let problems = |pg: &PgServer| {
        pg.psql(
            "launch",
            "SELECT role_name || ': ' || problem FROM launch.check_app_roles()",
        )
    };
    assert_eq!(problems(&pg), "");

    pg.psql(
        "launch",
        "ALTER ROLE app BYPASSRLS;
         GRANT launch_owner TO app_ro;
         GRANT CREATE ON SCHEMA public TO app;
         GRANT TEMPORARY ON DATABASE launch TO app_ro;
         CREATE TABLE public.scratch (x int);
         ALTER TABLE public.scratch OWNER TO app;
         GRANT SELECT ON pg_stat_activity TO app_ro;",
    );
    let found = problems(&pg);
    for expected in [
        "app: has BYPASSRLS",
        "app: may create objects in schema public",
        "app: owns 1 relation(s): public.scratch",
        "app: has privileges on public.scratch, which does not force row-level security",
        "app_ro: is a member of launch_owner, which owns the tenant tables",
        "app_ro: may create temporary tables in database launch",
        "app_ro: can read other sessions' queries",
        "app_ro: can reach the signing key",
    ] {
        assert!(
            found.lines().any(|l| l.starts_with(expected)),
            "missing {expected:?} in:\n{found}"
        );
    }

    // The migrations take back what they grant or forbid; a table the role created
    // stays its own until an operator deals with it.
    pg.apply_migrations("launch");
    assert_eq!(
        problems(&pg),
        "app: owns 1 relation(s): public.scratch\n\
         app: has privileges on public.scratch, which does not force row-level security"
    );
    pg.psql("launch", "DROP TABLE public.scratch");
    assert_eq!(problems(&pg), "");
    assert_eq!(
        pg.psql(
            "launch",
            "SELECT role_name || ': ' || problem FROM launch.check_app_roles(ARRAY['nobody'])"
        ),
        "nobody: role does not exist"
    );
}

// ------------------------------------------------------------ reads and writes

#[tokio::test]
async fn signed_tenant_sees_only_its_own_rows() {
    let pg = setup();
    for user in ["app", "app_ro"] {
        let c = connect(&pg, user).await;
        for (me, other) in [(TENANT_A, TENANT_B), (TENANT_B, TENANT_A)] {
            // The same server session serves one tenant after the other, as in the pool.
            prelude(&c, me, &sign(KEY, me)).await;
            assert_eq!(current_tenant(&c).await.as_deref(), Some(me));
            assert_eq!(visible(&c).await, SEEDED, "{user} as {me}");
            let owners = scalar_text(
                &c,
                "SELECT string_agg(DISTINCT t, ',') FROM (
                     SELECT id::text AS t FROM tenants
                     UNION ALL SELECT tenant_id FROM base_entity
                     UNION ALL SELECT tenant_id FROM audit_log) s",
            )
            .await;
            assert_eq!(owners.as_deref(), Some(me), "{user} as {me}");
            let others = scalar_i64(
                &c,
                &format!("SELECT count(*) FROM base_entity WHERE tenant_id = '{other}'"),
            )
            .await;
            assert_eq!(others, 0);
        }
    }
}

#[tokio::test]
async fn signed_tenant_writes_only_its_own_rows() {
    let pg = setup();
    let app = tenant_session(&pg, "app", TENANT_A).await;
    let entity = scalar_text(&app, "SELECT id::text FROM base_entity LIMIT 1")
        .await
        .unwrap();
    const DENIED: Result<u64, SqlState> = Err(SqlState::INSUFFICIENT_PRIVILEGE);
    let steps: Vec<(String, Result<u64, SqlState>)> = vec![
        // base_entity: its own rows; tenant_id defaults to the session's tenant.
        (
            format!("INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')"),
            Ok(1),
        ),
        (
            format!(
                "INSERT INTO base_entity (tenant_id, created_by, updated_by) \
                 VALUES ('{TENANT_B}', '{ACTOR}', '{ACTOR}')"
            ),
            DENIED,
        ),
        // Moving its rows to another tenant.
        (format!("UPDATE base_entity SET tenant_id = '{TENANT_B}'"), DENIED),
        ("UPDATE base_entity SET version = version + 1".into(), Ok(3)),
        (
            format!("UPDATE base_entity SET version = 99 WHERE tenant_id = '{TENANT_B}'"),
            Ok(0),
        ),
        (format!("DELETE FROM base_entity WHERE tenant_id = '{TENANT_B}'"), Ok(0)),
        // audit_log: append-only, own tenant only.
        (
            format!(
                "INSERT INTO audit_log (entity_id, entity_type, action, performed_by) \
                 VALUES ('{entity}', 'base_entity', 'update', '{ACTOR}')"
            ),
            Ok(1),
        ),
        (
            format!(
                "INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by) \
                 VALUES ('{TENANT_B}', '{entity}', 'base_entity', 'forge', '{ACTOR}')"
            ),
            DENIED,
        ),
        ("UPDATE audit_log SET action = 'x'".into(), DENIED),
        ("DELETE FROM audit_log".into(), DENIED),
        // tenants: its own row's details, never its id or status; no new tenants.
        ("UPDATE tenants SET name = 'A2'".into(), Ok(1)),
        (format!("UPDATE tenants SET name = 'x' WHERE id = '{TENANT_B}'"), Ok(0)),
        ("UPDATE tenants SET status = 'active'".into(), DENIED),
        (format!("UPDATE tenants SET id = '{TENANT_B}'"), DENIED),
        (
            format!("INSERT INTO tenants (name, created_by, updated_by) VALUES ('C', '{ACTOR}', '{ACTOR}')"),
            DENIED,
        ),
        ("DELETE FROM tenants".into(), DENIED),
    ];
    for (sql, expected) in steps {
        let outcome = match app.execute(&sql, &[]).await {
            Ok(n) => Ok(n),
            Err(e) => Err(e.code().cloned().unwrap_or_else(|| panic!("{sql}: {e}"))),
        };
        assert_eq!(outcome, expected, "{sql}");
    }

    let after = pg.psql(
        "launch",
        &format!(
            "SELECT (SELECT count(*) FROM base_entity WHERE tenant_id = '{TENANT_B}' AND version = 1),
                    (SELECT count(*) FROM audit_log WHERE tenant_id = '{TENANT_B}'),
                    (SELECT name FROM tenants WHERE id = '{TENANT_B}'),
                    (SELECT name FROM tenants WHERE id = '{TENANT_A}'),
                    (SELECT count(*) FROM base_entity WHERE tenant_id = '{TENANT_A}' AND version = 2),
                    (SELECT count(*) FROM audit_log WHERE tenant_id = '{TENANT_A}')"
        ),
    );
    assert_eq!(after, "2|2|B|A2|3|3", "B untouched, A changed");
}

#[tokio::test]
async fn missing_malformed_or_forged_context_sees_and_writes_nothing() {
    let pg = setup();
    let before = snapshot(&pg);
    let other_key = "aa".repeat(32);
    let cases: Vec<(&str, Option<(String, String)>)> = vec![
        ("never set", None),
        ("tenant-less (empty)", Some((String::new(), String::new()))),
        ("unsigned", Some((TENANT_A.into(), String::new()))),
        (
            "garbage signature",
            Some((TENANT_A.into(), "deadbeef".into())),
        ),
        (
            "non-hex signature",
            Some((TENANT_A.into(), "zz".repeat(32))),
        ),
        (
            "B's signature on A",
            Some((TENANT_A.into(), sign(KEY, TENANT_B))),
        ),
        (
            "A's signature on B",
            Some((TENANT_B.into(), sign(KEY, TENANT_A))),
        ),
        (
            "uppercase signature",
            Some((TENANT_A.into(), sign(KEY, TENANT_A).to_uppercase())),
        ),
        (
            "signature with a trailing byte",
            Some((TENANT_A.into(), sign(KEY, TENANT_A) + "00")),
        ),
        (
            "another key",
            Some((TENANT_A.into(), sign(&other_key, TENANT_A))),
        ),
        (
            "signed, but not a ULID",
            Some((TENANT_A.to_lowercase(), sign(KEY, &TENANT_A.to_lowercase()))),
        ),
    ];
    for (label, context) in cases {
        let c = connect(&pg, "app").await;
        if let Some((tenant, sig)) = &context {
            prelude(&c, tenant, sig).await;
        }
        assert_eq!(current_tenant(&c).await, None, "{label}");
        assert_eq!(visible(&c).await, [0, 0, 0], "{label}");
        for sql in [
            format!(
                "INSERT INTO base_entity (tenant_id, created_by, updated_by) \
                 VALUES ('{TENANT_A}', '{ACTOR}', '{ACTOR}')"
            ),
            format!(
                "INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')"
            ),
            format!(
                "INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by) \
                 VALUES ('{TENANT_A}', '{ACTOR}', 'base_entity', 'forge', '{ACTOR}')"
            ),
        ] {
            c.batch_execute(&sql)
                .await
                .expect_err(&format!("{label}: {sql}"));
        }
        assert_eq!(affected(&c, "UPDATE base_entity SET version = 7").await, 0);
        assert_eq!(affected(&c, "DELETE FROM base_entity").await, 0);
        assert_eq!(affected(&c, "UPDATE tenants SET name = 'x'").await, 0);
    }
    assert_eq!(snapshot(&pg), before);
}

#[tokio::test]
async fn dynamic_sql_cannot_switch_tenant() {
    let pg = setup();
    let app = tenant_session(&pg, "app", TENANT_A).await;
    assert_eq!(visible(&app).await, SEEDED);

    // What the proxy's statement guard cannot see: set_config() in a DO block.
    app.batch_execute(&format!(
        "DO $$ BEGIN PERFORM set_config('app.tenant_id', '{TENANT_B}', false); END $$"
    ))
    .await
    .unwrap();
    assert_eq!(current_tenant(&app).await, None);
    assert_eq!(visible(&app).await, [0, 0, 0]);

    // Transaction-local, with a signature that is well-formed but for someone else.
    app.batch_execute(&format!(
        "BEGIN;
         DO $$ BEGIN
             PERFORM set_config('app.tenant_id', '{TENANT_B}', true);
             PERFORM set_config('app.tenant_sig', '{}', true);
         END $$;",
        sign(KEY, TENANT_A)
    ))
    .await
    .unwrap();
    assert_eq!(visible(&app).await, [0, 0, 0]);
    app.batch_execute("COMMIT").await.unwrap();

    // The application roles cannot plant code that would run for other tenants.
    for sql in [
        "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TABLE public.t (x int)",
        "CREATE TEMP TABLE t (x int)",
        "CREATE SCHEMA s",
    ] {
        assert_eq!(
            fails(&app, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }

    // The one thing a signature is good for: the tenant it was made for.
    app.batch_execute(&format!(
        "DO $$ BEGIN PERFORM set_config('app.tenant_id', '{TENANT_A}', false); END $$"
    ))
    .await
    .unwrap();
    assert_eq!(visible(&app).await, SEEDED);
}

#[tokio::test]
async fn app_ro_cannot_write() {
    let pg = setup();
    let before = snapshot(&pg);
    let ro = tenant_session(&pg, "app_ro", TENANT_A).await;
    assert_eq!(visible(&ro).await, SEEDED);
    for sql in [
        format!("INSERT INTO base_entity (created_by, updated_by) VALUES ('{ACTOR}', '{ACTOR}')"),
        "UPDATE base_entity SET version = 5".into(),
        "DELETE FROM base_entity".into(),
        format!(
            "INSERT INTO audit_log (entity_id, entity_type, action, performed_by) \
             VALUES ('{ACTOR}', 'base_entity', 'x', '{ACTOR}')"
        ),
        "UPDATE tenants SET name = 'x'".into(),
        "DELETE FROM tenants".into(),
    ] {
        assert_eq!(
            fails(&ro, &sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    assert_eq!(snapshot(&pg), before);
}

// -------------------------------------------------------------------- the policy

#[tokio::test]
async fn tenant_function_runs_once_per_statement() {
    let pg = PgServer::start_with("track_functions = 'all'");
    pg.apply_migrations("launch");
    provision_key(&pg, KEY);
    seed(&pg);
    pg.psql(
        "launch",
        &format!(
            "INSERT INTO base_entity (tenant_id, created_by, updated_by)
             SELECT '{TENANT_A}', '{ACTOR}', '{ACTOR}' FROM generate_series(1, 48)"
        ),
    );
    let app = &tenant_session(&pg, "app", TENANT_A).await;

    for table in TABLES {
        let plan: Vec<String> = app
            .query(
                &format!("EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM {table}"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("InitPlan"), "{table}:\n{plan}");
        assert_eq!(
            plan.matches("current_tenant").count(),
            1,
            "{table}:\n{plan}"
        );
    }

    // Counted calls, in one transaction (pg_stat_xact_user_functions).
    app.batch_execute("BEGIN").await.unwrap();
    let calls = move || async move {
        scalar_i64(
            app,
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions \
             WHERE schemaname = 'launch' AND funcname = 'current_tenant'",
        )
        .await
    };
    assert_eq!(
        scalar_i64(app, "SELECT count(*) FROM base_entity").await,
        50
    );
    assert_eq!(calls().await, 1, "one call for a 50-row scan");
    assert_eq!(
        affected(app, "UPDATE base_entity SET version = version + 1").await,
        50
    );
    // One for the rows it may update (USING), one for what it may write (WITH CHECK).
    assert_eq!(calls().await, 3, "two more for a 50-row update");
    assert_eq!(
        affected(
            app,
            &format!(
                "INSERT INTO base_entity (created_by, updated_by) \
                 SELECT '{ACTOR}', '{ACTOR}' FROM generate_series(1, 20)"
            )
        )
        .await,
        20
    );
    assert_eq!(calls().await, 4, "one more for a 20-row insert");
    app.batch_execute("COMMIT").await.unwrap();
}

// -------------------------------------------------------------- the signing key

#[tokio::test]
async fn signing_key_is_out_of_reach_of_the_app_roles() {
    let pg = setup();
    for user in ["app", "app_ro"] {
        let c = tenant_session(&pg, user, TENANT_A).await;
        for sql in [
            "SELECT * FROM launch_private.signing_keys",
            "SELECT launch.set_signing_key(repeat('00', 32))",
            "SELECT launch.retire_previous_signing_key()",
            "SELECT * FROM launch.signing_key_status()",
            "SELECT launch.create_audit_log_partitions()",
        ] {
            assert_eq!(
                fails(&c, sql).await,
                SqlState::INSUFFICIENT_PRIVILEGE,
                "{user}: {sql}"
            );
        }
    }

    let su = pg.superuser("launch").await;
    for bad in ["", "abc", "xyz0", &"ab".repeat(31)] {
        assert_eq!(
            fails(&su, &format!("SELECT launch.set_signing_key('{bad}')")).await,
            SqlState::INVALID_PARAMETER_VALUE,
            "key {bad:?}"
        );
    }
    // Rejected keys changed nothing.
    let app = tenant_session(&pg, "app", TENANT_A).await;
    assert_eq!(current_tenant(&app).await.as_deref(), Some(TENANT_A));
}

#[tokio::test]
async fn other_sessions_cannot_copy_a_signature_from_pg_stat_activity() {
    let pg = setup();
    // Tenant A's session sits idle right after the prelude, its text on display.
    let _a = tenant_session(&pg, "app", TENANT_A).await;
    let leaked = pg.psql(
        "launch",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
         AND query LIKE '%app.tenant_sig%'",
    );
    assert_eq!(leaked, "1", "the superuser sees the prelude");

    let b = tenant_session(&pg, "app", TENANT_B).await;
    for sql in [
        "SELECT query FROM pg_stat_activity",
        "SELECT pg_stat_get_backend_activity(s) FROM pg_stat_get_backend_idset() s",
        "SELECT query FROM pg_stat_get_activity(NULL)",
    ] {
        assert_eq!(
            fails(&b, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
}

#[tokio::test]
async fn signature_matches_the_proxy_hmac_and_keys_rotate() {
    let pg = PgServer::start();
    pg.apply_migrations("launch");
    seed(&pg);
    let app = &connect(&pg, "app").await;
    let signed_as = move |key: String| async move {
        prelude(app, TENANT_A, &sign(&key, TENANT_A)).await;
        current_tenant(app).await
    };

    // No key provisioned: nothing verifies.
    assert_eq!(signed_as(KEY.into()).await, None);

    // Every key length the proxy may use: exactly one block, shorter (zero-padded) and
    // longer (hashed first, as HMAC prescribes).
    for len in [32, 63, 64, 65, 131] {
        let key: String = (0..len)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        pg.psql(
            "launch",
            &format!("SELECT launch.set_signing_key('{key}', false)"),
        );
        assert_eq!(
            signed_as(key).await.as_deref(),
            Some(TENANT_A),
            "{len}-byte key"
        );
    }

    // Rotation: the new key is accepted at once, the old one until it is retired.
    let k1 = KEY.to_string();
    let k2 = "c3".repeat(48);
    let k3 = "5a".repeat(40);
    pg.psql(
        "launch",
        &format!("SELECT launch.set_signing_key('{k1}', false)"),
    );
    pg.psql("launch", &format!("SELECT launch.set_signing_key('{k2}')"));
    // Provisioning the current key again must not push the previous one out.
    pg.psql("launch", &format!("SELECT launch.set_signing_key('{k2}')"));
    let fingerprint = |k: &str| hex(&Sha256::digest(unhex(k))[..8]);
    assert_eq!(
        pg.psql(
            "launch",
            "SELECT slot || '=' || fingerprint FROM launch.signing_key_status()"
        ),
        format!(
            "current={}\nprevious={}",
            fingerprint(&k2),
            fingerprint(&k1)
        )
    );
    assert_eq!(signed_as(k1.clone()).await.as_deref(), Some(TENANT_A));
    assert_eq!(signed_as(k2.clone()).await.as_deref(), Some(TENANT_A));

    assert_eq!(
        pg.psql("launch", "SELECT launch.retire_previous_signing_key()"),
        "t"
    );
    assert_eq!(
        pg.psql("launch", "SELECT launch.retire_previous_signing_key()"),
        "f"
    );
    assert_eq!(signed_as(k1).await, None, "retired key");
    assert_eq!(signed_as(k2.clone()).await.as_deref(), Some(TENANT_A));

    // A leaked key is dropped at once.
    pg.psql(
        "launch",
        &format!("SELECT launch.set_signing_key('{k3}', keep_previous => false)"),
    );
    assert_eq!(signed_as(k2).await, None, "replaced without keeping it");
    assert_eq!(signed_as(k3).await.as_deref(), Some(TENANT_A));
}

// ------------------------------------------------------------------ audit_log

#[tokio::test]
async fn audit_log_partitions_cover_coming_months_and_protect_direct_reads() {
    let pg = setup();
    // Partition names of the server's current month and the two after it. (The
    // migration made four from its own clock, so a month turning over meanwhile still
    // leaves these three.)
    let month = |offset: i32| {
        pg.psql(
            "launch",
            &format!(
                "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') \
                 + make_interval(months => {offset}), '\"audit_log_y\"YYYY\"m\"MM')"
            ),
        )
    };
    let months: Vec<String> = (0..3).map(month).collect();
    for part in months
        .iter()
        .map(String::as_str)
        .chain(["audit_log_default"])
    {
        assert_eq!(
            pg.psql(
                "launch",
                &format!(
                    "SELECT count(*) FROM pg_inherits \
                     WHERE inhparent = 'audit_log'::regclass AND inhrelid = to_regclass('{part}')"
                )
            ),
            "1",
            "partition {part}"
        );
    }

    let app = &tenant_session(&pg, "app", TENANT_A).await;
    let insert_at = move |at: &'static str| async move {
        app.query_one(
                &format!(
                    "INSERT INTO audit_log (entity_id, entity_type, action, performed_by, performed_at) \
                     VALUES ('{ACTOR}', 'base_entity', 'later', '{ACTOR}', {at}) \
                     RETURNING tableoid::regclass::text"
                ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("insert at {at}: {e}"))
        .get::<_, String>(0)
    };
    let next_month = "date_trunc('month', now()) + interval '1 month 3 days'";
    assert_eq!(insert_at(next_month).await, months[1]);
    // A month without a partition: the default partition takes the row...
    assert_eq!(
        insert_at("'2099-03-15 12:00:00+00'").await,
        "audit_log_default"
    );
    // ...and hands it over when the month's partition is created.
    assert_eq!(
        pg.psql(
            "launch",
            "SELECT launch.create_audit_log_partitions(0, '2099-03-01 00:00:00+00')"
        ),
        "1"
    );
    assert_eq!(
        scalar_text(
            app,
            "SELECT string_agg(tableoid::regclass::text, ',') FROM audit_log \
             WHERE performed_at >= '2099-01-01'"
        )
        .await
        .as_deref(),
        Some("audit_log_y2099m03")
    );
    assert_eq!(
        pg.psql("launch", "SELECT count(*) FROM audit_log_default"),
        "0"
    );

    // Partitions named directly: no privileges for the application roles...
    let this_month = &months[0];
    for part in [
        this_month.as_str(),
        "audit_log_default",
        "audit_log_y2099m03",
    ] {
        assert_eq!(
            fails(app, &format!("SELECT * FROM {part}")).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{part}"
        );
    }
    // ...and were one granted by mistake, the partition's own policy still applies.
    pg.psql(
        "launch",
        &format!("GRANT SELECT ON {this_month}, audit_log_default TO app"),
    );
    let count_b = format!("SELECT count(*) FROM {this_month} WHERE tenant_id = '{TENANT_B}'");
    assert_eq!(
        pg.psql("launch", &count_b),
        "2",
        "B has rows in {this_month}"
    );
    assert_eq!(scalar_i64(app, &count_b).await, 0);
    assert_eq!(
        scalar_i64(app, &format!("SELECT count(*) FROM {this_month}")).await,
        2
    );
    let forged = connect(&pg, "app").await;
    prelude(&forged, TENANT_B, &sign(KEY, TENANT_A)).await;
    assert_eq!(
        scalar_i64(&forged, &format!("SELECT count(*) FROM {this_month}")).await,
        0
    );
}

// -------------------------------------------------------------- tenant status

#[tokio::test]
async fn tenant_status_answers_without_a_tenant() {
    let pg = setup();
    pg.psql(
        "launch",
        &format!("UPDATE tenants SET status = 'suspended' WHERE id = '{TENANT_B}'"),
    );
    for user in ["app", "app_ro"] {
        // As the proxy's login check runs it: through the pool, tenant-less.
        let c = &connect(&pg, user).await;
        prelude(c, "", "").await;
        assert_eq!(visible(c).await, [0, 0, 0]);
        let status = move |id: &'static str| async move {
            c.query_one("SELECT launch.tenant_status($1)", &[&id])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        };
        assert_eq!(status(TENANT_A).await.as_deref(), Some("active"), "{user}");
        assert_eq!(
            status(TENANT_B).await.as_deref(),
            Some("suspended"),
            "{user}"
        );
        assert_eq!(status("01JBXN0TATENANT00000000000").await, None);
        assert_eq!(status("not a ulid'; --").await, None);
        assert_eq!(
            scalar_text(c, "SELECT launch.tenant_status(NULL)").await,
            None
        );
    }
}
