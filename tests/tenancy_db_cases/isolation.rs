//! Row-level security as a session meets it: a correctly signed tenant reads and writes
//! only its own rows (through the same server session, tenant after tenant, as in the
//! pool); a missing, malformed or forged context, or set_config() from dynamic SQL, sees
//! and writes nothing; `app_ro` writes nothing at all. Checked against the superuser's
//! `snapshot` of the data, which only these tests use.

use super::{
    affected, connect, current_tenant, fails, prelude, scalar_i64, scalar_text, setup, sign,
    tenant_session, visible, ACTOR, KEY, SEEDED, TENANT_A, TENANT_B,
};
use crate::common::PgServer;
use tokio_postgres::error::SqlState;

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

    // What the proxy's statement guard refuses, straight to the database: set_config()
    // (the same as a function or a DO block could run; the roles may not run DO blocks).
    assert_eq!(
        fails(&app, "DO $$ BEGIN END $$").await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    app.batch_execute(&format!(
        "SELECT set_config('app.tenant_id', '{TENANT_B}', false)"
    ))
    .await
    .unwrap();
    assert_eq!(current_tenant(&app).await, None);
    assert_eq!(visible(&app).await, [0, 0, 0]);

    // Transaction-local, with a signature that is well-formed but for someone else.
    app.batch_execute(&format!(
        "BEGIN;
         SELECT set_config('app.tenant_id', '{TENANT_B}', true);
         SELECT set_config('app.tenant_sig', '{}', true);",
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
        "SELECT set_config('app.tenant_id', '{TENANT_A}', false)"
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
