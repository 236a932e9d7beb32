//! The signing key: the application roles can neither read nor set it, nor read another
//! session's signature from pg_stat_activity; signatures made with the proxy's HMAC verify
//! for every key length; keys rotate (current and previous accepted, previous retired or
//! dropped at once).

use super::{
    connect, current_tenant, fails, hex, prelude, seed, setup, sign, tenant_session, unhex, KEY,
    TENANT_A, TENANT_B,
};
use crate::common::PgServer;
use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;

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
