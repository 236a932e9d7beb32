//! What the relay can tell about a Query's SQL without the lexer, for the common case of one
//! plain DML statement: whether the tenant switch can be carried in front of it and whether
//! the statement guard has anything to look at in it. Anything doubtful answers "ask the
//! lexer" (the callers fall back to [`super::lexer`]), never "safe".

/// Statements that may share an implicit transaction with the tenant switch: plain DML, no
/// transaction control, nothing that refuses to run in a transaction block.
pub(super) const DML_WORDS: [&[u8]; 7] = [
    b"select", b"insert", b"update", b"delete", b"with", b"values", b"table",
];

/// Statements that leave no cursor or prepared statement on the session, beyond plain DML:
/// transaction control and settings. See [`leaves_no_objects`].
const NO_OBJECT_WORDS: [&[u8]; 18] = [
    b"select",
    b"insert",
    b"update",
    b"delete",
    b"with",
    b"values",
    b"table",
    b"begin",
    b"start",
    b"commit",
    b"end",
    b"rollback",
    b"abort",
    b"savepoint",
    b"release",
    b"set",
    b"reset",
    b"show",
];

/// How many statements `sql` holds if each starts with one of `words` (told by the lexer),
/// `None` if one does not, or if the lexer finds anything doubtful (invalid tokens,
/// backslashes in plain strings, whose meaning depends on a setting).
pub fn statements_starting_with(sql: &[u8], words: &[&[u8]]) -> Option<usize> {
    use super::lexer::{Lexer, TokenKind};
    let mut lexer = Lexer::new(sql);
    let mut at_start = true;
    let mut statements = 0;
    for tok in lexer.by_ref() {
        if tok.kind.is_trivia() {
            continue;
        }
        if tok.kind == TokenKind::Invalid {
            return None;
        }
        if at_start {
            let known = tok.kind == TokenKind::Ident
                && words.iter().any(|w| tok.text.eq_ignore_ascii_case(w));
            if !known {
                return None;
            }
            at_start = false;
            statements += 1;
        } else if tok.is_punct(b";") {
            at_start = true;
        }
    }
    (!lexer.saw_backslash_in_plain_string()).then_some(statements)
}

/// Whether running `sql` can leave a cursor or an SQL-level prepared statement on the
/// session (`false`), which the next tenant switch must then drop (`tenant::prelude`'s
/// `DROP_OBJECTS`). Only statements can: DECLARE, PREPARE, or a DO block or procedure
/// whose dynamic SQL prepares one; SPI refuses DECLARE, so no function opens a holdable
/// cursor, and functions the application roles may call are the DBA's, which are trusted
/// not to PREPARE (docs/tenancy.md). `single_dml` is [`single_dml`]'s answer, if the caller
/// has it.
pub fn leaves_no_objects(sql: &[u8], single_dml: Option<bool>) -> bool {
    single_dml == Some(true) || statements_starting_with(sql, &NO_OBJECT_WORDS).is_some()
}

/// Whether `sql` is a single statement starting with one of [`DML_WORDS`], told without
/// the lexer: with no `;` but one at the end, PostgreSQL sees one statement whatever the
/// quoting inside it (a broken one is a syntax error of the whole Query, in which nothing
/// runs), so its first word decides, unless a comment comes first. `None`: the lexer must
/// decide.
pub fn single_dml(sql: &[u8]) -> Option<bool> {
    let body = single_statement(sql)?;
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &body[start..];
    if rest.starts_with(b"/*") || rest.starts_with(b"--") {
        return None;
    }
    // PostgreSQL's identifier characters, bytes of multibyte characters included.
    let word_len = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80))
        .unwrap_or(rest.len());
    let word = &rest[..word_len];
    Some(DML_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w)))
}

/// `sql` up to its trailing `;`, if no other `;` is in it: then PostgreSQL sees one statement
/// whatever the quoting inside (`None`: a `;` with more after it, which only the lexer can
/// place inside or outside a literal).
pub fn single_statement(sql: &[u8]) -> Option<&[u8]> {
    match memchr::memchr(b';', sql) {
        None => Some(sql),
        Some(i) if sql[i + 1..].iter().all(u8::is_ascii_whitespace) => Some(&sql[..i]),
        Some(_) => None,
    }
}

/// The relay's pre-filter of a Query or Parse: [`super::guard::mentions`], answered without
/// its pass for one plain DML statement, which is neither a SET nor an SQL-level
/// PREPARE/EXECUTE/DEALLOCATE, so that only a setting function it calls needs the guard.
pub fn mentions(sql: &[u8]) -> super::guard::Mentions {
    inspect(sql).0
}

/// [`mentions`], and [`single_dml`]'s answer it is based on.
pub fn inspect(sql: &[u8]) -> (super::guard::Mentions, Option<bool>) {
    inspect_given(sql, single_dml(sql))
}

/// [`inspect`] for a caller that has [`single_dml`]'s answer (`dml`) already.
pub fn inspect_given(sql: &[u8], dml: Option<bool>) -> (super::guard::Mentions, Option<bool>) {
    let mentions = if dml == Some(true) {
        super::guard::Mentions {
            guarded: names_setting_function(sql),
            prepared: false,
        }
    } else {
        super::guard::mentions(sql)
    };
    (mentions, dml)
}

/// Whether the statement guard can pass `sql` without lexing it: one DML statement (so no
/// SET, RESET or DISCARD command can be in it; an `UPDATE ... SET` clause is what made the
/// byte pre-filter look) that names neither `set_config` nor `pg_settings` (whose UPDATE
/// calls it) and has no Unicode-escaped identifier (`U&"..."`, which could spell either).
/// Those are the only ways a single DML statement could change a setting (see
/// [`super::guard`]); anything else is left to the lexer. The tests hold [`mentions`] to it.
#[cfg(test)]
pub fn guard_can_skip(sql: &[u8]) -> bool {
    single_dml(sql) == Some(true) && !names_setting_function(sql)
}

/// Whether `sql` contains `set_config`, `pg_settings` or `u&`, in any case. Both names have
/// an underscore and the escape an ampersand, and typical SQL has few of either, so the
/// search jumps between them (memchr2) instead of testing every byte.
pub fn names_setting_function(sql: &[u8]) -> bool {
    let around = |at: usize, before: &[u8], after: &[u8]| {
        at >= before.len()
            && sql[at - before.len()..at].eq_ignore_ascii_case(before)
            && sql
                .get(at + 1..at + 1 + after.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(after))
    };
    memchr::memchr2_iter(b'_', b'&', sql).any(|at| {
        if sql[at] == b'&' {
            return at > 0 && sql[at - 1] | 0x20 == b'u';
        }
        // Most underscores join ordinary words (tenant_id, updated_at): one byte tells.
        match sql.get(at + 1).map(|b| b | 0x20) {
            Some(b'c') => around(at, b"set", b"config"),
            Some(b's') => around(at, b"pg", b"settings"),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_statements_that_can_make_cursors_or_prepared_statements_leave_objects() {
        let clean = |sql: &str| leaves_no_objects(sql.as_bytes(), single_dml(sql.as_bytes()));
        for sql in [
            "",
            "SELECT 1",
            "update t set a = 1;",
            "BEGIN; SELECT 1; COMMIT",
            "start transaction isolation level serializable",
            "SAVEPOINT a; RELEASE SAVEPOINT a; ROLLBACK TO a; END; ABORT",
            "SET search_path = app; RESET ALL; SHOW work_mem",
            "SELECT 'DECLARE c CURSOR WITH HOLD FOR SELECT 1'; SELECT 2",
            "/* PREPARE p AS */ SELECT 1",
        ] {
            assert!(clean(sql), "{sql}");
        }
        for sql in [
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "BEGIN; declare c cursor for select 1; COMMIT",
            "SELECT 1; PREPARE p AS SELECT 1",
            "DO $$BEGIN EXECUTE 'PREPARE p AS SELECT 1'; END$$",
            "CALL p()",
            "EXECUTE p",
            "LISTEN x",
            "COPY t FROM STDIN",
            "EXPLAIN ANALYZE SELECT 1",
            "SELECT 'a\\'; DECLARE c CURSOR WITH HOLD FOR SELECT 1; SELECT '",
            "\"select\" 1; DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        ] {
            assert!(!clean(sql), "{sql}");
        }
    }

    #[test]
    fn guard_skips_only_single_dml_without_set_config() {
        for sql in [
            "UPDATE base_entity SET version = version + 1 WHERE id = 'x'",
            "WITH u AS (UPDATE t SET a = 1 RETURNING id) INSERT INTO log SELECT id FROM u;",
            "update t set a = 'set app.tenant_id = 1'",
        ] {
            assert!(guard_can_skip(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SET app.tenant_id = 'x'",
            "UPDATE t SET a = 1; SET app.tenant_id = 'x'",
            "SELECT set_config('app.tenant_id', 'x', false)",
            "SELECT pg_catalog.SET_CONFIG('app.tenant_id', 'x', false)",
            "UPDATE t SET a = (SELECT \"set_config\"('app.tenant_id', 'x', false))",
            "SELECT U&\"\\0073et_config\"('app.tenant_id', 'x', false)",
            "SELECT u&'x'",
            "/* c */ UPDATE t SET a = 1",
            "RESET app.tenant_id",
            "DISCARD ALL",
            "DO $$BEGIN PERFORM 1; END$$",
            "UPDATE pg_settings SET setting = 'x' WHERE name = 'app.tenant_id'",
            "UPDATE pg_catalog.PG_SETTINGS SET setting = 'x'",
            "SELECT x FROM t WHERE u&\"a\" = 1",
            "SELECT SeT_CoNfIg('app.tenant_id', 'x', false)",
            "SELECT set_config",
            "SELECT 1 FROM pg_settings",
        ] {
            assert!(!guard_can_skip(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn setting_functions_are_found_in_any_case_and_place() {
        for sql in [
            "set_config",
            "x set_config(",
            "SELECT pg_catalog.SET_CONFIG('a', 'b', true)",
            "pg_settings",
            "UPDATE Pg_Settings SET x = 1",
            "U&\"x\"",
            "SELECT u&'\\0041'",
            "SELECT a_b, c_d, set_config('x', 'y', false)",
        ] {
            assert!(names_setting_function(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "",
            "_",
            "&",
            "set_confi",
            "_config",
            "pg_setting",
            "SELECT a & b, tenant_id, updated_at FROM base_entity",
            "SELECT 'set' || '_config'",
        ] {
            assert!(!names_setting_function(sql.as_bytes()), "{sql}");
        }
    }
}
