//! Escape attempts, table-driven: every way found to set, reset or forge the tenant.

use super::*;

/// One escape attempt per line: `name | protocol[@user] | expected | SQL`. Protocol: `S`
/// simple Query, `P` named statement (tokio-postgres prepare, then execute), `U` unnamed
/// statement (query_typed); the user is `t1` unless given (`app`/`app_ro`: no tenant; `t1ro`:
/// tenant 1 on the read role). Expected: `ok` and the rows' first column (T1 as `own`),
/// exactly; otherwise a prefix of `SQLSTATE message`: `GUARD` is the proxy's refusal,
/// `NOTHING` a DO block that saw no row and no tenant, `NO_DO` a DO block refused (the
/// application roles may not use plpgsql, migrations/0006; before that, the `do_` attempts
/// ran and saw `NOTHING`). In the SQL `<T2>` is the victim tenant,
/// `<SIG>` the attacker's own signature, `<FORGED>` T2 signed under a key of the attacker's
/// choosing, `<SEEN>` makes a DO block report what it sees, `\n`/`\t` a newline/tab. From
/// `do_` on, the attempts hide in code the guard cannot see, or go past it.
const CASES: &str = r#"
set | S | GUARD | SET app.tenant_id = '<T2>'
set_session | S | GUARD | SET SESSION app.tenant_id = '<T2>'
set_local_in_tx | S | GUARD | BEGIN; SET LOCAL app.tenant_id = '<T2>'; SELECT tenant_id FROM base_entity; COMMIT
set_sig_own | S | GUARD | SET app.tenant_sig = '<SIG>'
set_both_forged | S | GUARD | SET app.tenant_id = '<T2>'; SET app.tenant_sig = '<FORGED>'
set_default | S | GUARD | SET app.tenant_id TO DEFAULT
reset_id | S | GUARD | RESET app.tenant_id
reset_sig | S | GUARD | RESET app.tenant_sig
reset_all_reapplied | S | ok | RESET ALL
discard_all_reapplied | S | ok | DISCARD ALL
set_config | S | GUARD | SELECT set_config('app.tenant_id', '<T2>', false)
set_config_qualified | S | GUARD | SELECT pg_catalog.set_config('app.tenant_id', '<T2>', false)
set_config_quoted | S | GUARD | SELECT "set_config"('app.tenant_id', '<T2>', false)
set_config_computed_name | S | GUARD | SELECT set_config('app.' || 'tenant_id', '<T2>', false)
set_config_from_pg_settings | S | GUARD | SELECT set_config(name, '<T2>', false) FROM pg_settings WHERE name LIKE 'app.%'
set_config_named_args | S | GUARD | SELECT set_config(setting_name => 'app.tenant_id', new_value => '<T2>', is_local => false)
multi_3rd_set | S | GUARD | SELECT 1; SELECT count(*) FROM base_entity; SET app.tenant_id = '<T2>'; SELECT tenant_id FROM base_entity
multi_3rd_set_config | S | GUARD | SELECT 1; SELECT 2; SELECT set_config('app.tenant_id', '<T2>', false); SELECT tenant_id FROM base_entity
multi_3rd_reset_all_fails_closed | S | ok 1 2 | SELECT 1; SELECT 2; RESET ALL; SELECT tenant_id FROM base_entity
mixed_case | S | GUARD | sEt App.TeNaNt_Id = '<T2>'
quoted_parts | S | GUARD | SET "app"."tenant_id" = '<T2>'
quoted_dotted_name | S | GUARD | SET "app.tenant_id" = '<T2>'
comments_between | S | GUARD | SET /* a */ app /* b */ . -- c\n tenant_id = '<T2>'
unicode_escape | S | GUARD | SET U&"app".U&"tenant\005fid" = '<T2>'
unicode_uescape | S | GUARD | SET U&"app".U&"tenant!005fid" UESCAPE '!' = '<T2>'
update_pg_settings | S | GUARD | UPDATE pg_settings SET setting = '<T2>' WHERE name = 'app.tenant_id'
alter_role_set | S | ROLE_GUARD | ALTER ROLE app SET app.tenant_id = '<T2>'
alter_role_read_only | S | ROLE_GUARD | ALTER ROLE CURRENT_USER SET default_transaction_read_only = on
alter_user_password | S | ROLE_GUARD | ALTER USER CURRENT_USER PASSWORD 'pwned'
alter_database_set | S | GUARD | ALTER DATABASE launch SET app.tenant_id = '<T2>'
sql_prepare_set_config | S | GUARD | PREPARE p AS SELECT set_config('app.tenant_id', $1, false)
ext_prepare_set | P | GUARD | SET app.tenant_id = '<T2>'
ext_prepare_set_config | P | GUARD | SELECT set_config('app.tenant_id', '<T2>', false)
ext_unnamed_discard_all | U | ok | DISCARD ALL
ext_unnamed_reset_all | U | ok | RESET ALL
ext_unnamed_set_local | U | GUARD | SET LOCAL app.tenant_id = '<T2>'
ext_unnamed_set_config_sig | U | GUARD | SELECT set_config('app.tenant_sig', '<FORGED>', false)
do_set_config_local | S | NO_DO | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); <SEEN> END$$
do_own_sig_replayed | S | NO_DO | DO $$DECLARE s text := current_setting('app.tenant_sig'); BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); PERFORM set_config('app.tenant_sig', s, true); <SEEN> END$$
do_forged_sig | S | NO_DO | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); PERFORM set_config('app.tenant_sig', '<FORGED>', true); <SEEN> END$$
do_session_then_next_statement | S | NO_DO | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', false); END$$; DO $$BEGIN <SEEN> END$$
do_execute_set_local | S | NO_DO | DO $$BEGIN EXECUTE 'SET LOCAL app.tenant_id = ' || quote_literal('<T2>'); <SEEN> END$$
do_execute_reset_sig | S | NO_DO | DO $$BEGIN EXECUTE 'SET LOCAL app.tenant_sig = ''''' ; <SEEN> END$$
do_alter_role_set | S | NO_DO | DO $$BEGIN EXECUTE 'ALTER ROLE app SET app.tenant_id = ''<T2>'''; END$$
do_reset_all_then_read | S | NO_DO | DO $$BEGIN EXECUTE 'RESET ALL'; <SEEN> END$$
do_insert_other | S | NO_DO | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T2>', true); INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>'); END$$
create_function | S | 42501 permission denied for schema public | CREATE FUNCTION public.f() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$SELECT set_config('app.tenant_id', '<T2>', false)$$
create_function_temp | S | 42501 | CREATE FUNCTION pg_temp.f() RETURNS text LANGUAGE sql AS $$SELECT '<T2>'$$
create_or_replace_current_tenant | S | 42501 | CREATE OR REPLACE FUNCTION launch.current_tenant() RETURNS text LANGUAGE sql AS $$SELECT '<T2>'$$
create_view | S | 42501 permission denied for schema public | CREATE VIEW v AS SELECT * FROM base_entity
create_temp_table | S | 42501 | CREATE TEMP TABLE t AS SELECT * FROM base_entity
cte_view | S | ok own own own | WITH v AS (SELECT * FROM base_entity) SELECT tenant_id FROM v
subquery_union | S | ok own own own | SELECT tenant_id FROM (SELECT * FROM base_entity UNION ALL SELECT * FROM base_entity WHERE tenant_id = '<T2>') s
join_audit | S | ok own own own | SELECT a.tenant_id FROM audit_log a LEFT JOIN base_entity b ON b.id = a.entity_id WHERE b.id IS NOT NULL OR a.tenant_id = '<T2>'
where_other | S | ok | SELECT tenant_id FROM base_entity WHERE tenant_id = '<T2>' UNION ALL SELECT tenant_id FROM audit_log WHERE tenant_id = '<T2>'
ext_prepared_select | P | ok own own own | SELECT tenant_id::text FROM base_entity
current_tenant | S | ok own | SELECT launch.current_tenant()
tenant_status_other | S | ok active | SELECT launch.tenant_status('<T2>')
check_app_roles | S | ok | SELECT problem FROM launch.check_app_roles()
read_key_table | S | 42501 permission denied for schema launch_private | SELECT * FROM launch_private.signing_keys
set_signing_key | S | 42501 permission denied for function set_signing_key | SELECT launch.set_signing_key('<KEY>')
list_prepared_statements | S | 42501 permission denied | SELECT name, statement FROM pg_prepared_statements
list_prepared_statement_fn | S | 42501 permission denied | SELECT name FROM pg_catalog.pg_prepared_statement()
sql_prepare | S | 0A000 SQL PREPARE and EXECUTE are not supported | PREPARE p AS SELECT tenant_id FROM base_entity
pg_stat_activity | S | 42501 | SELECT query FROM pg_stat_activity
set_role_owner | S | 42501 | SET ROLE launch_owner
row_security_off | S | 42501 query would be affected by row-level security | SET LOCAL row_security = off; SELECT tenant_id FROM base_entity
insert_other | S | 42501 new row violates row-level security | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T2>', '<A>', '<A>')
insert_audit_other | S | 42501 new row violates row-level security | INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, performed_by) VALUES ('<T2>', '<A>', 'x', 'x', '<A>')
move_own_rows_to_other | S | 42501 new row violates row-level security | UPDATE base_entity SET tenant_id = '<T2>'
update_other | S | ok | UPDATE base_entity SET is_active = false WHERE tenant_id = '<T2>' RETURNING tenant_id
delete_other | S | ok | DELETE FROM base_entity WHERE tenant_id <> '<T1>' RETURNING tenant_id
update_tenant_status | S | 42501 | UPDATE tenants SET status = 'suspended' WHERE id = '<T2>'
truncate | S | 42501 | TRUNCATE base_entity
disable_rls | S | 42501 | ALTER TABLE base_entity DISABLE ROW LEVEL SECURITY
setseed_for_the_next_tenant | S | 42501 permission denied for function setseed | SELECT setseed(0.42)
seed_setting_for_the_next_tenant | S | 42501 permission denied to set "seed" through launch-proxy | SET seed = 0.42
large_object_without_rls | S | 42501 permission denied for function lo_from_bytea | SELECT lo_from_bytea(0, 'shared')
large_object_read | S | 42501 permission denied for function lo_get | SELECT lo_get(1)
tenantless_app_reads | S@app | ok 0 0 0 - | SELECT (SELECT count(*) FROM base_entity) || ' ' || (SELECT count(*) FROM audit_log) || ' ' || (SELECT count(*) FROM tenants) || ' ' || coalesce(launch.current_tenant(), '-')
tenantless_app_insert | S@app | 42501 new row violates row-level security | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T1>', '<A>', '<A>')
tenantless_app_set | S@app | GUARD | SET app.tenant_id = '<T1>'
tenantless_app_do_set | S@app | NO_DO | DO $$BEGIN PERFORM set_config('app.tenant_id', '<T1>', true); <SEEN> END$$
tenantless_app_ro_reads | S@app_ro | ok 0 0 0 - | SELECT (SELECT count(*) FROM base_entity) || ' ' || (SELECT count(*) FROM audit_log) || ' ' || (SELECT count(*) FROM tenants) || ' ' || coalesce(launch.current_tenant(), '-')
tenantless_app_ro_insert | S@app_ro | 42501 permission denied for table base_entity | INSERT INTO base_entity (tenant_id, created_by, updated_by) VALUES ('<T1>', '<A>', '<A>')
read_role_tenant_reads | P@t1ro | ok own own own | SELECT tenant_id::text FROM base_entity
read_role_tenant_insert_own | S@t1ro | 42501 permission denied for table base_entity | INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>')
read_role_tenant_update | S@t1ro | 42501 permission denied for table base_entity | UPDATE base_entity SET is_active = false
read_role_tenant_delete | S@t1ro | 42501 permission denied for table base_entity | DELETE FROM base_entity
read_role_tenant_audit | S@t1ro | 42501 permission denied for table audit_log | INSERT INTO audit_log (entity_id, entity_type, action, performed_by) VALUES ('<A>', 'x', 'x', '<A>')
read_role_tenant_do_insert | S@t1ro | NO_DO | DO $$BEGIN INSERT INTO base_entity (created_by, updated_by) VALUES ('<A>', '<A>'); END$$
"#;

async fn run_case(c: &Client, via: &str, sql: &str) -> String {
    let run = async {
        match via {
            "S" => run(c, sql).await,
            "P" => match c.prepare(sql).await {
                Ok(st) => texts(c.query(&st, &[]).await),
                Err(e) => Err(show(&e)),
            },
            _ => texts(c.query_typed(sql, &[]).await),
        }
    };
    let own = |v: &String| if v == T1 { "own" } else { v }.to_owned();
    let r = tokio::time::timeout(LIMIT, run).await;
    match r.expect("attempt hangs") {
        Ok(rows) => rows.iter().fold("ok".into(), |s, v| s + " " + &own(v)),
        Err(e) => e,
    }
}

/// Every case by name, each from a fresh client: its outcome, then the attacker's and tenant
/// 2's views (exactly their own rows) and every row of every tenant (unchanged). All cases
/// run; the test fails at the end listing those that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_attempts_table() {
    let env = Env::new("").await;
    let victim = env.login("t2").await;
    let before = env.all_rows().await;
    let (forged, own_sig) = (sign(&random_hex(32), T2), sign(&env.key, T1));
    let (mut failed, mut count) = (Vec::new(), 0);
    for line in CASES.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.splitn(4, " | ").collect();
        let [name, via, want, sql] = fields[..] else {
            panic!("bad case {line:?}")
        };
        let (via, user) = via.split_once('@').unwrap_or((via, "t1"));
        let want = want
            .replace("ROLE_GUARD", ROLE_GUARD)
            .replace("GUARD", GUARD)
            .replace("NOTHING", NOTHING)
            .replace("NO_DO", NO_DO);
        let subst = [("<SEEN>", SEEN), ("<T1>", T1), ("<T2>", T2), ("<A>", ACTOR)];
        let sql = subst
            .iter()
            .fold(sql.to_owned(), |s, (k, v)| s.replace(k, v));
        let sql = sql.replace("\\n", "\n").replace("\\t", "\t");
        let sql = sql.replace("<FORGED>", &forged).replace("<SIG>", &own_sig);
        let sql = sql.replace("<KEY>", &random_hex(32));
        let attacker = env.login(user).await;
        let got = run_case(&attacker, via, &sql).await;
        let mut problems = Vec::new();
        if !(got == want || (!want.starts_with("ok") && got.starts_with(&want))) {
            problems.push(format!("outcome {got:?}, expected {want:?}"));
        }
        let own = if user.starts_with("t1") { T1 } else { "" };
        problems.extend(env.view_problems(&attacker, own, user).await);
        problems.extend(env.view_problems(&victim, T2, "t2").await);
        if env.all_rows().await != before {
            problems.push("LEAK: rows changed".into());
        }
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        println!("case {name:<34} {verdict:<5} {got}");
        if !problems.is_empty() {
            failed.push(format!("{name}: {}", problems.join("; ")));
        }
        count += 1;
    }
    let metrics = env.proxy.metrics();
    for what in [
        "SET",
        "RESET",
        "set_config",
        "pg_settings",
        "ALTER ... SET",
        "ALTER ROLE",
    ] {
        let series = format!("launch_proxy_guard_violations_total{{what=\"{what}\"}}");
        assert!(metrics.contains(&series), "metric {series} missing");
    }
    println!("{count} escape attempts, {} failed", failed.len());
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}
