//! Micro-benchmarks of the relay's per-message work: finding message boundaries with
//! `protocol::framing::Frames` over buffers shaped like real traffic, and the encoders for
//! the messages the proxy writes itself.
//!
//!     cargo bench --bench framing            (docs/benchmarks.md)

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use launch_proxy::protocol::encode::{self, Severity};
use launch_proxy::protocol::framing::{self, backend, Frames};

/// Appends one message: tag, length, body.
fn msg(buf: &mut BytesMut, tag: u8, body: &[u8]) {
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(s.as_bytes());
    b.push(0);
}

fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    let mut b = Vec::new();
    b.extend_from_slice(&(columns.len() as i16).to_be_bytes());
    for c in columns {
        cstr(&mut b, c);
        b.extend_from_slice(&16_384i32.to_be_bytes()); // table oid
        b.extend_from_slice(&1i16.to_be_bytes()); // column number
        b.extend_from_slice(&25i32.to_be_bytes()); // text
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
    }
    msg(buf, b'T', &b);
}

fn data_row(buf: &mut BytesMut, values: &[&str]) {
    let mut b = Vec::new();
    b.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    msg(buf, b'D', &b);
}

fn command_complete(buf: &mut BytesMut, tag: &str) {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    msg(buf, b'C', &b);
}

/// The server's answer to a point read (pgbench -S or a base_entity lookup), `n` times.
fn point_reads(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..n {
        row_description(&mut buf, &["id", "version", "is_active", "updated_at"]);
        data_row(
            &mut buf,
            &[
                "01JBENCHE00001200000000042",
                "17",
                "t",
                "2026-11-25 15:57:01.123456+00",
            ],
        );
        command_complete(&mut buf, "SELECT 1");
        msg(&mut buf, backend::READY_FOR_QUERY, b"I");
    }
    buf
}

/// A 100-row result set.
fn result_set() -> BytesMut {
    let mut buf = BytesMut::new();
    row_description(&mut buf, &["id", "tenant_id", "version", "updated_at"]);
    for _ in 0..100 {
        data_row(
            &mut buf,
            &[
                "01JBENCHE00001200000000042",
                "01JBENCHT00000000000000012",
                "17",
                "2026-11-25 15:57:01.123456+00",
            ],
        );
    }
    command_complete(&mut buf, "SELECT 100");
    msg(&mut buf, backend::READY_FOR_QUERY, b"I");
    buf
}

/// A client's extended-protocol transaction: Parse, Bind, Describe, Execute, Sync, `n` times.
fn extended_requests(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..n {
        let mut p = Vec::new();
        cstr(&mut p, "");
        cstr(
            &mut p,
            "SELECT id, version, is_active, updated_at FROM base_entity WHERE id = $1",
        );
        p.extend_from_slice(&1i16.to_be_bytes());
        p.extend_from_slice(&25i32.to_be_bytes());
        msg(&mut buf, b'P', &p);
        let mut b = Vec::new();
        cstr(&mut b, "");
        cstr(&mut b, "");
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&26i32.to_be_bytes());
        b.extend_from_slice(b"01JBENCHE00001200000000042");
        b.extend_from_slice(&0i16.to_be_bytes());
        msg(&mut buf, b'B', &b);
        msg(&mut buf, b'D', b"P\0");
        msg(&mut buf, b'E', b"\0\0\0\0\0");
        msg(&mut buf, b'S', b"");
    }
    buf
}

/// Walks every complete message, as the relay does, and looks at the tags it cares about.
fn scan(buf: &[u8]) -> (usize, u8) {
    let mut frames = Frames::new(buf);
    let mut count = 0;
    let mut last_status = 0;
    for item in frames.by_ref() {
        let (at, h) = item.expect("well-formed buffer");
        count += 1;
        if h.tag == backend::READY_FOR_QUERY {
            last_status = framing::body(buf, at, h)[0];
        }
    }
    black_box(frames.consumed());
    (count, last_status)
}

fn bench_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    let inputs = [
        ("point_read_x1", point_reads(1)),
        ("point_read_x64", point_reads(64)),
        ("result_100_rows", result_set()),
        ("extended_tx_x16", extended_requests(16)),
    ];
    for (name, buf) in &inputs {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), buf, |b, buf| {
            b.iter(|| scan(black_box(buf)))
        });
    }
    // A read that ends in the middle of a message: the relay must stop there and learn how
    // much more it needs.
    let whole = point_reads(8);
    let cut = &whole[..whole.len() - 7];
    g.throughput(Throughput::Bytes(cut.len() as u64));
    g.bench_function("partial_tail", |b| {
        b.iter(|| {
            let mut f = Frames::new(black_box(cut));
            let n = f.by_ref().count();
            (n, f.pending_header().ok().flatten())
        })
    });
    g.finish();
}

fn bench_encoders(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let mut buf = BytesMut::with_capacity(1024);
    g.bench_function("ready_for_query", |b| {
        b.iter(|| {
            buf.clear();
            encode::ready_for_query(&mut buf, black_box(b'I'));
        })
    });
    g.bench_function("error_response", |b| {
        b.iter(|| {
            buf.clear();
            encode::error_response(
                &mut buf,
                Severity::Error,
                black_box("53300"),
                black_box("sorry, too many clients already"),
                Some("max_client_conn is 5000"),
                None,
            );
        })
    });
    g.bench_function("parameter_status", |b| {
        b.iter(|| {
            buf.clear();
            encode::parameter_status(&mut buf, black_box(b"application_name"), b"launch-load");
        })
    });
    g.bench_function("query_prelude_sized", |b| {
        let sql = "SET app.tenant_id = '01JBENCHT00000000000000012'; SET app.tenant_sig = \
                   '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843'";
        b.iter(|| {
            buf.clear();
            encode::query(&mut buf, black_box(sql));
        })
    });
    g.bench_function("startup_message", |b| {
        b.iter(|| {
            buf.clear();
            encode::startup_message(
                &mut buf,
                [
                    ("user", black_box("app")),
                    ("database", "launch"),
                    ("client_encoding", "UTF8"),
                ],
            );
        })
    });
    g.finish();
}

criterion_group!(benches, bench_frames, bench_encoders);
criterion_main!(benches);
