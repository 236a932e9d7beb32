// node-postgres (npm `pg`) through launch-proxy, with the driver's defaults.
//
// Run by tests/clients.rs with NODE_PATH pointing at a node_modules that holds `pg`.
// Several clients at once run named statements ({ name, text, values }: parsed once per
// connection, then only bound and executed) many times, inside and outside transactions,
// and a pg.Pool runs them too. Connection parameters come from PGHOST, PGPORT, PGUSER,
// PGPASSWORD and PGDATABASE. Exits 1 with a message on the first error or wrong result;
// prints one success line.
'use strict';

const { Client, Pool } = require('pg');

const CLIENTS = 4;
const ROUNDS = 25;

function params() {
  return {
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT),
    user: process.env.PGUSER,
    password: process.env.PGPASSWORD,
    database: process.env.PGDATABASE,
  };
}

function check(cond, msg) {
  if (!cond) throw new Error(`wrong result: ${msg}`);
}

async function worker(n) {
  const client = new Client(params());
  await client.connect();
  try {
    const table = `nodepg_w${n}`;
    await client.query(`DROP TABLE IF EXISTS ${table}`);
    await client.query(`CREATE TABLE ${table} (id int PRIMARY KEY, label text, qty int)`);
    for (let i = 0; i < ROUNDS; i++) {
      const r = await client.query({
        name: 'q1',
        text: 'SELECT $1::int * 2 AS doubled, $2::text AS label',
        values: [i, `v${i}`],
      });
      check(r.rows.length === 1 && r.rows[0].doubled === i * 2 && r.rows[0].label === `v${i}`,
        `client ${n} q1 #${i}: ${JSON.stringify(r.rows)}`);
      await client.query('BEGIN');
      await client.query({
        name: 'ins',
        text: `INSERT INTO ${table} (id, label, qty) VALUES ($1, $2, $3)`,
        values: [i, `l${i}`, i % 7],
      });
      const c = await client.query({
        name: 'cnt',
        text: `SELECT count(*)::int AS n, coalesce(sum(qty), 0)::int AS s FROM ${table} WHERE id <= $1`,
        values: [i],
      });
      check(c.rows[0].n === i + 1, `client ${n} cnt #${i}: ${JSON.stringify(c.rows)}`);
      await client.query(i % 5 === 4 ? 'ROLLBACK' : 'COMMIT');
      if (i % 5 === 4) {
        // Rolled back: insert it again outside a transaction.
        await client.query({
          name: 'ins',
          text: `INSERT INTO ${table} (id, label, qty) VALUES ($1, $2, $3)`,
          values: [i, `l${i}`, i % 7],
        });
      }
    }
    // A named statement that fails (duplicate key), then still works.
    let failed = false;
    try {
      await client.query({
        name: 'ins',
        text: `INSERT INTO ${table} (id, label, qty) VALUES ($1, $2, $3)`,
        values: [0, 'dup', 0],
      });
    } catch (e) {
      failed = e.code === '23505';
      if (!failed) throw e;
    }
    check(failed, `client ${n}: duplicate insert did not fail`);
    const fin = await client.query({
      name: 'cnt',
      text: `SELECT count(*)::int AS n, coalesce(sum(qty), 0)::int AS s FROM ${table} WHERE id <= $1`,
      values: [ROUNDS],
    });
    let sum = 0;
    for (let i = 0; i < ROUNDS; i++) sum += i % 7;
    check(fin.rows[0].n === ROUNDS && fin.rows[0].s === sum, `client ${n} final: ${JSON.stringify(fin.rows)}`);
  } finally {
    await client.end();
  }
}

async function poolUsers() {
  const pool = new Pool({ ...params(), max: 3 });
  try {
    const jobs = [];
    for (let i = 0; i < 40; i++) {
      jobs.push((async () => {
        const r = await pool.query({ name: 'pq', text: 'SELECT $1::int + 1 AS n', values: [i] });
        check(r.rows[0].n === i + 1, `pool pq #${i}: ${JSON.stringify(r.rows)}`);
      })());
    }
    await Promise.all(jobs);
  } finally {
    await pool.end();
  }
}

async function main() {
  const workers = [];
  for (let n = 0; n < CLIENTS; n++) workers.push(worker(n));
  await Promise.all(workers);
  await poolUsers();
  console.log(`node-postgres: OK (${CLIENTS} clients x ${ROUNDS} rounds of named statements, pool of 3 x 40)`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  console.error(`node-postgres: FAIL: ${e && e.message ? e.message : e}`);
  process.exit(1);
});
