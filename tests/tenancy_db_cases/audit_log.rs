//! audit_log's monthly partitions: the coming months exist, rows of a month without one go
//! to the default partition and move when it is created, and partitions named directly
//! are closed to the application roles and still filtered by their own policy. One test,
//! kept apart because partitioning is a topic of its own.

use super::{connect, fails, prelude, scalar_i64, scalar_text, setup, sign, tenant_session};
use super::{ACTOR, KEY, TENANT_A, TENANT_B};
use tokio_postgres::error::SqlState;

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
