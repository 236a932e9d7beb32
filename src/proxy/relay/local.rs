//! Client requests answered without a server connection.
//!
//! Drivers prepare statements outside transactions with a blocking Parse+Sync (libpq's
//! `PQprepare`, used by pgbench `-M prepared`). Waiting for a server there can deadlock a
//! client thread that also drives other connections holding every server in the pool. When
//! each Parse in such a run names a statement whose text and types a server has already
//! accepted, the answer is known: ParseComplete for each, then ReadyForQuery. The statement
//! is prepared on a server when a later Bind or Describe needs it, as for any other.

use crate::protocol::fields::read_cstr;
use crate::protocol::framing::{frontend, parse_header};
use crate::proxy::statements::{ClientStatements, StatementDef, StatementRegistry};
use bytes::BufMut;
use std::sync::Arc;

/// The most Parse messages answered in one run; longer runs go to a server.
const MAX_RUN: usize = 16;

/// If `buf` starts with a run of named Parse messages ending in Sync that can be answered
/// locally, returns the reply bytes and the length of the run, after registering the
/// statements with the client. Returns `None` (and changes nothing) otherwise.
pub(super) fn answer_prepare(
    buf: &[u8],
    statements: &mut ClientStatements,
    registry: &StatementRegistry,
    reply: &mut bytes::BytesMut,
) -> Option<usize> {
    let mut found: [Option<(&[u8], Arc<StatementDef>)>; MAX_RUN] = Default::default();
    let mut n = 0;
    let mut pos = 0;
    loop {
        let h = parse_header(&buf[pos..]).ok()??;
        if buf.len() - pos < h.frame_len {
            return None;
        }
        let body = &buf[pos + 5..pos + h.frame_len];
        pos += h.frame_len;
        match h.tag {
            frontend::SYNC if n > 0 => break,
            frontend::PARSE if n < MAX_RUN => {
                let (name, query_and_types) = read_cstr(body)?;
                let (sql, _) = read_cstr(query_and_types)?;
                // Unnamed statements live on the server only; a known name is a 42P05 the
                // server reports; SQL the guard must see goes the usual way.
                let again = found[..n].iter().flatten().any(|(m, _)| *m == name);
                if name.is_empty()
                    || again
                    || statements.contains(name)
                    || crate::tenant::guard::needs_check(sql)
                {
                    return None;
                }
                found[n] = Some((name, registry.validated(query_and_types)?));
                n += 1;
            }
            _ => return None,
        }
    }
    if !statements.has_room(n) {
        return None;
    }
    for (name, def) in found[..n].iter_mut().filter_map(Option::take) {
        statements.insert(name, def);
        reply.put_slice(&[b'1', 0, 0, 0, 4]);
    }
    crate::protocol::encode::ready_for_query(reply, b'I');
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let body = [name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat();
        let mut m = vec![b'P'];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

    fn known(registry: &StatementRegistry, sql: &str) {
        let key = [sql.as_bytes(), b"\0\0\0"].concat();
        registry.intern(&key).mark_validated();
    }

    #[test]
    fn known_statements_are_answered_locally() {
        let registry = StatementRegistry::default();
        known(&registry, "select 1");
        known(&registry, "select 2");
        let run = [
            parse("a", "select 1"),
            parse("b", "select 2"),
            SYNC.to_vec(),
        ]
        .concat();
        let mut buf = run.clone();
        buf.extend_from_slice(b"Q\0\0\0\x0bselect 3\0");
        let mut mine = ClientStatements::default();
        let mut reply = BytesMut::new();
        let used = answer_prepare(&buf, &mut mine, &registry, &mut reply);
        assert_eq!(used, Some(run.len()));
        assert_eq!(&reply[..], b"1\0\0\0\x041\0\0\0\x04Z\0\0\0\x05I");
        assert!(mine.contains(b"a") && mine.contains(b"b"));
    }

    #[test]
    fn anything_unknown_or_unusual_goes_to_a_server() {
        let registry = StatementRegistry::default();
        known(&registry, "select 1");
        registry.intern(b"select 9\0\0\0");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "not validated",
                [parse("a", "select 9"), SYNC.to_vec()].concat(),
            ),
            (
                "never seen",
                [parse("a", "select 7"), SYNC.to_vec()].concat(),
            ),
            ("unnamed", [parse("", "select 1"), SYNC.to_vec()].concat()),
            ("no Sync yet", parse("a", "select 1")),
            ("Sync alone", SYNC.to_vec()),
            (
                "same name twice",
                [
                    parse("a", "select 1"),
                    parse("a", "select 1"),
                    SYNC.to_vec(),
                ]
                .concat(),
            ),
            (
                "a Bind follows",
                [parse("a", "select 1"), b"B".to_vec()].concat(),
            ),
        ];
        for (what, buf) in cases {
            let mut mine = ClientStatements::default();
            let mut reply = BytesMut::new();
            let used = answer_prepare(&buf, &mut mine, &registry, &mut reply);
            assert_eq!(used, None, "{what}");
            assert!(reply.is_empty() && !mine.contains(b"a"), "{what}");
        }
        let mut mine = ClientStatements::default();
        mine.insert(b"a", registry.intern(b"select 1\0\0\0"));
        let buf = [parse("a", "select 1"), SYNC.to_vec()].concat();
        let used = answer_prepare(&buf, &mut mine, &registry, &mut BytesMut::new());
        assert_eq!(used, None, "an existing name is the server's 42P05");
    }
}
