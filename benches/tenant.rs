//! Micro-benchmarks of the per-statement tenant work: the SQL guard's byte pre-filter
//! (`tenant::guard::needs_check`) and the full check (`tenant::guard::check`) on statements
//! shaped like the seed workload, pgbench and a few hostile ones; the tenant prelude builder
//! (`tenant::prelude::prelude`, with its HMAC signature); and tenant id parsing.
//!
//!     cargo bench --bench tenant            (docs/benchmarks.md)

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use launch_proxy::tenant::{guard, prelude, TenantId, PROTECTED_SETTINGS};

/// (name, SQL, whether the guard accepts it)
const STATEMENTS: &[(&str, &str, bool)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
        true,
    ),
    (
        "seed_read",
        "SELECT id, version, is_active, updated_at FROM base_entity \
         WHERE id = '01JBENCHE00001200000000042'",
        true,
    ),
    (
        // Contains `SET` (the UPDATE's), so it is lexed in full.
        "seed_write",
        "WITH u AS (UPDATE base_entity SET version = version + 1, updated_at = now(), \
         updated_by = '01JBENCHA00000000000000012' WHERE id = '01JBENCHE00001200000000042' \
         RETURNING id, tenant_id) INSERT INTO audit_log (tenant_id, entity_id, entity_type, \
         action, changes, performed_by) SELECT tenant_id, id, 'base_entity', 'update', \
         '{\"version\": \"+1\"}', '01JBENCHA00000000000000012' FROM u RETURNING entity_id",
        true,
    ),
    (
        "set_application_name",
        "SET application_name = 'billing-worker'",
        true,
    ),
    (
        "set_config_allowed",
        "SELECT set_config('statement_timeout', '5s', true)",
        true,
    ),
    (
        "set_tenant_refused",
        "SET app.tenant_id = '01JBENCHT00000000000000099'",
        false,
    ),
    (
        "quoted_set_refused",
        "select 1; /* hi */ SeT \"app\" . \"tenant_id\" TO '01JBENCHT00000000000000099'",
        false,
    ),
    (
        "set_config_refused",
        "SELECT set_config('app.tenant_id', '01JBENCHT00000000000000099', false)",
        false,
    ),
];

/// A 4 KiB statement with strings and comments that mention SET (lexed in full, accepted).
fn long_statement() -> String {
    let mut sql = String::from("SELECT id FROM base_entity WHERE id IN (");
    let mut i = 0;
    while sql.len() < 4000 {
        sql.push_str(&format!(
            "'01JBENCHE0000120000000{i:04}' /* SET app.tenant_id */, "
        ));
        i += 1;
    }
    sql.push_str("'x') AND updated_by <> 'RESET ALL'");
    sql
}

fn bench_guard(c: &mut Criterion) {
    // Guard the benchmark itself: the inputs must mean what their names say.
    for (name, sql, ok) in STATEMENTS {
        assert_eq!(
            guard::check(sql.as_bytes(), PROTECTED_SETTINGS).is_ok(),
            *ok,
            "{name}"
        );
    }
    let long = long_statement();
    assert!(guard::check(long.as_bytes(), PROTECTED_SETTINGS).is_ok());

    let mut g = c.benchmark_group("guard_needs_check");
    for (name, sql, _) in STATEMENTS {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| guard::needs_check(black_box(sql.as_bytes())))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("guard_check");
    for (name, sql, _) in STATEMENTS {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| guard::check(black_box(sql.as_bytes()), PROTECTED_SETTINGS).is_ok())
        });
    }
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("long_4k_with_comments", |b| {
        b.iter(|| guard::check(black_box(long.as_bytes()), PROTECTED_SETTINGS).is_ok())
    });
    g.finish();
}

fn bench_prelude(c: &mut Criterion) {
    let tenant = TenantId::parse("01JBENCHT00000000000000012").expect("valid ULID");
    let key = [0x5au8; 32];
    let mut g = c.benchmark_group("prelude");
    g.bench_function("signed", |b| {
        b.iter(|| prelude::prelude(Some(black_box(&tenant)), Some(black_box(&key))))
    });
    // The lexing pass that decides whether a client's Query can carry the switch: runs on
    // the first Query after every tenant switch, besides the guard's own pass.
    for (name, sql, _) in &STATEMENTS[..3] {
        g.bench_with_input(BenchmarkId::new("can_carry", name), sql, |b, sql| {
            b.iter(|| prelude::can_carry(black_box(sql.as_bytes())))
        });
    }
    g.bench_function("no_tenant", |b| {
        b.iter(|| prelude::prelude(None, Some(black_box(&key))))
    });
    g.bench_function("signature_only", |b| {
        b.iter(|| prelude::signature(black_box(&key), black_box(&tenant)))
    });
    g.finish();
}

fn bench_tenant_id(c: &mut Criterion) {
    c.bench_function("tenant_id_parse", |b| {
        b.iter(|| TenantId::parse(black_box("01JBENCHT00000000000000012")).is_ok())
    });
}

criterion_group!(benches, bench_guard, bench_prelude, bench_tenant_id);
criterion_main!(benches);
