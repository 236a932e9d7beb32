//! Rules of PostgreSQL's extended query protocol that a pooler must keep.

use super::*;

/// Describe of a statement gives its parameter types and columns (or NoData), Describe of
/// a portal its columns; also for a client whose text another client prepared, and after
/// a Parse answered on its own.
pub fn describe_statement_and_portal(s: &mut Side) {
    let (a, c) = (s.client(), s.client());
    s.q(a, "CREATE TABLE d_t (a int)", "C[CREATE TABLE] Z[I]");
    let (rows, insert, inferred) = (
        "SELECT $1::int4 AS a, $2::text AS b",
        "INSERT INTO d_t VALUES ($1)",
        "SELECT a FROM d_t WHERE a = $1",
    );
    let d1 = [parse("d1", rows, &[]), describe(b'S', "d1")];
    s.x(a, "rows", &d1, "1 t[23,25] T[a:23,b:25] Z[I]");
    let d2 = [parse("d2", insert, &[]), describe(b'S', "d2")];
    s.x(a, "no rows", &d2, "1 t[23] n Z[I]");
    let d3 = [parse("d3", inferred, &[]), describe(b'S', "d3")];
    s.x(a, "inferred type", &d3, "1 t[23] T[a:23] Z[I]");
    let p = [
        bind("p", "d1", &["5", "x"]),
        describe(b'P', "p"),
        execute("p", 0),
    ];
    s.x(a, "portal", &p, "2 T[a:23,b:25] D[5,x] C[SELECT 1] Z[I]");
    let p = [bind("", "d2", &["7"]), describe(b'P', ""), execute("", 0)];
    s.x(a, "portal without rows", &p, "2 n C[INSERT 0 1] Z[I]");
    s.x(
        a,
        "Describe alone",
        &[describe(b'S', "d1")],
        "t[23,25] T[a:23,b:25] Z[I]",
    );
    let e1 = [parse("e1", rows, &[]), describe(b'S', "e1")];
    s.x(
        c,
        "other client, same text",
        &e1,
        "1 t[23,25] T[a:23,b:25] Z[I]",
    );
    s.x(c, "Parse alone", &[parse("e2", inferred, &[])], "1 Z[I]");
    let e2 = [describe(b'S', "e2"), run("e2", &["7"])];
    s.x(
        c,
        "then Describe and run",
        &e2,
        "t[23] T[a:23] 2 D[7] C[SELECT 1] Z[I]",
    );
    s.q(a, "DROP TABLE d_t", "C[DROP TABLE] Z[I]");
}

/// Bind errors from PostgreSQL: wrong parameter or format count (08P01), bad text
/// (22P02), wrong result format count (08P01), unknown portal (34000).
pub fn bind_errors(s: &mut Side) {
    let a = s.client();
    s.x(
        a,
        "Parse",
        &[parse("bx", "SELECT $1::int4 + $2::int4", &[])],
        "1 Z[I]",
    );
    s.x(
        a,
        "one parameter of two",
        &[run("bx", &["1"])],
        "E[08P01] Z[I]",
    );
    let three = bind_with("", "bx", &[0, 0, 0], &[Some(b"1"), Some(b"2")], &[]);
    s.x(
        a,
        "three formats",
        &[three, execute("", 0)],
        "E[08P01] Z[I]",
    );
    s.x(a, "bad integer", &[run("bx", &["1", "x"])], "E[22P02] Z[I]");
    let two = bind_with("", "bx", &[], &[Some(b"1"), Some(b"2")], &[0, 0]);
    s.x(
        a,
        "two result formats",
        &[two, execute("", 0)],
        "E[08P01] Z[I]",
    );
    s.x(a, "unknown portal", &[execute("nope", 0)], "E[34000] Z[I]");
    s.x(
        a,
        "fine",
        &[run("bx", &["1", "2"])],
        "2 D[3] C[SELECT 1] Z[I]",
    );
}

/// Error messages about a client's statement name that statement, as PostgreSQL's do
/// (wrong parameter count, missing statement, duplicate name).
pub fn error_messages_name_the_clients_statement(s: &mut Side) {
    s.messages = true;
    let a = s.client();
    s.x(
        a,
        "Parse",
        &[parse("bx", "SELECT $1::int4 + $2::int4", &[])],
        "1 Z[I]",
    );
    let want = "E[08P01: bind message supplies 1 parameters, but prepared statement \"bx\" \
                requires 2] Z[I]";
    s.x(a, "one parameter of two", &[run("bx", &["1"])], want);
    let want = "E[26000: prepared statement \"nope\" does not exist] Z[I]";
    s.x(a, "missing", &[run("nope", &[])], want);
    let want = "E[42P05: prepared statement \"bx\" already exists] Z[I]";
    s.x(a, "duplicate", &[parse("bx", "SELECT 1", &[])], want);
}

/// Statements outlive errors, failed transactions and rollbacks, including one prepared
/// inside the transaction that is rolled back (statements are not transactional).
pub fn statements_survive_errors_and_rollback(s: &mut Side) {
    let a = s.client();
    s.x(
        a,
        "Parse",
        &[parse("r1", "SELECT 10 / $1::int4", &[])],
        "1 Z[I]",
    );
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(a, "division by zero", &[run("r1", &["0"])], "E[22012] Z[E]");
    s.x(
        a,
        "failed transaction",
        &[run("r1", &["5"])],
        "E[25P02] Z[E]",
    );
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "after rollback",
        &[run("r1", &["5"])],
        "2 D[2] C[SELECT 1] Z[I]",
    );
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(
        a,
        "Parse in a transaction",
        &[parse("r2", "SELECT 'r2'", &[])],
        "1 Z[T]",
    );
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "still there",
        &[run("r2", &[])],
        "2 D[r2] C[SELECT 1] Z[I]",
    );
    s.q(a, "SELECT 1/0", "E[22012] Z[I]");
    s.x(
        a,
        "after a simple query error",
        &[run("r1", &["2"])],
        "2 D[5] C[SELECT 1] Z[I]",
    );
}

/// Binary parameters and results, mixed with text and NULL, and malformed binary values.
pub fn binary_parameters_and_results(s: &mut Side) {
    let a = s.client();
    let sql = "SELECT $1 + 1 AS n, $2 AS raw, $3 AS t";
    s.x(
        a,
        "Parse with types",
        &[parse("b1", sql, &[INT4, BYTEA, TEXT])],
        "1 Z[I]",
    );
    let n = 42i32.to_be_bytes();
    let all = bind_with(
        "",
        "b1",
        &[1],
        &[Some(&n), Some(&[0, 1, 2, 255]), None],
        &[1],
    );
    let want = "2 D[0x0000002b,0x000102ff,NULL] C[SELECT 1] Z[I]";
    s.x(a, "all binary", &[all, execute("", 0)], want);
    let values = [Some(&n[..]), Some(&b"\\x00ff"[..]), Some(&b"hi"[..])];
    let mixed = bind_with("", "b1", &[1, 0, 0], &values, &[0, 1, 0]);
    s.x(
        a,
        "mixed",
        &[mixed, execute("", 0)],
        "2 D[43,0x00ff,hi] C[SELECT 1] Z[I]",
    );
    let short = bind_with("", "b1", &[1], &[Some(&[0, 0, 1]), None, None], &[]);
    s.x(a, "3-byte int4", &[short, execute("", 0)], "E[08P01] Z[I]");
    let long = bind_with("", "b1", &[1], &[Some(&[0, 0, 0, 0, 1]), None, None], &[]);
    s.x(a, "5-byte int4", &[long, execute("", 0)], "E[22P03] Z[I]");
}

/// Execute with a row limit suspends the portal (PortalSuspended): inside a transaction,
/// with two portals interleaved, and outside one across Flush until Sync; portals end
/// with Close, Sync (outside a transaction) or COMMIT.
pub fn portal_row_limits(s: &mut Side) {
    let a = s.client();
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    let sql = "SELECT generate_series(1, 5) AS g";
    let bytes = [
        parse("m1", sql, &[]),
        bind("cur", "m1", &[]),
        execute("cur", 2),
        execute("cur", 2),
    ];
    s.x(
        a,
        "two rows twice",
        &bytes,
        "1 2 D[1] D[2] s D[3] D[4] s Z[T]",
    );
    s.x(a, "the rest", &[execute("cur", 0)], "D[5] C[SELECT 1] Z[T]");
    s.x(a, "exhausted", &[execute("cur", 0)], "C[SELECT 0] Z[T]");
    let two = [
        bind("p2", "m1", &[]),
        execute("p2", 1),
        execute("cur", 1),
        execute("p2", 1),
    ];
    s.x(
        a,
        "second portal, interleaved",
        &two,
        "2 D[1] s C[SELECT 0] D[2] s Z[T]",
    );
    s.x(a, "Close portal", &[close(b'P', "cur")], "3 Z[T]");
    s.x(a, "closed", &[execute("cur", 1)], "E[34000] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    let bytes = msgs(&[bind("", "m1", &[]), execute("", 2), flush()]);
    s.run_until(a, "row limit and Flush", &bytes, b's', "2 D[1] D[2] s");
    s.x(
        a,
        "the rest",
        &[execute("", 0)],
        "D[3] D[4] D[5] C[SELECT 3] Z[I]",
    );
    s.x(a, "gone after Sync", &[execute("", 1)], "E[34000] Z[I]");
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    let bytes = [bind("c2", "m1", &[]), execute("c2", 1)];
    s.x(a, "portal in a transaction", &bytes, "2 D[1] s Z[T]");
    s.q(a, "COMMIT", "C[COMMIT] Z[I]");
    s.x(a, "gone after COMMIT", &[execute("c2", 1)], "E[34000] Z[I]");
}

/// A portal suspended in a transaction keeps delivering rows after its statement is
/// closed (Close) or, through the proxy, evicted from the server connection.
pub fn portal_outlives_its_statement(s: &mut Side) {
    let a = s.client();
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    let sql = "SELECT generate_series(1, 5)";
    let bytes = [
        parse("c1", sql, &[]),
        bind("cur", "c1", &[]),
        execute("cur", 2),
    ];
    s.x(a, "two rows", &bytes, "1 2 D[1] D[2] s Z[T]");
    evict(s, a, "c1");
    s.x(a, "one more", &[execute("cur", 1)], "D[3] s Z[T]");
    s.x(a, "Close the statement", &[close(b'S', "c1")], "3 Z[T]");
    s.x(
        a,
        "the rest",
        &[execute("cur", 0)],
        "D[4] D[5] C[SELECT 2] Z[T]",
    );
    s.q(a, "COMMIT", "C[COMMIT] Z[I]");
}

/// Statement names belong to their session: three clients use one name for different
/// statements (two differ only in the declared parameter type), interleaved on shared
/// server connections; DEALLOCATE by one leaves the others; a new client has none.
pub fn names_are_per_client(s: &mut Side) {
    let (a, b, c) = (s.client(), s.client(), s.client());
    let pa = [parse("n", "SELECT $1 AS v", &[INT4]), describe(b'S', "n")];
    s.x(a, "int4 version", &pa, "1 t[23] T[v:23] Z[I]");
    let pb = [parse("n", "SELECT $1 AS v", &[TEXT]), describe(b'S', "n")];
    s.x(b, "text version", &pb, "1 t[25] T[v:25] Z[I]");
    s.x(
        c,
        "constant",
        &[parse("n", "SELECT 'c' AS v", &[])],
        "1 Z[I]",
    );
    for _ in 0..3 {
        s.x(a, "a", &[run("n", &["7"])], "2 D[7] C[SELECT 1] Z[I]");
        s.x(
            b,
            "b",
            &[run("n", &["seven"])],
            "2 D[seven] C[SELECT 1] Z[I]",
        );
        s.x(c, "c", &[run("n", &[])], "2 D[c] C[SELECT 1] Z[I]");
        s.x(a, "a's is typed", &[run("n", &["x"])], "E[22P02] Z[I]");
    }
    s.q(a, "DEALLOCATE n", "C[DEALLOCATE] Z[I]");
    s.x(a, "a's is gone", &[run("n", &["7"])], "E[26000] Z[I]");
    s.x(
        b,
        "b's remains",
        &[run("n", &["seven"])],
        "2 D[seven] C[SELECT 1] Z[I]",
    );
    let d = s.client();
    s.x(
        d,
        "a new client has none",
        &[run("n", &[])],
        "E[26000] Z[I]",
    );
}

/// SQL DEALLOCATE of protocol-level statements: names fold to lower case unless quoted,
/// the optional PREPARE keyword, a missing name (26000), inside a transaction, ALL.
pub fn sql_deallocate_by_name(s: &mut Side) {
    let a = s.client();
    let two = [
        parse("Mixed", "SELECT 1", &[]),
        parse("plain", "SELECT 2", &[]),
    ];
    s.x(a, "Parse two", &two, "1 1 Z[I]");
    s.q(a, "DEALLOCATE Mixed", "E[26000] Z[I]");
    s.q(a, "DEALLOCATE \"Mixed\"", "C[DEALLOCATE] Z[I]");
    s.x(a, "gone", &[run("Mixed", &[])], "E[26000] Z[I]");
    s.q(a, "deallocate prepare plain;", "C[DEALLOCATE] Z[I]");
    s.x(a, "gone", &[run("plain", &[])], "E[26000] Z[I]");
    s.q(a, "DEALLOCATE nope", "E[26000] Z[I]");
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    s.x(a, "Parse", &[parse("t1", "SELECT 3", &[])], "1 Z[T]");
    s.q(a, "DEALLOCATE t1", "C[DEALLOCATE] Z[T]");
    s.q(a, "COMMIT", "C[COMMIT] Z[I]");
    s.x(a, "gone", &[run("t1", &[])], "E[26000] Z[I]");
    s.q(a, "DEALLOCATE ALL", "C[DEALLOCATE ALL] Z[I]");
}

/// Inside a transaction the unnamed statement survives a Sync; a simple Query destroys
/// it, but not named statements.
pub fn simple_query_drops_only_the_unnamed(s: &mut Side) {
    let a = s.client();
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    let both = [
        parse("", "SELECT 'u'", &[]),
        parse("kept", "SELECT 'k'", &[]),
    ];
    s.x(a, "Parse both", &both, "1 1 Z[T]");
    s.x(
        a,
        "unnamed after Sync",
        &[run("", &[])],
        "2 D[u] C[SELECT 1] Z[T]",
    );
    s.q(a, "SELECT 1", "T[?column?:23] D[1] C[SELECT 1] Z[T]");
    s.x(a, "unnamed gone", &[run("", &[])], "E[26000] Z[E]");
    s.q(a, "ROLLBACK", "C[ROLLBACK] Z[I]");
    s.x(
        a,
        "named kept",
        &[run("kept", &[])],
        "2 D[k] C[SELECT 1] Z[I]",
    );
}

/// Unknown names in pipelines: a Bind (26000) skips to Sync; Close then Bind of one name
/// in one pipeline; Describe of a missing name skips a following Parse.
pub fn unknown_names_in_pipelines(s: &mut Side) {
    let a = s.client();
    let bytes = [
        parse("", "SELECT 1", &[]),
        run("nope", &[]),
        pbe("", "SELECT 2", &[]),
    ];
    s.x(a, "Bind of a missing name", &bytes, "1 E[26000] Z[I]");
    let bytes = [
        parse("k", "SELECT 'k'", &[]),
        close(b'S', "k"),
        run("k", &[]),
    ];
    s.x(a, "Close then Bind", &bytes, "1 3 E[26000] Z[I]");
    let bytes = [describe(b'S', "nope"), parse("k", "SELECT 'k'", &[])];
    s.x(a, "Describe skips Parse", &bytes, "E[26000] Z[I]");
    s.x(a, "never created", &[run("k", &[])], "E[26000] Z[I]");
    s.x(
        a,
        "Close of a missing name",
        &[close(b'S', "nope")],
        "3 Z[I]",
    );
}

/// SQL-level PREPARE/EXECUTE: refused with 0A000 by the proxy in transaction mode (the
/// server-side statement would stay on a connection other clients get), which aborts an
/// open transaction as an error does. PostgreSQL accepts them.
pub fn sql_prepare_refused(s: &mut Side) {
    let a = s.client();
    let each = [
        ("PREPARE x AS SELECT 1", "C[PREPARE] Z[I]", "E[0A000] Z[I]"),
        (
            "EXECUTE x",
            "T[?column?:23] D[1] C[SELECT 1] Z[I]",
            "E[0A000] Z[I]",
        ),
        ("DEALLOCATE x", "C[DEALLOCATE] Z[I]", "E[26000] Z[I]"),
        ("BEGIN", "C[BEGIN] Z[T]", "C[BEGIN] Z[T]"),
        ("prepare y as select 2", "C[PREPARE] Z[T]", "E[0A000] Z[E]"),
        ("ROLLBACK", "C[ROLLBACK] Z[I]", "C[ROLLBACK] Z[I]"),
    ];
    for (sql, postgres, proxy) in each {
        s.run_each(a, sql, &query(sql), postgres, proxy);
    }
}
