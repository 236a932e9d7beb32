//! The run itself: connect every client (bounded concurrency), start the busy ones, measure a
//! fixed window, stop. Every loop here ends at the deadline or after a bounded timeout.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout};
use tokio_postgres::{Client, Config, NoTls};

use crate::procfs;
use crate::report::{ProxyReport, Report, Stats};
use crate::workload::{ClientCtx, Rng, Workload, WRONG_RESULT};

/// One simulated client.
pub struct ClientSpec {
    pub config: Config,
    pub ctx: ClientCtx,
    pub busy: bool,
}

pub struct Plan {
    pub label: String,
    pub settings: serde_json::Value,
    pub clients: Vec<ClientSpec>,
    pub workload: Workload,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub tx_timeout: Duration,
    pub connect_per_tx: bool,
    pub proxy_pid: Option<u32>,
    pub seed: u64,
    pub quiet: bool,
}

/// Parses a libpq-style `key=value` string or a `postgresql://` URL.
pub fn parse_config(conninfo: &str, connect_timeout: Duration) -> Result<Config, String> {
    let mut c = Config::from_str(conninfo).map_err(|e| format!("{}: {e}", redact(conninfo)))?;
    c.connect_timeout(connect_timeout);
    Ok(c)
}

/// The connection string with its password replaced by `***` (for reports and errors).
pub fn redact(conninfo: &str) -> String {
    if let Some(scheme_end) = conninfo.find("://") {
        let rest = &conninfo[scheme_end + 3..];
        if let Some(at) = rest.find('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:***{}",
                    &conninfo[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return conninfo.to_owned();
    }
    conninfo
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Error class and message: the SQLSTATE when the server sent one.
pub fn classify(e: &tokio_postgres::Error) -> (String, String) {
    if let Some(db) = e.as_db_error() {
        return (
            db.code().code().to_owned(),
            format!("{}: {}", db.severity(), db.message()),
        );
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    let class = if e.is_closed() { "closed" } else { "io" };
    (class.to_owned(), msg)
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects with the configured timeout, recording the outcome in `stats`.
async fn timed_connect(config: &Config, limit: Duration, stats: &mut Stats) -> Option<Client> {
    let t0 = Instant::now();
    match timeout(limit, connect(config)).await {
        Ok(Ok(c)) => {
            stats.connected(t0.elapsed());
            Some(c)
        }
        Ok(Err(e)) => {
            let (class, msg) = classify(&e);
            stats.connect_failed += 1;
            stats.error(&format!("connect:{class}"), || msg);
            None
        }
        Err(_) => {
            stats.connect_failed += 1;
            stats.error("connect:timeout", || {
                format!("no connection within {} s", limit.as_secs_f64())
            });
            None
        }
    }
}

fn sample(pid: Option<u32>) -> Option<Result<procfs::ProcSample, String>> {
    pid.map(procfs::sample)
}

pub async fn run(plan: Plan) -> Report {
    let plan = Arc::new(plan);
    let n = plan.clients.len();
    let proxy_before = sample(plan.proxy_pid);

    // Phase 1: connect (busy clients with --connect-per-tx connect inside each transaction).
    let phase_start = Instant::now();
    let sem = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut attempted = 0u64;
    for i in 0..n {
        if plan.connect_per_tx && plan.clients[i].busy {
            continue;
        }
        attempted += 1;
        let plan = plan.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let mut stats = Stats::new();
            let client =
                timed_connect(&plan.clients[i].config, plan.connect_timeout, &mut stats).await;
            (i, client, stats)
        });
    }
    let mut connections: Vec<Option<Client>> = (0..n).map(|_| None).collect();
    let mut phase_stats = Stats::new();
    let mut last_progress = Instant::now();
    let mut done = 0usize;
    while let Some(joined) = set.join_next().await {
        if let Ok((i, client, stats)) = joined {
            connections[i] = client;
            phase_stats.merge(stats);
        }
        done += 1;
        if !plan.quiet && last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!("launch-load: {done}/{attempted} connection attempts done");
        }
    }
    let phase = phase_start.elapsed();
    let connected = phase_stats.connect.len();
    let proxy_connected = sample(plan.proxy_pid);
    if !plan.quiet {
        eprintln!(
            "launch-load: {connected}/{attempted} clients connected in {:.2} s; running {:.1} s{}",
            phase.as_secs_f64(),
            plan.duration.as_secs_f64(),
            if plan.warmup.is_zero() {
                String::new()
            } else {
                format!(" after {:.1} s of warm-up", plan.warmup.as_secs_f64())
            }
        );
    }

    // Phase 2: the busy clients run until `end`; idle clients just stay connected.
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut busy = JoinSet::new();
    let mut idle = Vec::new();
    for (i, conn) in connections.into_iter().enumerate() {
        if plan.clients[i].busy {
            let plan = plan.clone();
            busy.spawn(async move { client_loop(&plan, i, conn, measure_from, end).await });
        } else if let Some(c) = conn {
            idle.push(c);
        }
    }
    sleep_until(measure_from.into()).await;
    let proxy_start = sample(plan.proxy_pid);
    sleep_until(end.into()).await;
    let proxy_end = sample(plan.proxy_pid);
    let measured = Instant::now().saturating_duration_since(measure_from);

    // In-flight transactions end within tx_timeout; anything left after that is aborted.
    let mut stats = Stats::new();
    let grace = end + plan.tx_timeout + Duration::from_secs(5);
    loop {
        match timeout(
            grace.saturating_duration_since(Instant::now()),
            busy.join_next(),
        )
        .await
        {
            Ok(Some(Ok(s))) => stats.merge(s),
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                busy.abort_all();
                break;
            }
        }
    }
    drop(idle);

    let proxy = plan.proxy_pid.map(|pid| {
        let missing = || Err("not sampled".to_owned());
        ProxyReport::from_samples(
            pid,
            [
                proxy_before.unwrap_or_else(missing),
                proxy_connected.unwrap_or_else(missing),
                proxy_start.unwrap_or_else(missing),
                proxy_end.unwrap_or_else(missing),
            ],
            connected,
            stats.all.len(),
        )
    });

    Report::new(
        plan.label.clone(),
        plan.settings.clone(),
        phase_stats,
        stats,
        attempted,
        phase,
        measured,
        proxy,
    )
}

/// One busy client: transactions back to back (with think time) until `end`.
async fn client_loop(
    plan: &Plan,
    i: usize,
    mut conn: Option<Client>,
    measure_from: Instant,
    end: Instant,
) -> Stats {
    let spec = &plan.clients[i];
    let w = &plan.workload;
    let mut stats = Stats::new();
    let mut rng = Rng::new(plan.seed ^ (i as u64).wrapping_mul(0x9E37_79B9));
    // Spread the first transactions over a few milliseconds instead of one burst.
    let think = w.think(&mut rng);
    if !think.is_zero() {
        let first = think.mul_f64(rng.unit());
        tokio::time::sleep(first.min(end.saturating_duration_since(Instant::now()))).await;
    }
    while Instant::now() < end {
        let t0 = Instant::now();
        let measuring = t0 >= measure_from;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let mut scratch = Stats::new();
            let target = if measuring { &mut stats } else { &mut scratch };
            conn = timed_connect(&spec.config, plan.connect_timeout, target).await;
            if conn.is_none() {
                if measuring {
                    stats.failed += 1;
                }
                // Back off a little, but never past the deadline.
                let pause =
                    Duration::from_millis(100).min(end.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        let client = conn.as_ref().expect("connected above");
        let outcome = timeout(plan.tx_timeout, w.run_tx(client, &spec.ctx, &mut rng)).await;
        let t1 = Instant::now();
        let counted = measuring && t1 <= end;
        match outcome {
            Ok((kind, Ok(true))) => {
                if counted {
                    stats.ok(kind, t1 - t0);
                }
            }
            Ok((_, Ok(false))) => {
                if counted {
                    stats.failed += 1;
                    stats.error(WRONG_RESULT, || {
                        format!(
                            "a transaction of tenant {} found or changed no row (tenant context missing?)",
                            spec.ctx.tenant_id
                        )
                    });
                }
            }
            Ok((_, Err(e))) => {
                if counted {
                    stats.failed += 1;
                    let (class, msg) = classify(&e);
                    stats.error(&class, || msg);
                }
                if e.is_closed() || client.is_closed() {
                    conn = None;
                }
            }
            Err(_) => {
                if counted {
                    stats.failed += 1;
                    stats.error("timeout", || {
                        format!("no answer within {} s", plan.tx_timeout.as_secs_f64())
                    });
                }
                // The connection's state is unknown now: drop it and start afresh.
                conn = None;
            }
        }
        if plan.connect_per_tx {
            conn = None;
        }
        let pause = w.think(&mut rng);
        if !pause.is_zero() {
            tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("host=127.0.0.1 user=app password=secret dbname=launch"),
            "host=127.0.0.1 user=app password=*** dbname=launch"
        );
        assert_eq!(
            redact("postgresql://app:secret@127.0.0.1:6432/launch"),
            "postgresql://app:***@127.0.0.1:6432/launch"
        );
        assert_eq!(
            redact("postgresql://127.0.0.1/launch"),
            "postgresql://127.0.0.1/launch"
        );
    }

    #[test]
    fn parses_templates() {
        let c = parse_config(
            "host=127.0.0.1 port=6432 user=acme_0001 password=x dbname=launch",
            Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(c.get_user(), Some("acme_0001"));
        assert!(parse_config("host=127.0.0.1 port=notaport", Duration::from_secs(1)).is_err());
    }
}
