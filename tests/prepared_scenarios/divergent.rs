//! Where launch-proxy is known to answer differently from PostgreSQL: each scenario checks
//! both sides against their own expected answers (docs/compatibility.md explains why).

use super::*;

/// An error earlier in a pipeline makes the server skip the Bind of a statement not yet
/// prepared on this server connection, and with it the Parse (and the Close of the
/// statement it evicts) the proxy put before it. Afterwards the statement must work, for
/// this client and another, and so must the one whose eviction was skipped.
pub fn error_before_first_use_on_a_connection(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.x(a, "Parse k1", &[parse("k1", "SELECT 101", &[])], "1 Z[I]");
    evict(s, a, "k1");
    let bytes = [pbe("", "SELECT 1/0", &[]), run("k1", &[])];
    s.x(a, "error, then k1", &bytes, "1 E[22012] Z[I]");
    s.x(
        a,
        "k1 again",
        &[run("k1", &[])],
        "2 D[101] C[SELECT 1] Z[I]",
    );
    let other = [pbe("j", "SELECT 101", &[])];
    s.x(
        b,
        "other client, same text",
        &other,
        "1 2 D[101] C[SELECT 1] Z[I]",
    );
    let evicted = [run("k1_x1", &[])];
    s.x(
        a,
        "the one whose Close was skipped",
        &evicted,
        "2 D[k1 1] C[SELECT 1] Z[I]",
    );
}

/// The same inside a failed transaction: the proxy's Parse fails with 25P02 as the
/// client's Bind does; after ROLLBACK the statement works.
pub fn first_use_in_a_failed_transaction(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.x(a, "Parse g1", &[parse("g1", "SELECT 'g1'", &[])], "1 Z[I]");
    evict(s, a, "g1");
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.q(a, "SELECT 1/0", "E[22012] Z[E]");
    s.x(
        a,
        "g1 in the failed transaction",
        &[run("g1", &[])],
        "E[25P02] Z[E]",
    );
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "g1 after ROLLBACK",
        &[run("g1", &[])],
        "2 D[g1] C[SELECT 1] Z[I]",
    );
    let other = [pbe("h", "SELECT 'g1'", &[])];
    s.x(
        b,
        "other client, same text",
        &other,
        "1 2 D[g1] C[SELECT 1] Z[I]",
    );
}

/// Errors the proxy raises itself in the extended protocol (Bind/Describe of an unknown
/// name, Parse of an existing one) abort an open transaction, as PostgreSQL's do.
pub fn proxy_errors_abort_the_transaction(s: &mut Side) {
    let a = s.client();
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(
        a,
        "Bind of a missing name",
        &[run("nope", &[])],
        "E[26000] Z[E]",
    );
    s.q(a, "SELECT 1", "E[25P02] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(
        a,
        "Describe of a missing name",
        &[describe(b'S', "nope")],
        "E[26000] Z[E]",
    );
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(a, "Parse t", &[parse("t", "SELECT 1", &[])], "1 Z[I]");
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(
        a,
        "duplicate Parse",
        &[parse("t", "SELECT 1", &[])],
        "E[42P05] Z[E]",
    );
    s.q(a, "SELECT 1", "E[25P02] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
}

/// DISCARD ALL refused inside a transaction block (25001) and DEALLOCATE in a failed
/// transaction (25P02) drop nothing.
pub fn refused_resets_keep_statements(s: &mut Side) {
    let a = s.client();
    s.x(
        a,
        "Parse keep",
        &[parse("keep", "SELECT 'keep'", &[])],
        "1 Z[I]",
    );
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.q(a, "DISCARD ALL", "E[25001] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "keep remains",
        &[run("keep", &[])],
        "2 D[keep] C[SELECT 1] Z[I]",
    );
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.q(a, "SELECT 1/0", "E[22012] Z[E]");
    s.q(a, "DEALLOCATE ALL", "E[25P02] Z[E]");
    s.q(a, "DEALLOCATE keep", "E[25P02] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "keep remains",
        &[run("keep", &[])],
        "2 D[keep] C[SELECT 1] Z[I]",
    );
}

/// After a column is added, a statement's next execution fails with 0A000 ("cached plan
/// must not change result type"); closing it and preparing the same text again (what
/// drivers do on this error) gives the new shape, for this client and for a new one.
pub fn reprepare_after_result_type_change(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    let setup = "CREATE TABLE rt (a int); INSERT INTO rt VALUES (1)";
    s.q(a, setup, "C[CREATE TABLE] C[INSERT 0 1] Z[I]");
    let p = [pbe("r", "SELECT * FROM rt", &[])];
    s.x(a, "prepare", &p, "1 2 D[1] C[SELECT 1] Z[I]");
    s.q(
        a,
        "ALTER TABLE rt ADD COLUMN b text DEFAULT 'x'",
        "C[ALTER TABLE] Z[I]",
    );
    s.x(a, "result type changed", &[run("r", &[])], "E[0A000] Z[I]");
    let again = [close(b'S', "r"), pbe("r", "SELECT * FROM rt", &[])];
    s.x(
        a,
        "Close and prepare again",
        &again,
        "3 1 2 D[1,x] C[SELECT 1] Z[I]",
    );
    s.x(
        b,
        "new client, same text",
        &p,
        "1 2 D[1,x] C[SELECT 1] Z[I]",
    );
    s.q(a, "DEALLOCATE r", "C[DEALLOCATE] Z[I]");
    s.q(a, "ALTER TABLE rt DROP COLUMN b", "C[ALTER TABLE] Z[I]");
    // A deliberate difference: a Parse of a text the server already holds shares that
    // statement, whose plan the schema change outdated; the first Bind reports 0A000 (as
    // PostgreSQL does for a statement prepared before the change) and the retry that
    // drivers make gets a fresh statement.
    s.run_each(
        a,
        "DEALLOCATE and prepare again",
        &[p.concat(), sync()].concat(),
        "1 2 D[1] C[SELECT 1] Z[I]",
        "1 E[0A000] Z[I]",
    );
    let retry = [close(b'S', "r"), pbe("r", "SELECT * FROM rt", &[])];
    s.x(a, "retry", &retry, "3 1 2 D[1] C[SELECT 1] Z[I]");
    s.q(a, "DROP TABLE rt", "C[DROP TABLE] Z[I]");
}

/// DEALLOCATE by other paths than a lone simple Query (extended protocol, several
/// statements in one Query). PostgreSQL acts on the session's statements; the proxy, which
/// shares server statements between clients, refuses these forms with 0A000 (a
/// deliberate difference) and nothing changes for anyone; a leading comment does not hide a
/// lone DEALLOCATE, which the proxy answers for the client's own statements.
pub fn deallocate_by_other_paths(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    let z = [
        parse("z1", "SELECT 'z1'", &[]),
        parse("z2", "SELECT 'z2'", &[]),
    ];
    s.x(a, "Parse z1 z2", &z, "1 1 Z[I]");
    s.x(
        b,
        "b prepares",
        &[pbe("y", "SELECT 'y'", &[])],
        "1 2 D[y] C[SELECT 1] Z[I]",
    );
    // After each refused form the two sessions differ (PostgreSQL dropped statements, the
    // proxy's client still has them), so the names it touched are not used again until
    // the lone DEALLOCATE ALL below brings both to the same state.
    let with_sync = |m: Vec<u8>| [m, sync()].concat();
    let refused = [
        ("DEALLOCATE z1", "1 2 C[DEALLOCATE] Z[I]"),
        ("DEALLOCATE ALL", "1 2 C[DEALLOCATE ALL] Z[I]"),
    ];
    for (sql, postgres) in refused {
        let bytes = with_sync(pbe("", sql, &[]));
        s.run_each(
            a,
            &format!("extended {sql}"),
            &bytes,
            postgres,
            "E[0A000] Z[I]",
        );
    }
    let multi = "SELECT 1; DEALLOCATE ALL";
    s.run_each(
        a,
        multi,
        &query(multi),
        "T[?column?:23] D[1] C[SELECT 1] C[DEALLOCATE ALL] Z[I]",
        "E[0A000] Z[I]",
    );
    s.x(
        b,
        "b's remains",
        &[run("y", &[])],
        "2 D[y] C[SELECT 1] Z[I]",
    );
    s.q(a, "/* c */ DEALLOCATE ALL", "C[DEALLOCATE ALL] Z[I]");
    let again = [pbe("z1", "SELECT 'z1 again'", &[])];
    s.x(a, "z1 is free", &again, "1 2 D[z1 again] C[SELECT 1] Z[I]");
    s.x(
        b,
        "b's remains",
        &[run("y", &[])],
        "2 D[y] C[SELECT 1] Z[I]",
    );
}

/// In PostgreSQL the unnamed statement survives a Sync outside a transaction (libpq's
/// PQprepare with an empty name, then PQexecPrepared), even when another client runs in
/// between; through the proxy a later Bind of it is refused with 26000.
pub fn unnamed_statement_across_sync(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.x(
        a,
        "Parse unnamed",
        &[parse("", "SELECT 'a'", &[])],
        "1 Z[I]",
    );
    let other = [pbe("", "SELECT 'b'", &[])];
    s.x(b, "other client", &other, "1 2 D[b] C[SELECT 1] Z[I]");
    // A deliberate difference: the proxy cannot keep a client's unnamed statement past
    // its transaction (the server may now hold another client's), so it refuses the Bind
    // rather than run what it does not know. Never another client's result.
    s.run_each(
        a,
        "Bind unnamed",
        &[run("", &[]), sync()].concat(),
        "2 D[a] C[SELECT 1] Z[I]",
        "E[26000] Z[I]",
    );
    // The same refusal for a Bind larger than one read of the socket (the proxy waits for
    // the whole of it rather than stream it); PostgreSQL counts the parameters.
    let big = "x".repeat(300_000);
    s.run_each(
        a,
        "large Bind unnamed",
        &[run("", &[&big]), sync()].concat(),
        "E[08P01] Z[I]",
        "E[26000] Z[I]",
    );
    s.x(
        a,
        "still serves",
        &[pbe("", "SELECT 'c'", &[])],
        "1 2 D[c] C[SELECT 1] Z[I]",
    );
}

/// Parse checks the catalog when it arrives: after the table is dropped, preparing a text
/// that another client prepared before fails at Parse (42P01) and creates no statement.
pub fn parse_checks_the_catalog(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.q(a, "CREATE TABLE pd (a int)", "C[CREATE TABLE] Z[I]");
    s.x(
        a,
        "prepare",
        &[pbe("p", "SELECT a FROM pd", &[])],
        "1 2 C[SELECT 0] Z[I]",
    );
    s.q(a, "DROP TABLE pd", "C[DROP TABLE] Z[I]");
    s.x(a, "old statement fails", &[run("p", &[])], "E[42P01] Z[I]");
    s.x(
        b,
        "Parse fails",
        &[parse("q", "SELECT a FROM pd", &[])],
        "E[42P01] Z[I]",
    );
    s.x(b, "no statement", &[run("q", &[])], "E[26000] Z[I]");
    s.x(
        b,
        "in a pipeline",
        &[pbe("q", "SELECT a FROM pd", &[])],
        "E[42P01] Z[I]",
    );
}

/// Parse in a failed transaction is refused (25P02) and creates nothing, also for a text
/// another client has prepared; Close works there.
pub fn parse_in_a_failed_transaction(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.x(
        a,
        "prepare",
        &[pbe("p", "SELECT 'p'", &[])],
        "1 2 D[p] C[SELECT 1] Z[I]",
    );
    s.q(b, "BEGIN", "C[BEGIN] Z[T]");
    s.q(b, "SELECT 1/0", "E[22012] Z[E]");
    s.x(
        b,
        "Parse of a known text",
        &[parse("q", "SELECT 'p'", &[])],
        "E[25P02] Z[E]",
    );
    s.x(
        b,
        "Parse of a new text",
        &[parse("r", "SELECT 'r'", &[])],
        "E[25P02] Z[E]",
    );
    s.x(b, "Close", &[close(b'S', "zz")], "3 Z[E]");
    s.q(b, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(b, "q was not created", &[run("q", &[])], "E[26000] Z[I]");
    s.x(b, "r was not created", &[run("r", &[])], "E[26000] Z[I]");
    // Transaction-ending statements may be parsed in a failed transaction (pgjdbc prepares
    // its ROLLBACK as a named statement): a first time, and again for a text the server
    // already holds.
    for name in ["rb1", "rb2"] {
        s.q(b, "BEGIN", "C[BEGIN] Z[T]");
        s.q(b, "SELECT 1/0", "E[22012] Z[E]");
        let rollback = [pbe(name, "ROLLBACK", &[])];
        s.x(b, "named ROLLBACK", &rollback, "1 2 C[ROLLBACK] Z[I]");
    }
}

/// The same with the Parse pipelined behind a Sync or Query not yet answered: its answer
/// depends on the status that one's ReadyForQuery reports. Behind a failed statement a
/// Parse of a known text and a DEALLOCATE are refused (25P02) and change nothing; behind a
/// ROLLBACK of a failed transaction the Parse succeeds.
pub fn parse_pipelined_behind_a_sync(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.x(
        a,
        "prepare",
        &[pbe("p", "SELECT 'p'", &[])],
        "1 2 D[p] C[SELECT 1] Z[I]",
    );
    s.x(
        b,
        "own statement",
        &[parse("mine", "SELECT 'm'", &[])],
        "1 Z[I]",
    );
    s.q(b, "BEGIN", "C[BEGIN] Z[T]");
    let failing = [pbe("", "SELECT 1/0", &[]), sync()].concat();
    let then_parse = [
        failing.clone(),
        parse("q", "SELECT 'p'", &[]),
        run("q", &[]),
        sync(),
    ];
    s.run(
        b,
        "error, Sync, then Parse of a known text",
        &then_parse.concat(),
        "1 E[22012] Z[E] E[25P02] Z[E]",
    );
    let rollback_then_parse = [
        query("ROLLBACK"),
        parse("q", "SELECT 'p'", &[]),
        run("q", &[]),
        sync(),
    ];
    s.run(
        b,
        "ROLLBACK, then Parse of a known text",
        &rollback_then_parse.concat(),
        "C[ROLLBACK] Z[I] 1 2 D[p] C[SELECT 1] Z[I]",
    );
    s.q(b, "BEGIN", "C[BEGIN] Z[T]");
    s.run(
        b,
        "error, Sync, then DEALLOCATE",
        &[failing, query("DEALLOCATE mine")].concat(),
        "1 E[22012] Z[E] E[25P02] Z[E]",
    );
    s.q(b, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        b,
        "mine survived",
        &[run("mine", &[])],
        "2 D[m] C[SELECT 1] Z[I]",
    );
}

/// REVIEW: a named Parse held behind a Query whose bytes the server socket did not take in
/// one write (a large Query): the rest of the Query must still go out.
pub fn parse_behind_a_large_query(s: &mut Side) {
    let c = s.client();
    // The server connection now carries the tenant: the next transaction's first
    // messages take the common path (upstream::forward_client_now).
    s.q(c, "SELECT 1", "T[?column?:23] D[1] C[SELECT 1] Z[I]");
    let big = format!("SELECT length('{}')", "x".repeat(24 << 20));
    s.run(
        c,
        "large Query, then Parse/Bind/Execute/Sync",
        &[
            query(&big),
            parse("q", "SELECT 'q'", &[]),
            run("q", &[]),
            sync(),
        ]
        .concat(),
        "T[length:23] D[25165824] C[SELECT 1] Z[I] 1 2 D[q] C[SELECT 1] Z[I]",
    );
}

/// REVIEW: the unnamed statement is kept across Sync within one pipeline; a named Parse
/// pipelined between its Sync and its next Bind must not change that.
pub fn unnamed_behind_a_held_parse(s: &mut Side) {
    let c = s.client();
    let sql = "SELECT $1::text";
    let pipeline = [
        parse("", sql, &[]),
        bind("", "", &["a"]),
        execute("", 0),
        sync(),
        parse("n", "SELECT 'n'", &[]),
        bind("", "", &["b"]),
        execute("", 0),
        sync(),
    ];
    s.run(
        c,
        "unnamed, Sync, named Parse, Bind unnamed",
        &pipeline.concat(),
        "1 2 D[a] C[SELECT 1] Z[I] 1 2 D[b] C[SELECT 1] Z[I]",
    );
}

/// REVIEW: a named Parse pipelined behind the Sync of an extended-protocol COPY FROM STDIN
/// (the Sync gets no ReadyForQuery in COPY mode); the client then sends its data.
pub fn parse_behind_a_copy_sync(s: &mut Side) {
    let c = s.client();
    s.q(c, "CREATE TABLE cp_t (v text)", "C[CREATE TABLE] Z[I]");
    let first = [
        parse("", "COPY cp_t FROM STDIN", &[]),
        bind("", "", &[]),
        execute("", 0),
        sync(),
        parse("n", "SELECT 'n'", &[]),
        run("n", &[]),
        sync(),
    ];
    s.run_until(c, "COPY, Sync, named Parse", &first.concat(), b'G', "");
    s.send(c, &[frame(b'd', b"x\n"), frame(b'c', &[]), sync()].concat());
    s.recv(c, "data, CopyDone, Sync", Wait::Tag(b'E'), "E[08P01]");
}
