"""psycopg 3 through launch-proxy, with the driver's defaults (prepare_threshold 5).

Run by tests/clients.rs, several processes at once against a pool of two server
connections. Connection parameters come from PGHOST, PGPORT, PGUSER, PGPASSWORD and
PGDATABASE; argv[1] is a worker number that keeps the processes' tables apart.
Exits 1 with a message on the first error or wrong result; prints one success line.
"""

import os
import sys
import traceback
from decimal import Decimal

WORKER = int(sys.argv[1]) if len(sys.argv) > 1 else 0
TAG = f"psycopg worker {WORKER}"


def fail(msg):
    print(f"{TAG}: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def prepared_names(conn):
    """How many statements psycopg believes are prepared server-side (internal state,
    read only to prove that the test exercised named statements)."""
    return len(getattr(getattr(conn, "_prepared", None), "_names", {}) or {})


def main():
    import psycopg

    params = {
        "host": os.environ["PGHOST"],
        "port": os.environ["PGPORT"],
        "user": os.environ["PGUSER"],
        "password": os.environ["PGPASSWORD"],
        "dbname": os.environ["PGDATABASE"],
    }
    table = f"psycopg_w{WORKER}"
    with psycopg.connect(**params) as conn:
        check(conn.prepare_threshold == 5, f"prepare_threshold is {conn.prepare_threshold}")
        check(not conn.autocommit, "autocommit is on by default")
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, label text, amount numeric)")
        conn.commit()

        select = "SELECT %s::int * 3 AS n, %s::text || '!' AS s, %s::numeric / 4 AS q"
        insert = f"INSERT INTO {table} (id, label, amount) VALUES (%s, %s, %s)"

        # Autocommit off: 20 runs of the same queries over 10 transactions.
        for i in range(20):
            row = conn.execute(select, (i, f"v{i}", i)).fetchone()
            check(row == (i * 3, f"v{i}!", Decimal(i) / 4), f"select #{i} (autocommit off) returned {row!r}")
            conn.execute(insert, (i, f"l{i}", Decimal(i) / 4))
            if i % 2 == 1:
                conn.commit()
        conn.commit()
        prepared_off = prepared_names(conn)
        check(prepared_off >= 2, f"psycopg prepared {prepared_off} statements, expected >= 2")

        # A failed transaction: psycopg rolls back and forgets (DEALLOCATE ALL) its
        # statements; the same queries must prepare again and keep working.
        try:
            conn.execute(insert, (0, "duplicate", 0))
            fail("inserting a duplicate key succeeded")
        except psycopg.errors.UniqueViolation:
            conn.rollback()
        for i in range(20, 30):
            row = conn.execute(select, (i, f"v{i}", i)).fetchone()
            check(row == (i * 3, f"v{i}!", Decimal(i) / 4), f"select #{i} (after rollback) returned {row!r}")
            conn.execute(insert, (i, f"l{i}", Decimal(i) / 4))
            conn.commit()

        # Autocommit on: every statement is its own transaction.
        conn.autocommit = True
        count_q = f"SELECT count(*), coalesce(sum(amount), 0) FROM {table} WHERE id < %s"
        for i in range(20):
            row = conn.execute(select, (-i, f"a{i}", -i)).fetchone()
            check(row == (-i * 3, f"a{i}!", Decimal(-i) / 4), f"select #{i} (autocommit on) returned {row!r}")
            n, total = conn.execute(count_q, (10,)).fetchone()
            check(n == 10 and total == Decimal(45) / 4, f"count #{i} returned {n}, {total}")
        # An explicit transaction block inside autocommit mode.
        with conn.transaction():
            for i in range(30, 40):
                conn.execute(insert, (i, f"t{i}", Decimal(i) / 4))
                row = conn.execute(select, (i, "in-tx", i)).fetchone()
                check(row[0] == i * 3, f"select in transaction block returned {row!r}")

        # executemany (pipelined by psycopg), in autocommit and in a transaction.
        with conn.cursor() as cur:
            cur.executemany(insert, [(i, f"m{i}", Decimal(i) / 4) for i in range(40, 70)])
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.executemany(insert, [(i, f"m{i}", Decimal(i) / 4) for i in range(70, 100)])
        conn.commit()

        n, total, labels = conn.execute(
            f"SELECT count(*), sum(amount), count(DISTINCT label) FROM {table}"
        ).fetchone()
        expected_total = Decimal(sum(range(100))) / 4
        check(n == 100 and total == expected_total and labels == 100, f"table holds {n} rows, sum {total}, {labels} labels")
        conn.commit()
        prepared_end = prepared_names(conn)
    print(
        f"{TAG}: OK (100 rows; {prepared_off} statements prepared before the rollback, {prepared_end} at the end)",
        flush=True,
    )


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any driver error fails the test
        traceback.print_exc()
        fail(f"{type(exc).__name__}: {exc}")
