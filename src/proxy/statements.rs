//! Named prepared statements in transaction mode.
//!
//! A client's statement names are its own: the proxy maps each to a shared definition
//! (one per distinct query text and parameter types, across all clients), prepares that
//! definition on whichever server connection a transaction lands on under a proxy name
//! (`lp_<id>`), and rewrites the client's Bind/Describe to that name.

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A statement as servers know it.
#[derive(Debug)]
pub struct StatementDef {
    pub id: u64,
    /// The Parse message under the proxy's name, ready to send.
    pub parse: Bytes,
    /// A server accepted this Parse once: another client's Parse of the same text and
    /// types can be answered without a server (see `relay::local`).
    validated: AtomicBool,
    /// A server reported its cached plan outdated (0A000 after a schema change): a new
    /// Parse of the same text gets a new definition, so a fresh server statement.
    stale: AtomicBool,
    /// Running it changes a session setting the proxy does not follow (a SET it cannot
    /// carry, set_config): each Bind marks its server connection for the RESET ALL of the
    /// switch before another client's transaction (`ServerConn::may_hold_settings`).
    pub changes_settings: bool,
}

impl StatementDef {
    pub fn mark_validated(&self) {
        self.validated.store(true, Ordering::Relaxed);
    }

    pub fn is_validated(&self) -> bool {
        self.validated.load(Ordering::Relaxed) && !self.is_stale()
    }

    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }
}

/// Definitions shared by all clients, keyed by query text plus parameter types.
pub struct StatementRegistry {
    inner: Mutex<RegistryInner>,
}

struct RegistryInner {
    defs: HashMap<Bytes, Arc<StatementDef>>,
    next_id: u64,
    /// The size at which the next sweep runs.
    sweep_at: usize,
}

/// Definitions no client holds any more are dropped when the registry reaches this size,
/// and again each time it doubles since the last sweep: sweeping at every new text once
/// clients held this many made each Parse scan them all (red team: 336 µs a Parse at
/// 80,000).
const REGISTRY_SWEEP_AT: usize = 20_000;

impl Default for StatementRegistry {
    fn default() -> Self {
        StatementRegistry {
            inner: Mutex::new(RegistryInner {
                defs: HashMap::new(),
                next_id: 1,
                sweep_at: REGISTRY_SWEEP_AT,
            }),
        }
    }
}

impl StatementRegistry {
    /// The definition for a Parse body's part after the statement name (query text, then
    /// parameter types), created on first sight.
    pub fn intern(&self, query_and_types: &[u8]) -> Arc<StatementDef> {
        let mut inner = self.inner.lock();
        if let Some(d) = inner.defs.get(query_and_types).filter(|d| !d.is_stale()) {
            return d.clone();
        }
        if inner.defs.len() >= inner.sweep_at {
            inner.defs.retain(|_, d| Arc::strong_count(d) > 1);
            inner.sweep_at = REGISTRY_SWEEP_AT.max(2 * inner.defs.len());
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let name = crate::pool::statements::server_name(id);
        let mut parse = BytesMut::with_capacity(query_and_types.len() + name.len() + 6);
        parse.put_u8(b'P');
        parse.put_i32((4 + name.len() + 1 + query_and_types.len()) as i32);
        parse.put_slice(name.as_bytes());
        parse.put_u8(0);
        parse.put_slice(query_and_types);
        let sql = crate::protocol::fields::read_cstr(query_and_types).map_or(&[][..], |(s, _)| s);
        let changes_settings = crate::tenant::guard::needs_check(sql)
            && (crate::proxy::session_params::ParamSet::default().observe_sql(sql)
                || crate::tenant::shape::names_setting_function(sql));
        let def = Arc::new(StatementDef {
            id,
            parse: parse.freeze(),
            validated: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            changes_settings,
        });
        inner
            .defs
            .insert(Bytes::copy_from_slice(query_and_types), def.clone());
        def
    }
}

impl StatementRegistry {
    /// The definition for `query_and_types` if a server has already accepted it.
    pub fn validated(&self, query_and_types: &[u8]) -> Option<Arc<StatementDef>> {
        let inner = self.inner.lock();
        inner
            .defs
            .get(query_and_types)
            .filter(|d| d.is_validated())
            .cloned()
    }
}

/// One client's named statements.
#[derive(Default)]
pub struct ClientStatements {
    by_name: HashMap<Box<[u8]>, Arc<StatementDef>>,
}

/// PostgreSQL sets no limit; a proxy must, or one client could exhaust memory.
pub const MAX_CLIENT_STATEMENTS: usize = 10_000;

/// PostgreSQL keys prepared statements by their name's first `NAMEDATALEN - 1` (63) bytes,
/// so longer names that share them are one statement there; so they are here, and a
/// client cannot make the proxy keep names of megabytes (red team: 100 names of 10 MB
/// took 1 GiB).
const NAME_KEY_LEN: usize = 63;

fn key(name: &[u8]) -> &[u8] {
    &name[..name.len().min(NAME_KEY_LEN)]
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        self.by_name.get(key(name))
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(key(name))
    }

    /// Whether `n` more statements fit.
    pub fn has_room(&self, n: usize) -> bool {
        self.by_name.len() + n <= MAX_CLIENT_STATEMENTS
    }

    /// False when the client already holds the maximum number of statements.
    pub fn insert(&mut self, name: &[u8], def: Arc<StatementDef>) -> bool {
        if self.by_name.len() >= MAX_CLIENT_STATEMENTS {
            return false;
        }
        self.by_name.insert(key(name).into(), def);
        true
    }

    /// The client's name for the statement with server id `id` (any, if several).
    pub fn name_of(&self, id: u64) -> Option<&[u8]> {
        self.by_name
            .iter()
            .find(|(_, d)| d.id == id)
            .map(|(n, _)| &n[..])
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.by_name.remove(key(name));
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// SQL-level statements that touch prepared statements, told apart by their first word.
#[derive(Debug, PartialEq, Eq)]
pub enum SqlPrepared {
    /// `PREPARE` or `EXECUTE`: session state transaction pooling cannot keep.
    PrepareOrExecute,
    /// `DEALLOCATE [PREPARE] name`, or `ALL` (`None`).
    Deallocate(Option<Vec<u8>>),
}

/// Classifies a simple Query by its first words; `None` for everything else. Costs one
/// byte test for ordinary queries.
pub fn classify_sql(sql: &[u8]) -> Option<SqlPrepared> {
    let first = sql.iter().find(|b| !b.is_ascii_whitespace())?;
    // A leading comment must not hide the statement.
    if !matches!(first.to_ascii_lowercase(), b'p' | b'e' | b'd' | b'/' | b'-') {
        return None;
    }
    let mut words = crate::tenant::lexer::Lexer::new(sql)
        .filter(|t| !t.kind.is_trivia())
        .take(6);
    let head = words.next()?;
    if head.is_word(b"prepare") || head.is_word(b"execute") {
        return Some(SqlPrepared::PrepareOrExecute);
    }
    if !head.is_word(b"deallocate") {
        return None;
    }
    let mut next = words.next()?;
    if next.is_word(b"prepare") {
        next = words.next()?;
    }
    if next.kind == crate::tenant::token::TokenKind::Ident && next.is_word(b"all") {
        return Some(SqlPrepared::Deallocate(None));
    }
    // One statement only: anything after the name but `;` is not ours to answer.
    if let Some(after) = words.next() {
        if !after.is_punct(b";") || words.next().is_some() {
            return None;
        }
    }
    next.kind
        .is_ident_like()
        .then(|| SqlPrepared::Deallocate(Some(next.folded().into_owned())))
}

/// Whether any statement in `sql` (a Query with several statements, or a Parse) is SQL
/// PREPARE, EXECUTE or DEALLOCATE. In transaction pooling those act on whichever server
/// connection runs them, whose prepared statements the proxy shares between clients, so
/// they are refused anywhere but alone in a simple Query (see [`classify_sql`]). It lexes:
/// the relay calls it only when `tenant::guard::mentions` saw one of the words.
pub fn session_statement_inside(sql: &[u8]) -> bool {
    let mut at_start = true;
    for token in crate::tenant::lexer::Lexer::new(sql).filter(|t| !t.kind.is_trivia()) {
        if at_start
            && (token.is_word(b"prepare")
                || token.is_word(b"execute")
                || token.is_word(b"deallocate"))
        {
            return true;
        }
        at_start = token.is_punct(b";");
    }
    false
}

/// Builds a Bind or Describe/Close-statement message whose statement name is replaced:
/// `head` is what precedes the name in the body (the portal name for Bind, the 'S' byte
/// for Describe), `rest` what follows it.
pub fn rewrite_name(tag: u8, head: &[u8], name: &str, rest: &[u8], out: &mut BytesMut) {
    out.put_u8(tag);
    out.put_i32((4 + head.len() + name.len() + 1 + rest.len()) as i32);
    out.put_slice(head);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
}

/// An ErrorResponse (`msg`, whole) with every proxy statement name in its fields replaced
/// by the client's name for it, as PostgreSQL would have worded it; names the client has
/// no statement for become `<statement>`. The proxy's names never reach clients.
pub fn rename_in_error(msg: &[u8], statements: &ClientStatements) -> BytesMut {
    let prefix = crate::pool::statements::server_name_prefix().as_bytes();
    crate::protocol::encode::rewritten_error(msg, |_, mut text, out| {
        while let Some(at) = text.windows(prefix.len()).position(|w| w == prefix) {
            out.put_slice(&text[..at]);
            let digits = text[at + prefix.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let end = at + prefix.len() + digits;
            let id = crate::pool::statements::parse_server_name(&text[at..end]);
            match id.and_then(|id| statements.name_of(id)) {
                Some(name) => out.put_slice(name),
                None => out.put_slice(b"<statement>"),
            }
            text = &text[end..];
        }
        out.put_slice(text);
    })
}

/// A Close('S') for a proxy-named statement, to evict it from a server.
pub fn close_message(id: u64, out: &mut BytesMut) {
    let name = crate::pool::statements::server_name(id);
    rewrite_name(b'C', b"S", &name, &[], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_are_found_anywhere() {
        for sql in [
            "SELECT 1; DEALLOCATE ALL",
            "/* c */ prepare x AS SELECT 1",
            "select 1;\n  Execute x",
            "DEALLOCATE x",
        ] {
            assert!(session_statement_inside(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT 'prepare'",
            "DO $$ BEGIN EXECUTE 'SELECT 1'; END $$",
            "SELECT prepared FROM t",
            "SELECT 1 -- ; deallocate all",
        ] {
            assert!(!session_statement_inside(sql.as_bytes()), "{sql}");
        }
        assert_eq!(
            classify_sql(b"/* c */ DEALLOCATE ALL"),
            Some(SqlPrepared::Deallocate(None))
        );
    }

    /// Held definitions survive a sweep, and the next sweep waits until the registry has
    /// doubled, not for the next new text.
    #[test]
    fn sweeps_wait_for_the_registry_to_double() {
        let r = StatementRegistry::default();
        let text = |k: usize| format!("select {k}\0\0\0").into_bytes();
        let held: Vec<_> = (0..REGISTRY_SWEEP_AT + 1)
            .map(|k| r.intern(&text(k)))
            .collect();
        assert_eq!(
            r.inner.lock().sweep_at,
            2 * (REGISTRY_SWEEP_AT),
            "swept once, all held"
        );
        let unheld = REGISTRY_SWEEP_AT - 1;
        (0..unheld).for_each(|k| drop(r.intern(&text(held.len() + k))));
        assert_eq!(
            r.inner.lock().defs.len(),
            held.len() + unheld,
            "no sweep before doubling"
        );
        drop(r.intern(&text(1 << 40)));
        assert_eq!(
            r.inner.lock().defs.len(),
            held.len() + 1,
            "unheld ones swept at doubling"
        );
    }

    #[test]
    fn same_text_same_definition() {
        let r = StatementRegistry::default();
        let a = r.intern(b"select 1\0\0\0");
        let b = r.intern(b"select 1\0\0\0");
        let c = r.intern(b"select 2\0\0\0");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let h = crate::protocol::framing::parse_header(&a.parse)
            .unwrap()
            .unwrap();
        assert_eq!(h.frame_len, a.parse.len());
        assert!(a.parse.starts_with(b"P"));
        let name = crate::pool::statements::server_name(a.id);
        assert!(a.parse[5..].starts_with(format!("{}\0select 1", &*name).as_bytes()));
    }

    #[test]
    fn classifies_sql_level_statements() {
        assert_eq!(classify_sql(b"select 1"), None);
        assert_eq!(
            classify_sql(b" PREPARE p AS select 1"),
            Some(SqlPrepared::PrepareOrExecute)
        );
        assert_eq!(
            classify_sql(b"execute p"),
            Some(SqlPrepared::PrepareOrExecute)
        );
        assert_eq!(
            classify_sql(b"DEALLOCATE ALL"),
            Some(SqlPrepared::Deallocate(None))
        );
        assert_eq!(
            classify_sql(b"deallocate prepare \"S_1\";"),
            Some(SqlPrepared::Deallocate(Some(b"S_1".to_vec())))
        );
        assert_eq!(classify_sql(b"deallocate s1; select 1"), None);
        assert_eq!(classify_sql(b"delete from t"), None);
    }

    #[test]
    fn rewrite_keeps_the_rest() {
        let mut out = BytesMut::new();
        rewrite_name(b'B', b"portal\0", "lp_7", b"\0\0\0\0\0\0", &mut out);
        let h = crate::protocol::framing::parse_header(&out)
            .unwrap()
            .unwrap();
        assert_eq!(h.frame_len, out.len());
        assert_eq!(&out[5..], b"portal\0lp_7\0\0\0\0\0\0\0");
    }
}
