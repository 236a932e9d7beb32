//! Table tests for the statement guard: statements that must be refused (with the reason
//! reported) and statements that must pass, plus the pre-filter's promise.

use super::guard::{check, needs_check, GuardViolation as V};
use super::PROTECTED_SETTINGS;

/// Inputs that must be refused, with the `what` the guard reports.
pub(super) const VIOLATIONS: &[(&str, &str)] = &[
    // SET in every spelling of the name.
    ("SET app.tenant_id = '01ARZ3NDEKTSV4RRFFQ69G5FAV'", V::SET),
    ("set app.tenant_id to 'x'", V::SET),
    ("SET APP.TENANT_ID = 'x'", V::SET),
    ("SET SESSION app.tenant_id = 'x'", V::SET),
    ("SET LOCAL app.tenant_id TO DEFAULT", V::SET),
    ("SET app.tenant_sig = 'forged'", V::SET),
    ("SET \"app\".tenant_id = 'x'", V::SET),
    ("SET app.\"tenant_id\" = 'x'", V::SET),
    ("SET \"app\".\"tenant_id\" = 'x'", V::SET),
    ("SET \"app.tenant_id\" = 'x'", V::SET),
    ("SET \"APP.Tenant_Id\" = 'x'", V::SET),
    ("SET U&\"app.tenant\\005fid\" = 'x'", V::SET),
    ("SET u&\"\\0061pp\".tenant_id = 'x'", V::SET),
    ("SET U&\"app!002etenant_id\" UESCAPE '!' = 'x'", V::SET),
    ("SET /*x*/ app . tenant_id = 'x'", V::SET),
    ("SET/**/app/**/./**/tenant_id/**/=/**/'x'", V::SET),
    ("SET -- c\n app -- c\n . -- c\n tenant_id = 'x'", V::SET),
    ("SET /* nested /* comment */ */ app.tenant_id = 'x'", V::SET),
    ("SET app.tenant_id FROM CURRENT", V::SET),
    ("SET SESSION app.tenant_sig FROM CURRENT", V::SET),
    ("sEt LoCaL aPp.TeNaNt_Id = 'x'", V::SET),
    // Multi-statement strings: the attack is not the first statement.
    ("SELECT 1; SELECT 2; SET app.tenant_id = 'x'", V::SET),
    ("SELECT 'a;b'; SELECT $$;$$; RESET app.tenant_id", V::RESET),
    (
        "BEGIN; SELECT 1; SET LOCAL app.tenant_id = 'x'; COMMIT",
        V::SET,
    ),
    // RESET and DISCARD.
    ("RESET app.tenant_id", V::RESET),
    ("reset \"app\".\"tenant_sig\"", V::RESET),
    ("RESET ALL", V::RESET_ALL),
    ("reset all", V::RESET_ALL),
    ("DISCARD ALL", V::DISCARD_ALL),
    ("discard /* c */ all", V::DISCARD_ALL),
    // set_config in every spelling, and with any first argument but a harmless literal.
    (
        "SELECT set_config('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config('APP.Tenant_Id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config('app.tenant_sig', 'x', true)",
        V::SET_CONFIG,
    ),
    (
        "SELECT pg_catalog.set_config('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT \"set_config\"('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT SET_CONFIG('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT U&\"\\0073et_config\"('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config('app.' || 'tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    ("SELECT set_config($1, $2, false)", V::SET_CONFIG),
    (
        "SELECT set_config(E'app.tenant\\x5fid', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config(U&'app.tenant\\005fid', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config($q$app.tenant_id$q$, 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config('app.'\n'tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config((select 'app.tenant_id'), 'x', false)",
        V::SET_CONFIG,
    ),
    ("SELECT set_config(name, 'x', false) FROM t", V::SET_CONFIG),
    (
        "SELECT set_config('search_path'::text, 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT set_config(setting_name => 'app.tenant_id', new_value => 'x', is_local => false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT * FROM set_config('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT /* a */ set_config /* b */ ( /* c */ 'app.tenant_id' /* d */ , 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "SELECT 1; SELECT 2; SELECT set_config('app.tenant_id', 'x', false)",
        V::SET_CONFIG,
    ),
    (
        "PREPARE p AS SELECT set_config('app.tenant_id', $1, false)",
        V::SET_CONFIG,
    ),
    ("SELECT set_config", V::SET_CONFIG),
    // ALTER ... SET / RESET, and function SET clauses.
    ("ALTER ROLE app_user SET app.tenant_id = 'x'", V::ALTER_ROLE),
    (
        "ALTER USER CURRENT_USER SET app.tenant_id TO 'x'",
        V::ALTER_ROLE,
    ),
    ("SET seed = 0.5", V::SEED),
    ("set session SEED to 0", V::SEED),
    ("RESET seed", V::SEED),
    ("SELECT set_config('seed', '0.5', false)", V::SEED),
    // Any ALTER ROLE: every tenant logs in as the same role.
    ("ALTER ROLE r SET statement_timeout = '1s'", V::ALTER_ROLE),
    ("ALTER ROLE CURRENT_USER PASSWORD 'x'", V::ALTER_ROLE),
    (
        "alter  user /* c */ app SET default_transaction_read_only = on",
        V::ALTER_ROLE,
    ),
    ("SELECT 1; ALTER GROUP g ADD USER u", V::ALTER_ROLE),
    (
        "ALTER DATABASE launch SET \"app.tenant_id\" = 'x'",
        V::ALTER_SET,
    ),
    (
        "ALTER ROLE r IN DATABASE d SET app.tenant_sig = 'x'",
        V::ALTER_ROLE,
    ),
    ("ALTER SYSTEM SET app.tenant_id = 'x'", V::ALTER_SET),
    ("ALTER ROLE app_user RESET app.tenant_id", V::ALTER_ROLE),
    ("ALTER DATABASE launch RESET ALL", V::ALTER_RESET),
    ("ALTER SYSTEM RESET ALL", V::ALTER_RESET),
    (
        "ALTER FUNCTION f() SET search_path = x SET app.tenant_id = 'y'",
        V::ALTER_SET,
    ),
    (
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET app.tenant_id = 'x' AS $$ select 1 $$",
        V::SET,
    ),
    // pg_settings updates.
    (
        "UPDATE pg_settings SET setting = 'x' WHERE name = 'app.tenant_id'",
        V::PG_SETTINGS,
    ),
    (
        "update pg_catalog.\"pg_settings\" set setting = 'x'",
        V::PG_SETTINGS,
    ),
    (
        "WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT 1",
        V::PG_SETTINGS,
    ),
    (
        "SELECT 1; SELECT 2; DELETE FROM pg_settings",
        V::PG_SETTINGS,
    ),
    (
        "INSERT INTO pg_settings (name, setting) VALUES ('app.tenant_id', 'x')",
        V::PG_SETTINGS,
    ),
    (
        "UPDATE U&\"pg_\\0073ettings\" SET setting = 'x'",
        V::PG_SETTINGS,
    ),
    (
        "CREATE TEMP VIEW v AS SELECT * FROM pg_settings",
        V::PG_SETTINGS,
    ),
    (
        "SELECT 1; SELECT 2; CREATE RULE r AS ON INSERT TO t DO ALSO SELECT * FROM pg_settings",
        V::PG_SETTINGS,
    ),
    // client_encoding: the lexer's view depends on it.
    ("SET client_encoding = 'SJIS'", V::CLIENT_ENCODING),
    ("SET NAMES 'big5'", V::CLIENT_ENCODING),
    ("SET client_encoding TO $1", V::CLIENT_ENCODING),
    (
        "SELECT set_config('client_encoding', 'GBK', false)",
        V::CLIENT_ENCODING,
    ),
    // Unterminated and invalid tokens next to set/reset/discard.
    ("SET app.tenant_id = 'x", V::SET),
    ("SELECT 1; SET x = 'unterminated", V::UNTERMINATED),
    (
        "SELECT $$ set_config('app.tenant_id', 'x', false)",
        V::UNTERMINATED,
    ),
    ("SELECT 1 /* reset all", V::UNTERMINATED),
    ("SELECT \"discard", V::UNTERMINATED),
    ("SELECT E'\\u12' ; set search_path = x", V::INVALID),
    (
        "SELECT U&\"\\0073et_config\" UESCAPE 'a'('app.tenant_id', 'x', false)",
        V::INVALID,
    ),
    // standard_conforming_strings may be off in the session: checked both ways.
    ("SELECT 'a\\' , ' ; SET app.tenant_id = 1; --'", V::SET),
    (
        "SELECT 'a\\', ' ; SELECT set_config(''app.tenant_id'', ''x'', false); --'",
        V::SET_CONFIG,
    ),
    // A continued E-string keeps backslash escapes: the SET is real.
    (
        "SELECT E'a'\n'\\' SELECT '; SET app.tenant_id = 'x'; --'",
        V::SET,
    ),
];

/// Inputs that must pass.
const ALLOWED: &[&str] = &[
    "SELECT 1",
    "SELECT current_setting('app.tenant_id')",
    "SELECT current_setting('app.tenant_id', true)::uuid",
    "SHOW app.tenant_id",
    "SHOW ALL",
    "SELECT 'SET app.tenant_id = 1'",
    "SELECT 1 -- RESET ALL",
    "SELECT 1 /* DISCARD ALL; SET app.tenant_id = 'x' */",
    "SELECT $$ set_config('app.tenant_id', 'x', false) $$",
    "SELECT $x$ RESET ALL $x$, E'SET app.tenant_id = \\'x\\''",
    "SELECT \"set app.tenant_id\" FROM t",
    "SET search_path = app, public",
    "SET search_path TO DEFAULT",
    "SET LOCAL statement_timeout = '5s'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET TIME ZONE 'UTC'",
    "SET app.other = 'x'",
    "SET app.tenant_id_old = 'x'",
    "SET tenant_id = 'x'",
    "RESET search_path",
    "RESET ROLE",
    "DISCARD PLANS",
    "DISCARD SEQUENCES",
    "DISCARD TEMP",
    "DISCARD TEMPORARY",
    "SELECT set_config('search_path', 'x', false)",
    "SELECT set_config('app.other', 'x', false)",
    "SELECT set_config('statement_timeout', $1, true)",
    "SELECT set_config(E'search\\x5fpath', 'x', false)",
    "SELECT set_config('application_name'\n'_x', 'x', false)",
    "SELECT * FROM pg_settings WHERE name = 'app.tenant_id'",
    "WITH s AS (SELECT * FROM pg_settings) SELECT * FROM s",
    "(SELECT name FROM pg_catalog.pg_settings)",
    "EXPLAIN SELECT * FROM pg_settings",
    "UPDATE t SET a = 1 WHERE id = $1",
    "UPDATE t SET tenant_id = $1 OFFSET 0",
    "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
    "ALTER TABLE t ALTER COLUMN c SET DEFAULT 0",
    "ALTER TABLE t RESET (fillfactor)",
    "ALTER DATABASE d SET statement_timeout = '1s'",
    "SELECT 'ALTER ROLE r PASSWORD x'",
    "SELECT * FROM t LIMIT 10 OFFSET 20",
    "SET client_encoding = 'UTF8'",
    "SET client_encoding TO 'utf-8'",
    "SET NAMES 'Unicode'",
    "SET NAMES",
    "RESET client_encoding",
    "SELECT set_config('client_encoding', 'UTF8', false)",
    "SELECT 'unterminated",
    "SELECT U&'\\0041'",
    "SELECT 'C:\\' AS path, 'reset all' AS note",
    "SELECT 1;;; SELECT 2;",
];

fn check_str(sql: &str) -> Result<(), V> {
    check(sql.as_bytes(), PROTECTED_SETTINGS)
}

#[test]
fn violations_are_refused_with_their_reason() {
    assert!(VIOLATIONS.len() >= 40);
    for &(sql, what) in VIOLATIONS {
        assert_eq!(check_str(sql), Err(V { what }), "{sql}");
    }
}

#[test]
fn allowed_statements_pass() {
    assert!(ALLOWED.len() >= 20);
    for sql in ALLOWED {
        assert_eq!(check_str(sql), Ok(()), "{sql}");
    }
}

#[test]
fn prefilter_sees_every_violation() {
    for &(sql, what) in VIOLATIONS {
        assert!(needs_check(sql.as_bytes()), "{sql}");
        // Nor does the relay's lexer-free pass for single DML statements let a change of a
        // setting through. (Broken literals it leaves to PostgreSQL, which refuses such a
        // statement whole: with one statement there is no boundary to disagree about.)
        if what != V::UNTERMINATED && what != V::INVALID {
            assert!(!super::shape::guard_can_skip(sql.as_bytes()), "{sql}");
            assert!(super::shape::mentions(sql.as_bytes()).guarded, "{sql}");
        }
    }
    assert!(needs_check(b"x U& y") && needs_check(b"DISCARD") && needs_check(b"sEt"));
    for sql in [
        "SELECT 1",
        "SELECT * FROM t WHERE a = 'se' || 't'",
        "DISCAR",
        "u &",
        "",
    ] {
        assert!(!needs_check(sql.as_bytes()), "{sql}");
        assert_eq!(check_str(sql), Ok(()));
    }
}

#[test]
fn protected_list_is_the_callers() {
    assert_eq!(
        check(b"SET app.other = 1", &["app.other"]),
        Err(V { what: V::SET })
    );
    assert_eq!(check(b"SET app.tenant_id = 1", &[]), Ok(()));
    assert_eq!(
        check(b"SET APP.OTHER = 1", &["App.Other"]),
        Err(V { what: V::SET })
    );
    // Names longer than the longest protected one are not assembled, just skipped.
    let long = format!("SET {} = 1", ["app"; 200].join("."));
    assert_eq!(check(long.as_bytes(), PROTECTED_SETTINGS), Ok(()));
}

#[test]
fn text_after_nul_is_ignored_like_postgres_does() {
    // Under standard_conforming_strings = off this is a clean SET; junk after the NUL must not
    // turn it into "unterminated, so PostgreSQL rejects it".
    let sql = b"SELECT 'a\\' , ' ; SET app.tenant_id = 1; --'\0'";
    assert_eq!(check(sql, PROTECTED_SETTINGS), Err(V { what: V::SET }));
    assert_eq!(check(b"SELECT 1\0; RESET ALL", PROTECTED_SETTINGS), Ok(()));
}

#[test]
fn invalid_utf8_is_checked_not_rejected() {
    assert_eq!(
        check(b"SELECT '\xff' ; SELECT 1 -- set", PROTECTED_SETTINGS),
        Ok(())
    );
    assert_eq!(
        check(
            b"SELECT '\xff\xfe'; SET app.tenant_id = '\xc3'",
            PROTECTED_SETTINGS
        ),
        Err(V { what: V::SET })
    );
}

#[test]
fn messages_name_the_setting_and_the_reason() {
    let v = check_str("SET app.tenant_id = 'x'").unwrap_err();
    assert_eq!(
        v.message(),
        "permission denied to change \"app.tenant_id\": launch-proxy sets it from your \
         authenticated identity (SET)"
    );
    assert_eq!(v.to_string(), v.message());
    let v = check_str("SET NAMES 'SJIS'").unwrap_err();
    assert!(v.message().contains("\"client_encoding\""));
}

#[test]
fn pool_resets_pass_only_when_allowed_and_are_reported() {
    use super::guard::{check_allowing_resets, Resets};
    let p = crate::tenant::PROTECTED_SETTINGS;
    let asyncpg = b"SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;";
    assert!(super::guard::check(asyncpg, p).is_err());
    assert_eq!(
        check_allowing_resets(asyncpg, p),
        Ok(Resets {
            settings: true,
            everything: false
        })
    );
    assert_eq!(
        check_allowing_resets(b"discard all", p),
        Ok(Resets {
            settings: true,
            everything: true
        })
    );
    assert!(check_allowing_resets(b"RESET ALL; SET app.tenant_id = 'x'", p).is_err());
    assert!(check_allowing_resets(b"ALTER ROLE app RESET ALL", p).is_err());
    assert!(check_allowing_resets(b"RESET app.tenant_id", p).is_err());
    assert_eq!(check_allowing_resets(b"select 1", p), Ok(Resets::default()));
}

#[test]
fn one_pass_finds_both_kinds_of_words() {
    use super::guard::{mentions, Mentions};
    let m = |s: &str| mentions(s.as_bytes());
    let both = Mentions {
        guarded: true,
        prepared: true,
    };
    let guarded = Mentions {
        guarded: true,
        prepared: false,
    };
    let prepared = Mentions {
        guarded: false,
        prepared: true,
    };
    assert_eq!(m("SELECT 1"), Mentions::default());
    assert_eq!(m("UPDATE t SET a = 1"), guarded);
    assert_eq!(m("select 1; DEALLOCATE ALL"), prepared);
    assert_eq!(m("Execute x"), prepared);
    assert_eq!(m("prepare x as select 1"), prepared);
    assert_eq!(m("DISCARD ALL; PREPARE x AS SELECT 1"), both);
}
