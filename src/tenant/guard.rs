//! The statement guard: refuses SQL text that would change or clear a protected setting
//! (`app.tenant_id`, `app.tenant_sig`), checked on every Query and Parse message.
//!
//! It lexes with [`super::lexer`] and looks at tokens, not text, so strings and comments that
//! merely mention `SET` pass while every spelling PostgreSQL accepts for the same statement is
//! caught. What counts as a violation, anywhere in a (multi-statement) string:
//! - `SET [SESSION|LOCAL] <protected> …` in any spelling (case, quoting, `U&` escapes, comments
//!   and whitespace between the name's parts), including the `SET` clauses of `ALTER ROLE`,
//!   `ALTER DATABASE`, `ALTER SYSTEM` and function definitions;
//! - `RESET <protected>`, `RESET ALL` (also in `ALTER … RESET`), `DISCARD ALL`;
//! - `SET seed`, `RESET seed`, `set_config('seed', …)`: the random generator of a server
//!   connection is shared by the tenants that use it in turn (`setseed` itself is revoked
//!   by migrations/0006);
//! - `ALTER ROLE`, `ALTER USER` and `ALTER GROUP`: every tenant's server connections log in
//!   as the same role, so its settings (`ALTER ROLE CURRENT_USER SET …`) and its password
//!   are every tenant's;
//! - any reference to `set_config` unless it is a call whose first argument is one string
//!   literal naming an unprotected setting;
//! - a statement naming `pg_settings` that is not a plain read (`SELECT`, `TABLE`, `VALUES`,
//!   `WITH`, `SHOW`, `EXPLAIN` without `UPDATE`/`INSERT`/`DELETE`/`MERGE`): updating that view
//!   calls `set_config`, and so does updating a view created over it;
//! - a change of `client_encoding` (`SET client_encoding`, `SET NAMES`, `set_config`) to
//!   anything but UTF8: with a client encoding such as SJIS a multi-byte character can swallow
//!   the backslash of `\'`, and the server would then see statements this lexer took for
//!   string contents;
//! - an unterminated or invalid token, in text that passes the pre-filter (it contains `set`,
//!   `reset`, `discard`, `alter` or `u&`): PostgreSQL rejects the whole string anyway, so refusing is
//!   free, and it hedges against any disagreement about where a literal ends. Other broken
//!   text goes through and gets PostgreSQL's own syntax error.
//!
//! `standard_conforming_strings` can be turned off by the client, and then `'…'` strings take
//! backslash escapes. The guard cannot know the session's value, so when a plain string
//! contains a backslash it checks the text under both settings.
//!
//! Out of scope: code inside string literals that the server runs later (function bodies,
//! `DO` blocks, `EXECUTE` of built strings). The database-side check of `app.tenant_sig`
//! covers those. The lexer's view of identifiers also assumes a UTF8 (multi-byte) server
//! encoding, where PostgreSQL folds only ASCII letters.

use std::collections::VecDeque;
use std::fmt;

use super::lexer::{LexOptions, Lexer, Token, TokenKind};
use super::TENANT_SETTING;

/// Why a query string was refused. `what` names the offending construct for the message and
/// for logs; it is one of the associated constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardViolation {
    pub what: &'static str,
}

impl GuardViolation {
    pub const SET: &'static str = "SET";
    pub const RESET: &'static str = "RESET";
    pub const RESET_ALL: &'static str = "RESET ALL";
    pub const DISCARD_ALL: &'static str = "DISCARD ALL";
    pub const SET_CONFIG: &'static str = "set_config";
    pub const ALTER_SET: &'static str = "ALTER ... SET";
    pub const ALTER_RESET: &'static str = "ALTER ... RESET";
    pub const ALTER_ROLE: &'static str = "ALTER ROLE";
    pub const SEED: &'static str = "seed";
    pub const PG_SETTINGS: &'static str = "pg_settings";
    pub const CLIENT_ENCODING: &'static str = "client_encoding";
    pub const UNTERMINATED: &'static str = "unterminated literal or comment";
    pub const INVALID: &'static str = "invalid literal or identifier";

    /// The client-facing error message (sent with SQLSTATE 42501 by the caller).
    pub fn message(&self) -> String {
        if self.what == Self::SEED {
            "permission denied to set \"seed\" through launch-proxy: the random generator of a \
             server connection is shared by every tenant that uses it (seed)"
                .to_owned()
        } else if self.what == Self::ALTER_ROLE {
            "permission denied to alter roles through launch-proxy: every tenant's server \
             connections log in as the same role (ALTER ROLE)"
                .to_owned()
        } else if self.what == Self::CLIENT_ENCODING {
            format!(
                "permission denied to change \"client_encoding\": launch-proxy requires UTF8 ({})",
                self.what
            )
        } else {
            format!(
                "permission denied to change \"{TENANT_SETTING}\": launch-proxy sets it from your \
                 authenticated identity ({})",
                self.what
            )
        }
    }
}

impl fmt::Display for GuardViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for GuardViolation {}

/// The hot-path pre-filter: whether `sql` contains `set`, `discard`, `alter` or `u&` in any
/// case.
///
/// Every violation needs one of them in the raw bytes: `SET`, `RESET`, `set_config` and
/// `pg_settings` contain `set`; `DISCARD` and `ALTER` are themselves; and the only way to
/// spell a name without its letters is a `U&` escape. Most queries contain none, and skip lexing entirely.
pub fn needs_check(sql: &[u8]) -> bool {
    mentions(sql).guarded
}

/// What the hot path's one pass over a query's bytes found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mentions {
    /// `set`, `discard`, `alter` or `u&`: the guard must lex the text ([`needs_check`]).
    pub guarded: bool,
    /// `prepare`, `execute` or `dealloc`: the text may hold SQL-level prepared-statement
    /// commands, which the relay looks for (`proxy::statements::session_statement_inside`).
    pub prepared: bool,
}

/// One pass over `sql` for the words both pre-filters look for, in any case. It runs on
/// every Query and Parse, so it looks at one byte per step through a table of the words'
/// first letters, and at the second letter before comparing the rest: a typical statement
/// is mostly letters that start none of them.
pub fn mentions(sql: &[u8]) -> Mentions {
    let starts = |i: usize, word: &[u8]| {
        sql.get(i..i + word.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    };
    let mut m = Mentions::default();
    let Some(last) = sql.len().checked_sub(1) else {
        return m;
    };
    // Every word is at least two bytes long, so its first letter is before `last`.
    for i in 0..last {
        let first = FIRST_LETTER[sql[i] as usize];
        if first == 0 {
            continue;
        }
        let second = sql[i + 1] | 0x20;
        match (first, second) {
            (b's', b'e') => m.guarded |= starts(i, b"set"),
            (b'd', b'i') => m.guarded |= starts(i, b"discard"),
            (b'd', b'e') => m.prepared |= starts(i, b"dealloc"),
            // `u&` folded is `u` and `&` | 0x20, which is `&` itself.
            (b'u', b'&') => m.guarded = true,
            (b'a', b'l') => m.guarded |= starts(i, b"alter"),
            (b'p', b'r') => m.prepared |= starts(i, b"prepare"),
            (b'e', b'x') => m.prepared |= starts(i, b"execute"),
            _ => continue,
        }
        if m.guarded && m.prepared {
            break;
        }
    }
    m
}

/// The lowercase first letter of a word [`mentions`] looks for, by byte; 0 for the rest.
static FIRST_LETTER: [u8; 256] = {
    let mut table = [0u8; 256];
    let letters = *b"sdupea";
    let mut i = 0;
    while i < letters.len() {
        table[letters[i] as usize] = letters[i];
        table[letters[i].to_ascii_uppercase() as usize] = letters[i];
        i += 1;
    }
    table
};

/// Checks a query string (one or more `;`-separated statements) against the rules above.
/// `protected` are setting names, compared ASCII-case-insensitively as PostgreSQL does.
pub fn check(sql: &[u8], protected: &[&str]) -> Result<(), GuardViolation> {
    check_with(sql, protected, false).map(|_| ())
}

/// What a statement allowed by [`check_allowing_resets`] resets as a whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resets {
    /// `RESET ALL` (or `DISCARD ALL`): every setting, the tenant ones included, is back to
    /// its default, which fails closed until the proxy sets the tenant again.
    pub settings: bool,
    /// `DISCARD ALL`: prepared statements, cursors, LISTENs and temp state are gone too.
    pub everything: bool,
}

/// Like [`check`], but lets plain `RESET ALL` and `DISCARD ALL` through (connection-pool
/// drivers send them to clean a session) and reports them, so that the caller re-applies
/// the tenant before the next transaction. Clearing the tenant can only fail closed: the
/// database trusts no tenant without its signature.
pub fn check_allowing_resets(sql: &[u8], protected: &[&str]) -> Result<Resets, GuardViolation> {
    check_with(sql, protected, true)
}

fn check_with(
    sql: &[u8],
    protected: &[&str],
    allow_resets: bool,
) -> Result<Resets, GuardViolation> {
    // PostgreSQL reads the query as a C string: nothing after a NUL is ever lexed, so nothing
    // after one may influence the verdict either.
    let sql = sql.split(|&b| b == 0).next().unwrap_or_default();
    if !needs_check(sql) {
        return Ok(Resets::default());
    }
    let mut rules = Rules {
        allow_resets,
        resets: Resets::default(),
        protected,
        max_len: protected
            .iter()
            .map(|p| p.len())
            .chain([CLIENT_ENCODING.len()])
            .max()
            .unwrap_or_default(),
        name: Vec::new(),
    };
    let standard = LexOptions {
        standard_conforming_strings: true,
    };
    let backslash = rules
        .scan(sql, standard, true)
        .map_err(|what| GuardViolation { what })?;
    if backslash {
        // Unterminated tokens are not held against the text here: if the session really had
        // the setting off, PostgreSQL would reject the whole string itself.
        let legacy = LexOptions {
            standard_conforming_strings: false,
        };
        rules
            .scan(sql, legacy, false)
            .map_err(|what| GuardViolation { what })?;
    }
    Ok(rules.resets)
}

const CLIENT_ENCODING: &str = "client_encoding";

/// Keywords and names the rules react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    Set,
    Reset,
    Discard,
    SetConfig,
    PgSettings,
    Dml,
    Alter,
    /// Starts a statement that only reads (unless it also contains a `Dml` word).
    Read,
    Other,
}

impl Word {
    fn of(token: &Token<'_>) -> Word {
        const WORDS: &[(&[u8], Word)] = &[
            (b"set", Word::Set),
            (b"reset", Word::Reset),
            (b"discard", Word::Discard),
            (b"set_config", Word::SetConfig),
            (b"pg_settings", Word::PgSettings),
            (b"update", Word::Dml),
            (b"insert", Word::Dml),
            (b"delete", Word::Dml),
            (b"merge", Word::Dml),
            (b"alter", Word::Alter),
            (b"select", Word::Read),
            (b"table", Word::Read),
            (b"values", Word::Read),
            (b"with", Word::Read),
            (b"show", Word::Read),
            (b"explain", Word::Read),
        ];
        if !token.kind.is_ident_like() {
            return Word::Other;
        }
        WORDS
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(&token.text))
            .map_or(Word::Other, |&(_, word)| word)
    }
}

/// What a setting name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    Protected,
    ClientEncoding,
    /// `seed`: setting it seeds the random generator of the server connection (its assign
    /// hook calls setseed, whatever EXECUTE on setseed says), which the next tenant's
    /// `random()` draws from; RESET ALL does not undo it.
    Seed,
    Other,
}

fn classify(protected: &[&str], name: &[u8]) -> Setting {
    if protected
        .iter()
        .any(|p| !p.is_empty() && p.as_bytes().eq_ignore_ascii_case(name))
    {
        Setting::Protected
    } else if name.eq_ignore_ascii_case(CLIENT_ENCODING.as_bytes()) {
        Setting::ClientEncoding
    } else if name.eq_ignore_ascii_case(b"seed") {
        Setting::Seed
    } else {
        Setting::Other
    }
}

/// Whether an encoding name means UTF8 once PostgreSQL has cleaned it (non-alphanumerics
/// dropped, lower-cased): `UTF8`, `utf-8`, `Unicode`.
fn is_utf8_name(value: &[u8]) -> bool {
    let mut cleaned = [0u8; 8];
    let mut n = 0;
    for &b in value.iter().filter(|b| b.is_ascii_alphanumeric()) {
        match cleaned.get_mut(n) {
            Some(slot) => *slot = b.to_ascii_lowercase(),
            None => return false,
        }
        n += 1;
    }
    matches!(cleaned.get(..n), Some(b"utf8" | b"unicode"))
}

/// A `SET client_encoding` value that keeps UTF8: `DEFAULT` (the UTF8 the pool connected
/// with) or a literal or identifier naming UTF8.
fn keeps_utf8(token: Option<&Token<'_>>) -> bool {
    token.is_some_and(|t| {
        t.is_word(b"default")
            || ((t.kind.is_text_literal() || t.kind.is_ident_like()) && is_utf8_name(&t.text))
    })
}

/// Significant tokens with lookahead: rules peek a few tokens past the current one, and the
/// window only ever holds what they looked at, so memory stays small on huge statements.
struct Cursor<'a> {
    lexer: Lexer<'a>,
    window: VecDeque<Token<'a>>,
}

impl<'a> Cursor<'a> {
    fn peek(&mut self, i: usize) -> Option<&Token<'a>> {
        while self.window.len() <= i {
            let token = self.lexer.by_ref().find(|t| !t.kind.is_trivia())?;
            self.window.push_back(token);
        }
        self.window.get(i)
    }

    fn is_word(&mut self, i: usize, word: &[u8]) -> bool {
        self.peek(i).is_some_and(|t| t.is_word(word))
    }

    fn is_punct(&mut self, i: usize, p: &[u8]) -> bool {
        self.peek(i).is_some_and(|t| t.is_punct(p))
    }

    /// `SESSION`/`LOCAL` used as a modifier rather than as the first part of a name.
    fn is_modifier(&mut self, i: usize) -> bool {
        (self.is_word(i, b"session") || self.is_word(i, b"local")) && !self.is_punct(i + 1, b".")
    }
}

/// Per-statement facts that only mean something together.
#[derive(Debug, Default)]
struct Statement {
    started: bool,
    /// Starts with `ALTER`: names the violation `ALTER ... SET`.
    alter: bool,
    /// Starts with a reading keyword or `(`.
    reads: bool,
    /// Contains `UPDATE`, `INSERT`, `DELETE` or `MERGE` anywhere.
    dml: bool,
    pg_settings: bool,
}

impl Statement {
    /// `pg_settings` may only be read. Writing to it calls `set_config`, and so does writing
    /// to a view over it, so creating one (`CREATE TEMP VIEW v AS SELECT * FROM pg_settings`,
    /// allowed to every user by default) is refused too: a later `UPDATE v` would not name it.
    fn finish(&self) -> Result<(), &'static str> {
        if self.pg_settings && (self.dml || !self.reads) {
            Err(GuardViolation::PG_SETTINGS)
        } else {
            Ok(())
        }
    }
}

struct Rules<'p> {
    protected: &'p [&'p str],
    /// Whether plain RESET ALL / DISCARD ALL pass (and are recorded in `resets`).
    allow_resets: bool,
    resets: Resets,
    /// Longest name worth assembling; longer names cannot match, so reading stops there.
    max_len: usize,
    /// Reused buffer for dotted setting names.
    name: Vec<u8>,
}

impl Rules<'_> {
    /// One pass over the text; returns whether a plain string contained a backslash.
    ///
    /// With `hedge`, unterminated and invalid tokens are violations. Without it (the pass that
    /// assumes `standard_conforming_strings` off), an unterminated token instead clears the
    /// text: under that assumption PostgreSQL would reject the whole string, so no statement in
    /// it would run. (Invalid tokens do not clear it; that verdict rests on escape decoding,
    /// and a decoder more lenient than this one must not be able to open a hole.)
    fn scan(&mut self, sql: &[u8], opts: LexOptions, hedge: bool) -> Result<bool, &'static str> {
        let mut cur = Cursor {
            lexer: Lexer::with_options(sql, opts),
            window: VecDeque::new(),
        };
        let mut stmt = Statement::default();
        let mut found = None;
        let mut broken = false;
        while let Some(token) = cur.peek(0) {
            match token.kind {
                TokenKind::Unterminated if hedge => return Err(GuardViolation::UNTERMINATED),
                TokenKind::Invalid if hedge => return Err(GuardViolation::INVALID),
                TokenKind::Unterminated => broken = true,
                _ => {}
            }
            if let Err(what) = self.step(&mut cur, &mut stmt) {
                if hedge {
                    return Err(what);
                }
                found = found.or(Some(what));
            }
            cur.window.pop_front();
        }
        if let Err(what) = stmt.finish() {
            found = found.or(Some(what));
        }
        match found {
            Some(what) if hedge || !broken => Err(what),
            _ => Ok(cur.lexer.saw_backslash_in_plain_string()),
        }
    }

    /// Applies the rules to the token at window position 0.
    fn step(&mut self, cur: &mut Cursor<'_>, stmt: &mut Statement) -> Result<(), &'static str> {
        let Some(token) = cur.peek(0) else {
            return Ok(());
        };
        if token.is_punct(b";") {
            let done = std::mem::take(stmt);
            return done.finish();
        }
        let word = Word::of(token);
        if !stmt.started {
            stmt.started = true;
            stmt.alter = word == Word::Alter;
            stmt.reads = word == Word::Read || token.is_punct(b"(");
            if stmt.alter
                && (cur.is_word(1, b"role") || cur.is_word(1, b"user") || cur.is_word(1, b"group"))
            {
                return Err(GuardViolation::ALTER_ROLE);
            }
        }
        match word {
            Word::Set => self.set(cur, stmt.alter),
            Word::Reset => self.reset(cur, stmt.alter),
            Word::Discard if cur.is_word(1, b"all") => {
                if self.allow_resets && !stmt.alter {
                    self.resets = Resets {
                        settings: true,
                        everything: true,
                    };
                    Ok(())
                } else {
                    Err(GuardViolation::DISCARD_ALL)
                }
            }
            Word::SetConfig => self.set_config(cur),
            Word::PgSettings => {
                stmt.pg_settings = true;
                Ok(())
            }
            Word::Dml => {
                stmt.dml = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads a dotted name (`a . "b" . U&"c"`) starting at `i` into `self.name`, lower-cased,
    /// and returns the index after it. Stops once the name is too long to matter.
    fn read_name(&mut self, cur: &mut Cursor<'_>, mut i: usize) -> usize {
        self.name.clear();
        loop {
            let Some(t) = cur.peek(i) else {
                return i;
            };
            if !t.kind.is_ident_like() {
                return i;
            }
            self.name.extend(t.text.iter().map(u8::to_ascii_lowercase));
            i += 1;
            if self.name.len() > self.max_len || !cur.is_punct(i, b".") {
                return i;
            }
            self.name.push(b'.');
            i += 1;
        }
    }

    /// `SET` at window position 0. `SESSION`/`LOCAL` may be modifiers or a name, so the name is
    /// tried at each possible start.
    fn set(&mut self, cur: &mut Cursor<'_>, alter: bool) -> Result<(), &'static str> {
        let label = if alter {
            GuardViolation::ALTER_SET
        } else {
            GuardViolation::SET
        };
        // Name start after 0, 1 or 2 modifiers.
        for i in 1..=3 {
            if cur.is_word(i, b"names") && !cur.is_punct(i + 1, b".") {
                // `SET NAMES` alone means the default encoding.
                let value = cur.peek(i + 1);
                if value.is_none_or(|t| t.is_punct(b";")) || keeps_utf8(value) {
                    return Ok(());
                }
                return Err(GuardViolation::CLIENT_ENCODING);
            }
            let after = self.read_name(cur, i);
            match classify(self.protected, &self.name) {
                Setting::Protected => return Err(label),
                Setting::Seed => return Err(GuardViolation::SEED),
                Setting::ClientEncoding => {
                    let assigns = cur.is_word(after, b"to")
                        || cur
                            .peek(after)
                            .is_some_and(|t| t.kind == TokenKind::Operator && *t.text == *b"=");
                    if !(assigns && keeps_utf8(cur.peek(after + 1))) {
                        return Err(GuardViolation::CLIENT_ENCODING);
                    }
                }
                Setting::Other => {}
            }
            if !cur.is_modifier(i) {
                break;
            }
        }
        Ok(())
    }

    /// `RESET` at window position 0: `RESET ALL` or a protected name.
    fn reset(&mut self, cur: &mut Cursor<'_>, alter: bool) -> Result<(), &'static str> {
        let (named, all) = if alter {
            (GuardViolation::ALTER_RESET, GuardViolation::ALTER_RESET)
        } else {
            (GuardViolation::RESET, GuardViolation::RESET_ALL)
        };
        // Name start after 0, 1 or 2 modifiers.
        for i in 1..=3 {
            if cur.is_word(i, b"all") && !cur.is_punct(i + 1, b".") {
                if self.allow_resets && !alter {
                    self.resets.settings = true;
                    return Ok(());
                }
                return Err(all);
            }
            self.read_name(cur, i);
            match classify(self.protected, &self.name) {
                Setting::Protected => return Err(named),
                Setting::Seed => return Err(GuardViolation::SEED),
                _ => {}
            }
            if !cur.is_modifier(i) {
                break;
            }
        }
        Ok(())
    }

    /// `set_config` at window position 0: allowed only as `set_config('<literal>', …)` where
    /// the literal names an unprotected setting (and, for `client_encoding`, the value is a
    /// UTF8 literal). Anything else could compute a protected name at run time.
    fn set_config(&mut self, cur: &mut Cursor<'_>) -> Result<(), &'static str> {
        let ends_arg =
            |t: Option<&Token<'_>>| t.is_some_and(|t| t.is_punct(b",") || t.is_punct(b")"));
        let literal = |t: Option<&Token<'_>>| t.is_some_and(|t| t.kind.is_text_literal());
        if !cur.is_punct(1, b"(") || !ends_arg(cur.peek(3)) || !literal(cur.peek(2)) {
            return Err(GuardViolation::SET_CONFIG);
        }
        let setting = cur
            .peek(2)
            .map_or(Setting::Protected, |t| classify(self.protected, &t.text));
        match setting {
            Setting::Protected => Err(GuardViolation::SET_CONFIG),
            Setting::Seed => Err(GuardViolation::SEED),
            Setting::ClientEncoding => {
                let utf8 = cur.is_punct(3, b",")
                    && ends_arg(cur.peek(5))
                    && cur
                        .peek(4)
                        .is_some_and(|t| t.kind.is_text_literal() && is_utf8_name(&t.text));
                if utf8 {
                    Ok(())
                } else {
                    Err(GuardViolation::CLIENT_ENCODING)
                }
            }
            Setting::Other => Ok(()),
        }
    }
}
