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
//!
//! This file holds the shared setup and helpers, and the tests of the schema and roles,
//! of how often the policy calls `launch.current_tenant()`, and of
//! `launch.tenant_status()`. The rest are grouped in modules under
//! tests/tenancy_db_cases/, compiled into this one test binary:
//! - `isolation` (isolation.rs): what a session reads and writes, by its tenant context
//!   and role;
//! - `signing_key` (signing_key.rs): the key store, signatures and key rotation;
//! - `audit_log` (audit_log.rs): audit_log partitions.

#[path = "tenancy_db_cases/audit_log.rs"]
mod audit_log;
use crate::common;
#[path = "tenancy_db_cases/isolation.rs"]
mod isolation;
#[path = "tenancy_db_cases/signing_key.rs"]
mod signing_key;

use common::PgServer;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
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
