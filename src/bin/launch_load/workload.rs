//! One transaction of each workload, in the simple or the extended query protocol.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Error, SimpleQueryMessage};

use crate::ids;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The seed's tenant workload: point reads of base_entity, writes that update
    /// base_entity and insert into audit_log (one statement), mixed by --read-pct.
    Seed,
    /// `SELECT 1`.
    Select1,
    /// pgbench -S: `SELECT abalance FROM pgbench_accounts WHERE aid = <random>`.
    Pgbench,
    /// Connect every client, hold the connections idle for --duration, disconnect.
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One Query message per transaction, values inlined (they are generated ULIDs/integers).
    Simple,
    /// Parse/Bind/Execute/Sync with the unnamed statement (one round trip, no named
    /// prepared statements, so it works through PgBouncer's transaction mode).
    Extended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThinkDist {
    /// Exactly --think-ms between a client's transactions.
    Fixed,
    /// Exponentially distributed with mean --think-ms (a Poisson arrival process per client).
    Exp,
}

/// What kind of transaction ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxKind {
    Read,
    Write,
    Other,
}

/// A transaction that completed without an SQL error but did not do what it should: a
/// read found no row or a write touched none. Through a tenant-aware path this means the
/// tenant context was missing or wrong (row-level security hid the row).
pub const WRONG_RESULT: &str = "no-row";

/// Everything a client's transactions need besides the connection.
pub struct Workload {
    pub mode: Mode,
    pub protocol: Protocol,
    pub read_pct: u32,
    pub rows_per_tenant: u64,
    pub accounts: u64,
    pub think_ms: f64,
    pub think_dist: ThinkDist,
}

/// Per-client constants.
pub struct ClientCtx {
    pub tenant: usize,
    pub tenant_id: String,
    pub actor: String,
    /// `SET app.tenant_id = ...; SET app.tenant_sig = ...` when --set-tenant, else None.
    pub set_tenant: Option<String>,
}

impl ClientCtx {
    pub fn new(tenant: usize, key: Option<&[u8]>) -> ClientCtx {
        let tenant_id = ids::tenant_id(tenant);
        let set_tenant = key.map(|k| {
            format!(
                "SET app.tenant_id = '{tenant_id}'; SET app.tenant_sig = '{}'",
                ids::signature(k, &tenant_id)
            )
        });
        ClientCtx {
            tenant,
            actor: ids::actor_id(tenant),
            tenant_id,
            set_tenant,
        }
    }
}

/// xorshift64*: fast, deterministic per client, good enough to pick rows.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that neighbouring seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 1..=n.
    pub fn one_to(&mut self, n: u64) -> u64 {
        1 + self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Workload {
    /// The pause before a client's next transaction.
    pub fn think(&self, rng: &mut Rng) -> Duration {
        if self.think_ms <= 0.0 {
            return Duration::ZERO;
        }
        let ms = match self.think_dist {
            ThinkDist::Fixed => self.think_ms,
            // Capped at 20 means so that one draw cannot stall a short run.
            ThinkDist::Exp => (-(1.0 - rng.unit()).ln() * self.think_ms).min(self.think_ms * 20.0),
        };
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// Runs one transaction. `Ok(false)` means it completed but hit [`WRONG_RESULT`].
    pub async fn run_tx(
        &self,
        client: &Client,
        ctx: &ClientCtx,
        rng: &mut Rng,
    ) -> (TxKind, Result<bool, Error>) {
        match self.mode {
            Mode::Seed | Mode::Idle => {
                let entity = ids::entity_id(ctx.tenant, rng.one_to(self.rows_per_tenant));
                if rng.one_to(100) <= self.read_pct as u64 {
                    (TxKind::Read, self.read(client, ctx, &entity).await)
                } else {
                    (TxKind::Write, self.write(client, ctx, &entity).await)
                }
            }
            Mode::Select1 => (TxKind::Other, self.select1(client).await),
            Mode::Pgbench => {
                let aid = rng.one_to(self.accounts) as i32;
                (TxKind::Other, self.pgbench_select(client, aid).await)
            }
        }
    }

    async fn read(&self, client: &Client, ctx: &ClientCtx, entity: &str) -> Result<bool, Error> {
        const SQL: &str =
            "SELECT id, version, is_active, updated_at FROM base_entity WHERE id = $1";
        match self.protocol {
            Protocol::Simple => {
                let sql = with_prefix(&ctx.set_tenant, &SQL.replace("$1", &quote(entity)));
                let msgs = client.simple_query(&sql).await?;
                Ok(rows(&msgs) == 1)
            }
            Protocol::Extended => {
                let rows = in_tenant_tx(client, &ctx.set_tenant, async {
                    client.query_typed(SQL, &[(&entity, Type::TEXT)]).await
                })
                .await?;
                Ok(rows.len() == 1)
            }
        }
    }

    async fn write(&self, client: &Client, ctx: &ClientCtx, entity: &str) -> Result<bool, Error> {
        // One statement, so one round trip and atomic in every pooling mode.
        const SQL: &str = "WITH u AS (UPDATE base_entity SET version = version + 1, \
             updated_at = now(), updated_by = $2 WHERE id = $1 RETURNING id, tenant_id) \
             INSERT INTO audit_log (tenant_id, entity_id, entity_type, action, changes, performed_by) \
             SELECT tenant_id, id, 'base_entity', 'update', '{\"version\": \"+1\"}', $2 FROM u \
             RETURNING entity_id";
        match self.protocol {
            Protocol::Simple => {
                let sql = SQL
                    .replace("$1", &quote(entity))
                    .replace("$2", &quote(&ctx.actor));
                let msgs = client
                    .simple_query(&with_prefix(&ctx.set_tenant, &sql))
                    .await?;
                Ok(rows(&msgs) == 1)
            }
            Protocol::Extended => {
                let rows = in_tenant_tx(client, &ctx.set_tenant, async {
                    client
                        .query_typed(SQL, &[(&entity, Type::TEXT), (&ctx.actor, Type::TEXT)])
                        .await
                })
                .await?;
                Ok(rows.len() == 1)
            }
        }
    }

    async fn select1(&self, client: &Client) -> Result<bool, Error> {
        match self.protocol {
            Protocol::Simple => Ok(rows(&client.simple_query("SELECT 1").await?) == 1),
            Protocol::Extended => Ok(client.query_typed("SELECT 1", &[]).await?.len() == 1),
        }
    }

    async fn pgbench_select(&self, client: &Client, aid: i32) -> Result<bool, Error> {
        const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        match self.protocol {
            Protocol::Simple => {
                let sql = SQL.replace("$1", &aid.to_string());
                Ok(rows(&client.simple_query(&sql).await?) == 1)
            }
            Protocol::Extended => {
                Ok(client.query_typed(SQL, &[(&aid, Type::INT4)]).await?.len() == 1)
            }
        }
    }
}

/// Extended-protocol execution of `fut` inside `BEGIN; SET ...; SET ...` / `COMMIT` when the
/// client sets its tenant itself. The three requests are pipelined (one round trip) and
/// form one transaction, so a transaction-pooling PgBouncer keeps them on one server.
async fn in_tenant_tx<T>(
    client: &Client,
    set_tenant: &Option<String>,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(set) = set_tenant else {
        return fut.await;
    };
    let begin = format!("BEGIN; {set}");
    let (b, r, c) = tokio::join!(
        client.batch_execute(&begin),
        fut,
        client.batch_execute("COMMIT")
    );
    b?;
    let r = r?;
    c?;
    Ok(r)
}

fn with_prefix(prefix: &Option<String>, sql: &str) -> String {
    match prefix {
        Some(p) => format!("{p}; {sql}"),
        None => sql.to_owned(),
    }
}

/// A SQL string literal (standard_conforming_strings is on in every supported PostgreSQL).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn rows(msgs: &[SimpleQueryMessage]) -> usize {
    msgs.iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count()
}
