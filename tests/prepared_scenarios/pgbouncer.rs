//! Situations from PgBouncer's prepared-statement tests, re-created as scenarios.

use super::*;

/// A client's statements keep working while another client holds, in a transaction, the
/// server connection they were prepared on: they run on the other one, prepared there on
/// the fly. The second client prepares the same text under its own name.
/// (PgBouncer: test_prepared_statement, test_prepared_statement_params.)
pub fn reuse_across_server_connections(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    s.q(a, "BEGIN", "C[BEGIN] Z[T]");
    let prepared_on = s.rows(a, "SELECT pg_backend_pid()");
    let first = [
        pbe("s1", "SELECT 1", &[]),
        pbe("s2", "SELECT $1::int4 + 1", &["41"]),
    ];
    s.x(
        a,
        "a prepares",
        &first,
        "1 2 D[1] C[SELECT 1] 1 2 D[42] C[SELECT 1] Z[T]",
    );
    s.q(a, "COMMIT", "C[COMMIT] Z[I]");
    let mut holders = Vec::new();
    for round in 0..4 {
        s.q(b, "BEGIN", "C[BEGIN] Z[T]");
        holders.extend(s.rows(b, "SELECT pg_backend_pid()"));
        let again = [run("s1", &[]), run("s2", &[&round.to_string()])];
        let want = format!("2 D[1] C[SELECT 1] 2 D[{}] C[SELECT 1] Z[I]", round + 1);
        s.x(a, "a runs s1 and s2", &again, &want);
        if round == 0 {
            let mine = [pbe("q", "SELECT 1", &[])];
            s.x(
                b,
                "b prepares the same text",
                &mine,
                "1 2 D[1] C[SELECT 1] Z[T]",
            );
        } else {
            s.x(b, "b runs it", &[run("q", &[])], "2 D[1] C[SELECT 1] Z[T]");
        }
        s.q(b, "COMMIT", "C[COMMIT] Z[I]");
    }
    if s.proxy {
        // While b held the connection a prepared on, a ran its statements on another one.
        let moved = holders.iter().any(|h| prepared_on.contains(h));
        let what = format!("prepared on {prepared_on:?}, b held {holders:?}: a never moved");
        s.require(moved, &what);
    }
}

/// `DEALLOCATE ALL` drops the statements of the client that sends it, not another
/// client's statement of the same text. (PgBouncer: test_deallocate_all.)
pub fn deallocate_all_is_per_client(s: &mut Side) {
    reset_is_per_client(s, "DEALLOCATE ALL");
}

/// The same for `DISCARD ALL`, also sent through the extended protocol.
/// (PgBouncer: test_discard_all.)
pub fn discard_all_is_per_client(s: &mut Side) {
    reset_is_per_client(s, "DISCARD ALL");
    let a = s.client();
    s.x(
        a,
        "prepare",
        &[pbe("s0", "SELECT 0", &[])],
        "1 2 D[0] C[SELECT 1] Z[I]",
    );
    let discard = [pbe("", "DISCARD ALL", &[])];
    s.x(
        a,
        "extended DISCARD ALL",
        &discard,
        "1 2 C[DISCARD ALL] Z[I]",
    );
    s.x(a, "statement is gone", &[run("s0", &[])], "E[26000] Z[I]");
    let reuse = [pbe("s0", "SELECT 10", &[])];
    s.x(a, "name is free", &reuse, "1 2 D[10] C[SELECT 1] Z[I]");
}

fn reset_is_per_client(s: &mut Side, sql: &str) {
    let (a, b) = (s.client(), s.client());
    let prepare = [pbe("s1", "SELECT 1", &[])];
    let again = [run("s1", &[])];
    s.x(a, "a prepares", &prepare, "1 2 D[1] C[SELECT 1] Z[I]");
    s.x(a, "a runs it again", &again, "2 D[1] C[SELECT 1] Z[I]");
    s.x(
        b,
        "b prepares the same",
        &prepare,
        "1 2 D[1] C[SELECT 1] Z[I]",
    );
    s.q(a, sql, &format!("C[{sql}] Z[I]"));
    s.x(
        b,
        "b's statement remains",
        &again,
        "2 D[1] C[SELECT 1] Z[I]",
    );
    s.x(a, "a's statement is gone", &again, "E[26000] Z[I]");
    let reuse = [pbe("s1", "SELECT 11", &[])];
    s.x(a, "a reuses the name", &reuse, "1 2 D[11] C[SELECT 1] Z[I]");
    s.x(
        b,
        "b's statement still remains",
        &again,
        "2 D[1] C[SELECT 1] Z[I]",
    );
}

/// A 1 MiB query text in a named Parse, two 64 KiB Parses in one pipeline and a 2 MiB
/// parameter in a named Bind arrive intact (the server's md5 of them, and the 2 MiB value
/// echoed back, must agree). (PgBouncer: test_parse_larger_than_pkt_buf,
/// test_bind_larger_than_pkt_buf, test_pipeline_with_half_pkt_buf_prepare.)
pub fn large_parse_and_bind(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    let big = "1".repeat(1 << 20);
    let sql = format!("SELECT length('{big}'), md5('{big}')");
    s.x(a, "1 MiB Parse", &[pbe("big1", &sql, &[])], "");
    s.x(a, "run it again", &[run("big1", &[])], "");
    let param: String = (0..2 << 20)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let half = |c: char| format!("SELECT '{}'", c.to_string().repeat(64 << 10));
    let two = [parse("h1", &half('a'), &[]), parse("h2", &half('b'), &[])];
    s.x(a, "two 64 KiB Parses, one Sync", &two, "1 1 Z[I]");
    s.x(a, "run both", &[run("h1", &[]), run("h2", &[])], "");
    let sql = "SELECT length($1::text), md5($1::text), $1::text";
    s.x(
        a,
        "2 MiB Bind parameter",
        &[pbe("big2", sql, &[&param])],
        "",
    );
    s.x(b, "same, another client", &[pbe("b", sql, &[&param])], "");
}

/// A 9,000-byte statement name: Parse, Describe, Bind/Execute, Close, then Describe fails;
/// a Flush followed by a Parse with a long name. (PgBouncer:
/// test_statement_name_longer_than_pkt_buf, test_pipeline_flushes_on_full_pkt_buf.
/// PostgreSQL drops the connection on a Describe or Close message over 10,000 bytes, so the
/// names stay below that.)
pub fn long_statement_name(s: &mut Side) {
    let a = s.client();
    let name = "n".repeat(9_000);
    s.x(
        a,
        "Parse",
        &[parse(&name, "SELECT $1::text", &[])],
        "1 Z[I]",
    );
    s.x(
        a,
        "Describe",
        &[describe(b'S', &name)],
        "t[25] T[text:25] Z[I]",
    );
    s.x(
        a,
        "run",
        &[run(&name, &["abc"])],
        "2 D[abc] C[SELECT 1] Z[I]",
    );
    s.x(a, "Close", &[close(b'S', &name)], "3 Z[I]");
    s.x(
        a,
        "Describe after Close",
        &[describe(b'S', &name)],
        "E[26000] Z[I]",
    );
    let other = [flush(), parse(&"p".repeat(8_000), "SELECT 1", &[])];
    s.x(a, "Flush, then Parse with a long name", &other, "1 Z[I]");
}

/// Describe of a statement or portal that does not exist is an error and the session
/// goes on. (PgBouncer: test_describe_non_existent_prepared_statement, where PgBouncer
/// itself closes the connection; PostgreSQL answers 26000 / 34000.)
pub fn describe_missing(s: &mut Side) {
    let a = s.client();
    s.x(
        a,
        "Describe statement",
        &[describe(b'S', "nope")],
        "E[26000] Z[I]",
    );
    s.x(
        a,
        "Describe portal",
        &[describe(b'P', "nope")],
        "E[34000] Z[I]",
    );
    s.q(a, "SELECT 1", "T[?column?:23] D[1] C[SELECT 1] Z[I]");
}

/// Close of a statement; Close of a missing statement or portal is no error; Describe
/// after Close fails; the name is free again. (PgBouncer: test_close_prepared_statement.)
pub fn close_statement(s: &mut Side) {
    let a = s.client();
    s.x(a, "Parse", &[parse("test", "SELECT 1", &[])], "1 Z[I]");
    s.x(a, "Close", &[close(b'S', "test")], "3 Z[I]");
    s.x(a, "Close again", &[close(b'S', "test")], "3 Z[I]");
    s.x(
        a,
        "Close of a missing portal",
        &[close(b'P', "nope")],
        "3 Z[I]",
    );
    s.x(a, "Describe", &[describe(b'S', "test")], "E[26000] Z[I]");
    let again = [pbe("test", "SELECT 2", &[])];
    s.x(a, "name is free", &again, "1 2 D[2] C[SELECT 1] Z[I]");
}

/// A second Parse of an existing name is refused (42P05), whatever the text, also inside
/// a pipeline (which is then skipped); the original statement stays.
/// (PgBouncer: test_prepared_disallow_name_reuse.)
pub fn name_reuse_refused(s: &mut Side) {
    let a = s.client();
    s.x(a, "Parse", &[parse("test", "SELECT 1", &[])], "1 Z[I]");
    s.x(
        a,
        "same text",
        &[parse("test", "SELECT 1", &[])],
        "E[42P05] Z[I]",
    );
    s.x(
        a,
        "other text",
        &[parse("test", "SELECT 2", &[])],
        "E[42P05] Z[I]",
    );
    s.x(
        a,
        "in a pipeline",
        &[pbe("test", "SELECT 2", &[])],
        "E[42P05] Z[I]",
    );
    s.x(
        a,
        "original remains",
        &[run("test", &[])],
        "2 D[1] C[SELECT 1] Z[I]",
    );
}

/// Pipelines mixing a text prepared by another client, new and unnamed statements, in
/// either order. (PgBouncer: test_prepared_statement_pipeline.)
pub fn pipeline_prepared_and_unprepared(s: &mut Side) {
    let (w, y, z) = (s.client(), s.client(), s.client());
    s.x(
        w,
        "warm",
        &[pbe("p1", "SELECT 1", &[])],
        "1 2 D[1] C[SELECT 1] Z[I]",
    );
    let (n1, n2, un) = (
        pbe("n1", "SELECT 1", &[]),
        pbe("n2", "SELECT 2", &[]),
        pbe("", "SELECT 3", &[]),
    );
    let bytes = [n2.clone(), n1.clone(), un.clone(), run("n1", &[])];
    let want = "1 2 D[2] C[SELECT 1] 1 2 D[1] C[SELECT 1] 1 2 D[3] C[SELECT 1] \
                2 D[1] C[SELECT 1] Z[I]";
    s.x(y, "new, known, unnamed, known again", &bytes, want);
    let bytes = [un, n2, n1, run("n1", &[])];
    let want = "1 2 D[3] C[SELECT 1] 1 2 D[2] C[SELECT 1] 1 2 D[1] C[SELECT 1] \
                2 D[1] C[SELECT 1] Z[I]";
    s.x(z, "unnamed first", &bytes, want);
}

/// An error ends a pipeline at Sync; the next pipeline prepares and runs normally.
/// (PgBouncer: test_prepared_statement_pipeline_error.)
pub fn pipeline_error_then_prepared(s: &mut Side) {
    let (w, y) = (s.client(), s.client());
    s.x(
        w,
        "warm",
        &[pbe("p1", "SELECT 1", &[])],
        "1 2 D[1] C[SELECT 1] Z[I]",
    );
    s.x(y, "error", &[pbe("", "SELECT aaaa", &[])], "E[42703] Z[I]");
    s.x(
        y,
        "then prepared",
        &[pbe("p", "SELECT 1", &[])],
        "1 2 D[1] C[SELECT 1] Z[I]",
    );
}

/// The error arrives (after Flush) before the client sends the rest of the pipeline and
/// its Sync: everything up to that Sync is still skipped.
/// (PgBouncer: test_prepared_statement_pipeline_error_delayed_sync.)
pub fn pipeline_error_with_delayed_sync(s: &mut Side) {
    let y = s.client();
    let bad = msgs(&[pbe("", "SELECT aaaa", &[]), flush()]);
    s.run_until(y, "error after Flush", &bad, b'E', "E[42703]");
    s.send(y, &msgs(&[pbe("", "SELECT 123", &[]), flush()]));
    s.run(y, "late Sync", &sync(), "Z[I]");
    s.x(
        y,
        "then prepared",
        &[pbe("p", "SELECT 1", &[])],
        "1 2 D[1] C[SELECT 1] Z[I]",
    );
}

/// A Parse that fails leaves no statement; once the table exists the same name and text
/// prepare fine. (PgBouncer: test_prepared_failed_prepare.)
pub fn failed_prepare_then_create_table(s: &mut Side) {
    let a = s.client();
    s.x(
        a,
        "Parse fails",
        &[parse("q", "SELECT a FROM fp_t", &[])],
        "E[42P01] Z[I]",
    );
    s.x(a, "no statement", &[run("q", &[])], "E[26000] Z[I]");
    s.q(a, "CREATE TABLE fp_t (a int)", "C[CREATE TABLE] Z[I]");
    let again = [pbe("q", "SELECT a FROM fp_t", &[])];
    s.x(a, "Parse succeeds", &again, "1 2 C[SELECT 0] Z[I]");
    s.q(a, "DROP TABLE fp_t", "C[DROP TABLE] Z[I]");
}

/// A failed Parse in a pipeline skips the rest, including a later Parse, which therefore
/// creates nothing: that name is free afterwards, and another client can prepare the
/// same text. The same after an error reported before the Parse arrives.
/// (PgBouncer: test_prepared_failed_prepare_pipeline.)
pub fn failed_prepare_in_pipeline(s: &mut Side) {
    let (a, d) = (s.client(), s.client());
    let bytes = [
        pbe("a", "SELECT 1", &[]),
        pbe("b", "SELECT a FROM fpp_t", &[]),
        pbe("c", "SELECT 2", &[]),
    ];
    s.x(
        a,
        "second Parse fails",
        &bytes,
        "1 2 D[1] C[SELECT 1] E[42P01] Z[I]",
    );
    s.x(
        a,
        "first exists",
        &[run("a", &[])],
        "2 D[1] C[SELECT 1] Z[I]",
    );
    s.x(a, "skipped one does not", &[run("c", &[])], "E[26000] Z[I]");
    let c = [pbe("c", "SELECT 2", &[])];
    s.x(a, "its name is free", &c, "1 2 D[2] C[SELECT 1] Z[I]");
    let other = [pbe("x", "SELECT 2", &[])];
    s.x(
        d,
        "another client, same text",
        &other,
        "1 2 D[2] C[SELECT 1] Z[I]",
    );
    s.q(a, "CREATE TABLE fpp_t (a int)", "C[CREATE TABLE] Z[I]");
    let b = [pbe("b", "SELECT a FROM fpp_t", &[])];
    s.x(a, "failed name is free", &b, "1 2 C[SELECT 0] Z[I]");
    s.q(a, "DROP TABLE fpp_t", "C[DROP TABLE] Z[I]");
    let bad = msgs(&[pbe("", "SELECT aaaa", &[]), flush()]);
    s.run_until(a, "error after Flush", &bad, b'E', "E[42703]");
    s.send(a, &msgs(&[pbe("s9", "SELECT 9", &[]), flush()]));
    s.run(a, "late Sync", &sync(), "Z[I]");
    let s9 = [pbe("s9", "SELECT 9", &[])];
    s.x(a, "skipped name is free", &s9, "1 2 D[9] C[SELECT 1] Z[I]");
}

/// Statements evicted from the server connection (cache of 2) are prepared again when
/// used, singly, in one pipeline and for Describe; the server never holds more than the
/// cache size. (PgBouncer: test_evict_statement_cache.)
pub fn evict_statement_cache(s: &mut Side) {
    let a = s.client();
    for i in 0..5 {
        let p = [pbe(
            &format!("e{i}"),
            &format!("SELECT '{i}'::text AS v"),
            &[],
        )];
        s.x(a, "prepare", &p, &format!("1 2 D[{i}] C[SELECT 1] Z[I]"));
    }
    let held = |s: &mut Side| s.rows(a, "SELECT count(*) FROM pg_prepared_statements");
    let count = held(s);
    if s.proxy {
        s.require(
            count == ["2"],
            &format!("server holds {count:?} statements, not 2"),
        );
    }
    for i in (0..5).rev() {
        let want = format!("2 D[{i}] C[SELECT 1] Z[I]");
        s.x(a, "run again", &[run(&format!("e{i}"), &[])], &want);
    }
    let all: Vec<Vec<u8>> = (0..10).map(|i| run(&format!("e{}", i % 5), &[])).collect();
    let want: Vec<String> = (0..10)
        .map(|i| format!("2 D[{}] C[SELECT 1]", i % 5))
        .collect();
    s.x(a, "all in one pipeline", &all, &(want.join(" ") + " Z[I]"));
    s.x(a, "Describe", &[describe(b'S', "e0")], "t[] T[v:25] Z[I]");
    let count = held(s);
    if s.proxy {
        s.require(
            count == ["2"],
            &format!("server holds {count:?} statements, not 2"),
        );
    }
}

/// A pipeline that fills the cache and then fails on a bad statement: the statements
/// before the error work afterwards and the failed name is free.
/// (PgBouncer: test_evict_statement_cache_pipeline_failure.)
pub fn evict_with_pipeline_failure(s: &mut Side) {
    let a = s.client();
    let bytes = [
        pbe("x1", "SELECT 1", &[]),
        pbe("x2", "SELECT 2", &[]),
        pbe("x3", "SELECT 3", &[]),
        parse("x4", "bad query", &[]),
    ];
    let ok = "1 2 D[1] C[SELECT 1] 1 2 D[2] C[SELECT 1] 1 2 D[3] C[SELECT 1]";
    s.x(
        a,
        "fill the cache, then fail",
        &bytes,
        &format!("{ok} E[42601] Z[I]"),
    );
    let bytes = [run("x1", &[]), run("x2", &[]), run("x3", &[])];
    let want = "2 D[1] C[SELECT 1] 2 D[2] C[SELECT 1] 2 D[3] C[SELECT 1] Z[I]";
    s.x(a, "the first three work", &bytes, want);
    let x4 = [pbe("x4", "SELECT 4", &[])];
    s.x(a, "failed name is free", &x4, "1 2 D[4] C[SELECT 1] Z[I]");
}

/// Pipelines of 1 to 8 statements drawn from 12 texts with 512-byte parameters, ten
/// pipelines of each length, on one server connection caching 2 statements.
/// (PgBouncer: test_prepared_statement_pipeline_stress.)
pub fn pipeline_stress_with_eviction(s: &mut Side) {
    let a = s.client();
    let mut seed: u32 = 12345;
    let mut known = [false; 12];
    for len in 1..=8 {
        for _ in 0..10 {
            let mut batch = Vec::new();
            for i in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let k = (seed >> 16) as usize % 12;
                let (name, value) = (format!("st{k}"), format!("{i:0>512}"));
                let params = [&i.to_string()[..], &value[..]];
                if std::mem::replace(&mut known[k], true) {
                    batch.push(run(&name, &params));
                } else {
                    let sql = format!("SELECT $1::int4 AS s{k}, $2::text");
                    batch.push(pbe(&name, &sql, &params));
                }
            }
            s.x(a, &format!("pipeline of {len}"), &batch, "");
        }
    }
}

/// A pipeline spans a Sync with more messages already sent after it: the client keeps
/// its server connection (and its unnamed statement) while another client waits for the
/// only one. (PgBouncer: test_pause_before_last_sync.)
pub fn pipeline_kept_until_last_sync(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    let sql = "SELECT $1::text";
    let first = [
        parse("", sql, &[]),
        bind("", "", &["a"]),
        execute("", 0),
        sync(),
        parse("", sql, &[]),
        flush(),
    ];
    s.send(a, &first.concat());
    s.recv(a, "first Sync", Wait::Ready(1), "1 2 D[a] C[SELECT 1] Z[I]");
    s.recv(a, "Parse after it", Wait::Tag(b'1'), "1");
    s.send(b, &msgs(&[query("BEGIN"), query("SELECT 1")]));
    let rest = [bind("", "", &["b"]), execute("", 0)];
    s.x(a, "rest of the pipeline", &rest, "2 D[b] C[SELECT 1] Z[I]");
    let want = "C[BEGIN] Z[T] T[?column?:23] D[1] C[SELECT 1] Z[T]";
    s.recv(b, "the waiting client", Wait::Ready(2), want);
    s.q(b, "COMMIT", "C[COMMIT] Z[I]");
}

/// Server connections are retired after three transactions (server_max_uses): a client's
/// statements are prepared again on every new connection, transparently.
pub fn statements_survive_connection_retirement(s: &mut Side) {
    let (a, b) = (s.client(), s.client());
    let both = [
        parse("r1", "SELECT $1::int4 * 2", &[]),
        parse("r2", "SELECT 'r2'", &[]),
    ];
    s.x(a, "prepare", &both, "1 1 Z[I]");
    let mut pids = Vec::new();
    for i in 0..12 {
        let bytes = [run("r1", &[&i.to_string()]), run("r2", &[])];
        let want = format!("2 D[{}] C[SELECT 1] 2 D[r2] C[SELECT 1] Z[I]", i * 2);
        s.x(a, "run both", &bytes, &want);
        s.x(
            b,
            "other client",
            &[pbe("", "SELECT 'b'", &[])],
            "1 2 D[b] C[SELECT 1] Z[I]",
        );
        pids.extend(s.rows(a, "SELECT pg_backend_pid()"));
    }
    if s.proxy {
        pids.sort();
        pids.dedup();
        let what = format!(
            "only {} server connections over 36 transactions",
            pids.len()
        );
        s.require(pids.len() >= 6, &what);
    }
}
