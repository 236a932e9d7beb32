"""asyncpg through launch-proxy, with the driver's defaults (statement cache of 100).

Run by tests/clients.rs. Mode "connections" (argv[1], the default): several connections
work at once: fetch, fetchrow, fetchval, executemany and explicit statements repeated
across transactions, and a custom enum type (asyncpg introspects it with its own prepared
queries). Mode "pool": asyncpg.create_pool, which resets a connection when it is released.
Connection parameters come from PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE.
Exits 1 with a message on the first error or wrong result; prints one success line.
"""

import asyncio
import os
import sys
import traceback

CONNECTIONS = 4
ROUNDS = 20
TAG = "asyncpg"
# "connections" (default): several asyncpg.connect() connections; "pool": asyncpg.create_pool.
MODE = sys.argv[1] if len(sys.argv) > 1 else "connections"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def params():
    return {
        "host": os.environ["PGHOST"],
        "port": int(os.environ["PGPORT"]),
        "user": os.environ["PGUSER"],
        "password": os.environ["PGPASSWORD"],
        "database": os.environ["PGDATABASE"],
    }


async def worker(n):
    import asyncpg

    conn = await asyncpg.connect(**params())
    try:
        table = f"asyncpg_w{n}"
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, label text, mood asyncpg_mood)")
        for i in range(ROUNDS):
            rows = await conn.fetch("SELECT g, g * $1::int AS m FROM generate_series(1, 3) AS g", i)
            check([tuple(r) for r in rows] == [(g, g * i) for g in (1, 2, 3)], f"conn {n} fetch #{i}: {rows!r}")
            row = await conn.fetchrow("SELECT $1::text || '-' || $2::int AS s, $3::asyncpg_mood AS mood", "x", i, "happy")
            check(row["s"] == f"x-{i}" and row["mood"] == "happy", f"conn {n} fetchrow #{i}: {row!r}")
            val = await conn.fetchval("SELECT count(*) FROM pg_catalog.pg_class WHERE relname = $1", table)
            check(val == 1, f"conn {n} fetchval #{i}: {val!r}")
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", i, f"l{i}", "sad" if i % 2 else "ok")
                got = await conn.fetchval(f"SELECT label FROM {table} WHERE id = $1", i)
                check(got == f"l{i}", f"conn {n} in-transaction read #{i}: {got!r}")
        await conn.executemany(
            f"INSERT INTO {table} VALUES ($1, $2, $3)",
            [(i, f"m{i}", "happy") for i in range(ROUNDS, ROUNDS + 30)],
        )
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO {table} VALUES ($1, $2, $3)",
                [(i, f"t{i}", "ok") for i in range(ROUNDS + 30, ROUNDS + 40)],
            )
        # A rolled-back transaction leaves nothing and breaks nothing.
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", 1000, "gone", "ok")
                await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", 0, "duplicate", "ok")
            raise Failure(f"conn {n}: inserting a duplicate key succeeded")
        except asyncpg.UniqueViolationError:
            pass
        stmt = await conn.prepare(f"SELECT count(*), count(*) FILTER (WHERE mood = $1) FROM {table}")
        for _ in range(5):
            total, happy = await stmt.fetchrow("happy")
            check(total == ROUNDS + 40 and happy == 30, f"conn {n}: {total} rows, {happy} happy")
        return n
    finally:
        await conn.close()


async def pool_users():
    import asyncpg

    pool = await asyncpg.create_pool(**params(), min_size=2, max_size=3)
    try:

        async def use(i):
            async with pool.acquire() as conn:
                v = await conn.fetchval("SELECT $1::int + $2::int", i, 1)
                check(v == i + 1, f"pool query #{i}: {v!r}")
                async with conn.transaction():
                    v = await conn.fetchval("SELECT $1::text::asyncpg_mood", "ok")
                    check(v == "ok", f"pool enum #{i}: {v!r}")

        await asyncio.gather(*(use(i) for i in range(30)))
    finally:
        await pool.close()


async def main():
    import asyncpg

    setup = await asyncpg.connect(**params())
    try:
        await setup.execute("DROP TYPE IF EXISTS asyncpg_mood CASCADE")
        await setup.execute("CREATE TYPE asyncpg_mood AS ENUM ('sad', 'ok', 'happy')")
    finally:
        await setup.close()
    if MODE == "pool":
        await pool_users()
        print(f"{TAG} pool: OK (pool of 3 connections, 30 uses)", flush=True)
    else:
        done = await asyncio.gather(*(worker(n) for n in range(CONNECTIONS)))
        check(sorted(done) == list(range(CONNECTIONS)), f"workers returned {done!r}")
        print(f"{TAG} connections: OK ({CONNECTIONS} connections x {ROUNDS} rounds)", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except BaseException as exc:  # noqa: BLE001 - any driver error fails the test
        traceback.print_exc()
        print(f"{TAG} {MODE}: FAIL: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
