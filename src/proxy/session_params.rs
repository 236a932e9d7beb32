//! Session parameters in transaction mode: what a client set for its session is re-applied
//! on whichever server connection its next transaction lands on, and what it left on a
//! server connection is undone before another client runs there.
//!
//! A client's desired values come from its startup packet (`options=-c name=value`, and the
//! reported parameters it asked for, such as DateStyle or TimeZone), from ParameterStatus
//! messages the server sends while the client runs (a `SET` of a reported parameter), and
//! from session-level `SET name TO value` statements the lexer sees (parameters PostgreSQL
//! does not report, such as search_path or statement_timeout). Each server connection
//! remembers which parameters differ from its startup values; the difference is put right
//! in the tenant prelude, so it costs no round trip, and nothing at all when it is empty.

use crate::tenant::lexer::Lexer;
use crate::tenant::token::TokenKind;

/// Name → value as SQL to put after `SET name TO` (a quoted literal or the client's own
/// value text), lower-case names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSet {
    values: Vec<(String, String)>,
}

/// Session parameters followed per client (and per server connection). Lookups are linear
/// and [`ParamSet::apply_to`] compares two sets, so without a bound one client's Query of
/// 60,000 `SET`s cost the proxy's thread seconds (quadratic), stalling every client
/// (red team). Applications set a handful; settings beyond this many are not followed:
/// they stay on the server connection where they ran, which then gets `RESET ALL` before
/// another client's transaction, and do not travel with the client.
pub const MAX_FOLLOWED: usize = 64;

/// Parameters a client may not carry around: the proxy owns them (the tenant settings,
/// the encoding it speaks to servers, the per-role timeouts are set per pool) or they are
/// not settable per session.
fn untracked(name: &str) -> bool {
    matches!(
        name,
        "session_authorization"
            | "role"
            | "is_superuser"
            | "server_version"
            | "server_encoding"
            | "integer_datetimes"
            | "in_hot_standby"
            | "default_transaction_read_only"
            | "scram_iterations"
            | "transaction_isolation"
            | "transaction_read_only"
            | "transaction_deferrable"
    ) || name.starts_with("app.")
        || name.starts_with("_pq_")
}

/// Whether the proxy applies a client's value of `name` on the servers its transactions
/// run on (so that ParameterStatus may report the client's value).
pub fn follows(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !untracked(&name) && is_parameter_name(&name)
}

/// Whether `name` (lowercase) can name a run-time parameter: identifiers of ASCII letters,
/// digits, `_` and `$` (not starting with a digit or `$`), joined by dots, as PostgreSQL's
/// own and extensions' parameters are. [`ParamSet::apply_to`] writes names into SQL as they
/// are, so a name from a startup packet (any bytes but NUL) must be one of these: one that
/// carried `;` or a comment would run SQL on the server the next client gets.
fn is_parameter_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            part.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$')
        })
}

fn encoding_key(name: &str) -> String {
    // As PostgreSQL's clean_encoding_name: only letters and digits count.
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether an encoding name means UTF8 ('UTF8', 'utf-8', 'unicode', asyncpg's quoted form).
pub fn is_utf8(name: &str) -> bool {
    matches!(encoding_key(name).as_str(), "utf8" | "unicode")
}

/// Whether a client encoding keeps every ASCII byte an ASCII character; SJIS, BIG5, GBK,
/// UHC, GB18030 and JOHAB do not (their trailing bytes include `'` and `\`).
pub fn client_encoding_is_safe(name: &str) -> bool {
    !matches!(
        encoding_key(name).as_str(),
        "sjis"
            | "shiftjis"
            | "mskanji"
            | "big5"
            | "gbk"
            | "uhc"
            | "gb18030"
            | "johab"
            | "cp932"
            | "cp936"
            | "cp949"
            | "cp950"
            | "win932"
            | "win936"
            | "win949"
            | "win950"
            | "windows932"
            | "windows936"
            | "windows949"
            | "windows950"
    )
}

/// A string as an escape-string literal (`E'...'`, backslashes and quotes doubled), which
/// PostgreSQL reads the same whatever `standard_conforming_strings` is. A plain `'...'`
/// would not be: on a connection a client left with it off, a value ending in a backslash
/// would not end its literal, and the next value's text would run as SQL.
pub fn literal(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 3);
    s.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => s.push_str("''"),
            '\\' => s.push_str("\\\\"),
            '\0' => {}
            c => s.push(c),
        }
    }
    s.push('\'');
    s
}

/// The value of a client's `SET` (its tokens from the first after `TO`/`=`) written anew:
/// names as quoted identifiers, text as [`literal`]s, numbers, signs and commas as they
/// are. Never the client's own text: it was lexed under the client's settings, and the
/// server this goes to may lex it otherwise. `None` for a value it cannot write safely (a
/// plain string with a backslash, whose meaning depends on `standard_conforming_strings`
/// when the client sent it, or any other token): such a SET is not followed.
fn canonical_value(toks: &[(TokenKind, std::ops::Range<usize>, Vec<u8>)]) -> Option<String> {
    let mut out = String::new();
    for (i, (kind, _, text)) in toks.iter().enumerate() {
        let text = std::str::from_utf8(text).ok()?;
        // A sign only in front of a number that starts an element.
        let sign_here = (i == 0 || toks[i - 1].2 == b",")
            && toks.get(i + 1).is_some_and(|t| t.0 == TokenKind::Number);
        if !out.is_empty() && !text.starts_with(',') && !out.ends_with(['-', '+']) {
            out.push(' ');
        }
        match kind {
            // Letters (any, PostgreSQL takes non-ASCII ones), digits, `_` and `$`: nothing
            // that quotes, escapes or ends a statement.
            TokenKind::Ident => {
                if !text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80)
                {
                    return None;
                }
                out.push_str(text);
            }
            TokenKind::QuotedIdent | TokenKind::UnicodeIdent => {
                out.push('"');
                out.push_str(&text.replace('"', "\"\""));
                out.push('"');
            }
            TokenKind::String if text.contains('\\') => return None,
            TokenKind::String
            | TokenKind::EscapeString
            | TokenKind::UnicodeString
            | TokenKind::DollarString => out.push_str(&literal(text)),
            TokenKind::Number
                if text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-')) =>
            {
                out.push_str(text)
            }
            TokenKind::Punct if text == "," => out.push(','),
            TokenKind::Operator if sign_here && (text == "-" || text == "+") => out.push_str(text),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

impl ParamSet {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Records `name` (any case) = `sql_value`; ignores parameters the proxy owns, names
    /// that are not a parameter's (see [`is_parameter_name`]), and a new name beyond
    /// [`MAX_FOLLOWED`]. `false`: ignored (the caller then treats the setting as one the
    /// proxy does not follow).
    pub fn set(&mut self, name: &str, sql_value: String) -> bool {
        let name = name.to_ascii_lowercase();
        if untracked(&name) || !is_parameter_name(&name) {
            return false;
        }
        let full = self.values.len() >= MAX_FOLLOWED;
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = sql_value,
            None if full => return false,
            None => self.values.push((name, sql_value)),
        }
        true
    }

    pub fn remove(&mut self, name: &str) {
        // Stored names are lowercase, so this allocates nothing.
        if !self.values.is_empty() {
            self.values.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
    }

    /// The statements that turn a server whose non-startup values are `server` into one
    /// with `self`, appended to `sql`; afterwards `server` equals `self`.
    pub fn apply_to(&self, server: &mut ParamSet, sql: &mut String) {
        if self == server {
            return;
        }
        // What the previous client set and this one does not goes back to the session's
        // start value, for the parameters the server knows: a name it does not (a client's
        // startup parameter that failed its own SET) must not fail the next client's
        // transaction, as `RESET` of it would.
        let mut resets = server
            .values
            .iter()
            .filter(|(name, _)| self.get(name).is_none())
            .peekable();
        if resets.peek().is_some() {
            sql.push_str(
                "SELECT set_config(name, reset_val, false) FROM pg_settings WHERE name IN (",
            );
            for (i, (name, _)) in resets.enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&literal(name));
            }
            sql.push_str("); ");
        }
        for (name, value) in &self.values {
            if server.get(name) != Some(value.as_str()) {
                sql.push_str("SET ");
                sql.push_str(name);
                sql.push_str(" TO ");
                sql.push_str(value);
                sql.push_str("; ");
            }
        }
        *server = self.clone();
    }

    /// Desired values from a startup packet: `options` (`-c name=value`, `--name=value`)
    /// and the reported parameters a client may ask for directly.
    pub fn from_startup<'a>(
        params: impl Iterator<Item = (&'a str, &'a str)>,
        defaults: &[(String, String)],
    ) -> ParamSet {
        let mut set = ParamSet::default();
        for (k, v) in params {
            match k {
                "user" | "database" | "replication" | "application_name" => {}
                "client_encoding" if is_utf8(v) => {}
                "options" => {
                    for (name, value) in parse_options(v) {
                        set.set(&name, literal(&value));
                    }
                }
                _ => {
                    // A value the server already has needs nothing.
                    let same = defaults
                        .iter()
                        .any(|(n, d)| n.eq_ignore_ascii_case(k) && same_value(d, v));
                    if !same {
                        set.set(k, literal(v));
                    }
                }
            }
        }
        set
    }

    /// Notes a session-level `SET`/`RESET` in a statement the client sent. Only plain
    /// forms are followed (`SET [SESSION] name {TO | =} value`, `RESET name`); `SET LOCAL`
    /// ends with the transaction, and reported parameters arrive as ParameterStatus anyway.
    /// `true`: a statement changed a session setting this does not follow (a parameter the
    /// proxy owns, `SET SESSION CHARACTERISTICS`, a value it cannot write again), which only
    /// RESET ALL undoes.
    pub fn observe_sql(&mut self, sql: &[u8]) -> bool {
        if !may_set(sql) {
            return false;
        }
        let mut unfollowed = false;
        let mut statement: Vec<(TokenKind, std::ops::Range<usize>, Vec<u8>)> = Vec::new();
        // Only SET and RESET statements are kept token by token; the others (a client's
        // own query after its SETs) are skipped to their `;` without copying a token.
        let mut other = false;
        for tok in Lexer::new(sql) {
            if tok.kind.is_trivia() {
                continue;
            }
            if tok.is_punct(b";") {
                unfollowed |= self.observe_statement(&statement);
                statement.clear();
                other = false;
                continue;
            }
            if other {
                continue;
            }
            if statement.is_empty() && !(tok.is_word(b"set") || tok.is_word(b"reset")) {
                // With no `;` after it (but a trailing one), no statement follows this one:
                // nothing more to observe, and the rest need not be lexed.
                if crate::tenant::shape::single_statement(&sql[tok.span.start..]).is_some() {
                    break;
                }
                other = true;
                continue;
            }
            if statement.len() < 64 {
                statement.push((tok.kind, tok.span.clone(), tok.folded().into_owned()));
            }
        }
        unfollowed | self.observe_statement(&statement)
    }

    /// Records a value the client set, or forgets the parameter if the value cannot be
    /// written safely (see [`canonical_value`]; `true`: the RESET ALL of a switch then
    /// undoes it).
    fn follow(&mut self, name: &str, value: Option<String>) -> bool {
        match value {
            Some(v) => !self.set(name, v),
            None => {
                self.remove(name);
                true
            }
        }
    }

    fn observe_statement(&mut self, toks: &[(TokenKind, std::ops::Range<usize>, Vec<u8>)]) -> bool {
        let word = |i: usize, w: &[u8]| {
            toks.get(i)
                .is_some_and(|t| t.0 == TokenKind::Ident && t.2 == w)
        };
        let mut i = 0;
        if word(0, b"reset") {
            if let Some(name) = param_name(toks, 1).map(|(n, _)| n) {
                if name != "all" {
                    self.remove(&name);
                }
            }
            return false;
        }
        if !word(0, b"set") {
            return false;
        }
        i += 1;
        if word(i, b"local") {
            return false;
        }
        if word(i, b"session") {
            i += 1;
            if word(i, b"authorization") || word(i, b"characteristics") {
                return true;
            }
        }
        if word(i, b"time") && word(i + 1, b"zone") {
            let value = &toks[(i + 2).min(toks.len())..];
            if value.len() == 1 && (word(i + 2, b"local") || word(i + 2, b"default")) {
                self.remove("timezone");
                return false;
            }
            return self.follow("timezone", canonical_value(value));
        }
        let Some((name, next)) = param_name(toks, i) else {
            return false;
        };
        let is_to = toks.get(next).is_some_and(|t| {
            (t.0 == TokenKind::Ident && t.2 == b"to") || (t.0 == TokenKind::Operator && t.2 == b"=")
        });
        if !is_to || toks.len() <= next + 1 {
            return false;
        }
        if toks.len() == next + 2 && word(next + 1, b"default") {
            self.remove(&name);
            return false;
        }
        self.follow(&name, canonical_value(&toks[next + 1..]))
    }
}

/// Cheap pre-check on the hot path: only a text that starts with SET/RESET (after blanks),
/// or that holds several statements or a comment, is worth lexing. `UPDATE t SET ...`, the
/// common case that contains "set", is skipped without a second lexing pass.
fn may_set(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let head = &sql[start..];
    let starts = |w: &[u8]| head.len() > w.len() && head[..w.len()].eq_ignore_ascii_case(w);
    starts(b"set")
        || starts(b"reset")
        || head.starts_with(b"--")
        || head.starts_with(b"/*")
        || sql.contains(&b';')
}

/// A dotted parameter name starting at token `i`, and the index after it.
fn param_name(
    toks: &[(TokenKind, std::ops::Range<usize>, Vec<u8>)],
    mut i: usize,
) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let t = toks.get(i)?;
        if !matches!(t.0, TokenKind::Ident | TokenKind::QuotedIdent) {
            return None;
        }
        name.push_str(&String::from_utf8_lossy(&t.2));
        i += 1;
        if toks
            .get(i)
            .is_some_and(|t| t.0 == TokenKind::Punct && t.2 == b".")
        {
            name.push('.');
            i += 1;
        } else {
            return Some((name, i));
        }
    }
}

/// Whether a server's reported value already satisfies what a client asked for: equal
/// ignoring case, or, for DateStyle, the same leading style ("ISO" is "ISO, MDY").
fn same_value(server: &str, client: &str) -> bool {
    server.eq_ignore_ascii_case(client)
        || server
            .split(',')
            .next()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(client.trim()))
}

/// `-c name=value` and `--name=value` pairs of a startup `options` string (backslash
/// escapes a space, as libpq does).
pub(super) fn parse_options(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in options.chars() {
        match (escaped, c) {
            (true, c) => {
                cur.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (false, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((k, v)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            out.push((k.replace('-', "_"), v.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parameter_names_are_recorded() {
        for name in [
            "work_mem",
            "DateStyle",
            "search_path",
            "myext.some_setting",
            "a$b",
            "_x",
        ] {
            assert!(is_parameter_name(&name.to_ascii_lowercase()), "{name}");
        }
        for name in [
            "",
            "work_mem; DROP TABLE t; --",
            "work_mem--",
            "a b",
            "a.",
            ".a",
            "1abc",
            "$a",
            "x/*",
            "é",
            "search_path\nSELECT 1",
        ] {
            assert!(!is_parameter_name(name), "{name}");
        }
        let mut set = ParamSet::default();
        set.set("work_mem; SELECT 1; --", "'1'".into());
        set.set("Work_Mem", "'2MB'".into());
        let mut sql = String::new();
        set.apply_to(&mut ParamSet::default(), &mut sql);
        assert_eq!(sql, "SET work_mem TO '2MB'; ");
    }

    #[test]
    fn options_and_startup_parameters() {
        let defaults = vec![("DateStyle".to_owned(), "ISO, MDY".to_owned())];
        let p = ParamSet::from_startup(
            [
                ("user", "u"),
                (
                    "options",
                    "-c search_path=s1,public --statement-timeout=5s -c app.tenant_id=x",
                ),
                ("DateStyle", "ISO"),
                ("TimeZone", "Europe/Paris"),
            ]
            .into_iter(),
            &defaults,
        );
        assert_eq!(p.get("search_path"), Some("E's1,public'"));
        assert_eq!(p.get("statement_timeout"), Some("E'5s'"));
        assert_eq!(p.get("app.tenant_id"), None, "the proxy owns the tenant");
        assert_eq!(p.get("datestyle"), None, "ISO is what the server has");
        assert_eq!(p.get("timezone"), Some("E'Europe/Paris'"));
    }

    #[test]
    fn observes_session_sets_only() {
        let mut p = ParamSet::default();
        p.observe_sql(b"SET search_path TO a, b; set LOCAL work_mem = '1MB'; SET SESSION lock_timeout = 5; SET TIME ZONE 'UTC'");
        assert_eq!(p.get("search_path"), Some("a, b"));
        assert_eq!(p.get("work_mem"), None);
        assert_eq!(p.get("lock_timeout"), Some("5"));
        assert_eq!(p.get("timezone"), Some("E'UTC'"));
        p.observe_sql(b"RESET search_path; SET lock_timeout TO DEFAULT");
        assert_eq!(p.get("search_path"), None);
        assert_eq!(p.get("lock_timeout"), None);
    }

    #[test]
    fn sets_around_other_statements_are_observed() {
        let mut p = ParamSet::default();
        p.observe_sql(b"WITH u AS (UPDATE t SET search_path = 1 RETURNING id) SELECT 1; SET search_path TO x; SELECT 'SET work_mem = 1'; /* c */ Set lock_timeout = 7");
        assert_eq!(p.get("search_path"), Some("x"));
        assert_eq!(p.get("work_mem"), None);
        assert_eq!(p.get("lock_timeout"), Some("7"));
        p.observe_sql(b"UPDATE t SET a = 1; RESET lock_timeout");
        assert_eq!(p.get("lock_timeout"), None);
        // The last statement (no `;` after it but a trailing one) is not lexed.
        p.observe_sql(b"SET search_path TO y; SELECT 'a;b' ; ");
        assert_eq!(p.get("search_path"), Some("y"));
        p.observe_sql(b"SELECT 1 ;  \n");
        assert_eq!(p.get("search_path"), Some("y"));
    }

    #[test]
    fn apply_makes_the_difference_only() {
        let mut client = ParamSet::default();
        client.set("search_path", "a".into());
        let mut server = ParamSet::default();
        server.set("work_mem", "'1MB'".into());
        let mut sql = String::new();
        client.apply_to(&mut server, &mut sql);
        assert_eq!(
            sql,
            "SELECT set_config(name, reset_val, false) FROM pg_settings WHERE name IN (E'work_mem'); SET search_path TO a; "
        );
        assert_eq!(server, client);
        sql.clear();
        client.apply_to(&mut server, &mut sql);
        assert!(sql.is_empty());
    }

    #[test]
    fn skips_statements_that_cannot_set() {
        assert!(!may_set(b"UPDATE t SET a = 1 WHERE id = $1"));
        assert!(may_set(b"  set search_path = a"));
        assert!(may_set(b"select 1; set work_mem = '1MB'"));
        assert!(may_set(b"/* x */ SET a = 1"));
    }

    #[test]
    fn encodings() {
        assert!(is_utf8("'utf-8'") && is_utf8("UTF8") && is_utf8("unicode"));
        assert!(client_encoding_is_safe("SQL_ASCII") && client_encoding_is_safe("LATIN1"));
        assert!(!client_encoding_is_safe("SJIS") && !client_encoding_is_safe("gb-18030"));
        let p = ParamSet::from_startup([("client_encoding", "'utf-8'")].into_iter(), &[]);
        assert!(p.is_empty());
        let p = ParamSet::from_startup([("client_encoding", "SQL_ASCII")].into_iter(), &[]);
        assert_eq!(p.get("client_encoding"), Some("E'SQL_ASCII'"));
    }

    #[test]
    fn literals_are_quoted() {
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\"), r"E'a\\'", "a backslash ends no literal");
        assert_eq!(literal("a\0b"), "E'ab'");
    }

    /// A client's SET value is written anew, token by token, never as the client's text:
    /// a value lexed under the client's standard_conforming_strings may read otherwise on
    /// the server the proxy applies it to.
    #[test]
    fn set_values_are_written_anew() {
        let mut p = ParamSet::default();
        p.observe_sql(br#"SET search_path TO "My Schema", public, $$x$$; SET work_mem = -1; SET lock_timeout = E'1s\\'''"#);
        assert_eq!(p.get("search_path"), Some(r#""My Schema", public, E'x'"#));
        assert_eq!(p.get("work_mem"), Some("-1"));
        assert_eq!(p.get("lock_timeout"), Some(r"E'1s\\'''"));
        p.observe_sql(br"SET TIME ZONE 'Europe/Paris'; SET foo.a = 'x\'");
        assert_eq!(p.get("timezone"), Some("E'Europe/Paris'"));
        assert_eq!(
            p.get("foo.a"),
            None,
            "a backslash in a plain string: not followed"
        );
        p.observe_sql(br"SET lock_timeout = '2s'; SET lock_timeout = 'x\'");
        assert_eq!(
            p.get("lock_timeout"),
            None,
            "forgotten: the switch resets it"
        );
        p.observe_sql(b"SET work_mem = 1 + 2");
        assert_eq!(p.get("work_mem"), None, "not a value a SET takes");
    }
}
