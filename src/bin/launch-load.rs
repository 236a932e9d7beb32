//! launch-load: a load generator for launch-proxy, PgBouncer and PostgreSQL (benchmarks only;
//! built with `--features load`). See docs/benchmarks.md.
//!
//! Opens N client connections spread over T tenants, runs the seed-shaped workload (or
//! `SELECT 1`, or pgbench's -S select) for a fixed time, and reports throughput, latency
//! percentiles from an HDR histogram, connect times, errors by SQLSTATE and, given
//! --proxy-pid, the proxy's CPU time and memory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[path = "launch_load/ids.rs"]
mod ids;
#[path = "launch_load/plot.rs"]
mod plot;
#[path = "launch_load/procfs.rs"]
mod procfs;
#[path = "launch_load/report.rs"]
mod report;
#[path = "launch_load/run.rs"]
mod run;
#[path = "launch_load/summarize.rs"]
mod summarize;
#[path = "launch_load/workload.rs"]
mod workload;

use workload::{ClientCtx, Mode, Protocol, ThinkDist, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "launch-load",
    version,
    about = "Load generator for launch-proxy, PgBouncer and PostgreSQL",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Draw latency against client count as SVG from a TSV (series, clients, p50_ms, p99_ms).
    Plot(PlotArgs),
    /// Build the comparison table, results JSON and plot from scripts/bench-compare's records.
    Summarize(SummarizeArgs),
}

#[derive(Args, Debug)]
struct SummarizeArgs {
    /// Directory of per-run records (*.json, read in name order).
    #[arg(long)]
    runs: PathBuf,
    /// JSON object to store as "meta" (machine, versions, settings).
    #[arg(long)]
    meta: Option<PathBuf>,
    /// Markdown table output.
    #[arg(long)]
    markdown: PathBuf,
    /// Combined JSON output.
    #[arg(long)]
    json: PathBuf,
    /// SVG plot output (latency against client count).
    #[arg(long)]
    svg: PathBuf,
    #[arg(long, default_value = "pgbench -S: latency against client count")]
    title: String,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// Tab-separated input: series, clients, p50_ms, p99_ms per line.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the SVG.
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value = "Latency against client count")]
    title: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// libpq-style connection string (or postgresql:// URL). `{tenant}` becomes the client's
    /// tenant number (4+ digits, 0001), `{tenant_id}` its ULID. Repeat to spread clients over
    /// several strings round-robin.
    #[arg(long = "conn", value_name = "CONNINFO")]
    conns: Vec<String>,
    /// File with one connection string (or template) per line; `#` lines are comments.
    #[arg(long, value_name = "FILE")]
    conn_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Seed)]
    mode: Mode,
    #[arg(long, value_enum, default_value_t = Protocol::Simple)]
    protocol: Protocol,
    /// Connected clients (each one connection).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// How many of them run transactions (the first B clients); the rest stay connected and
    /// idle. Default: all.
    #[arg(long)]
    busy: Option<usize>,
    /// Tenants; client i belongs to tenant (i mod T) + 1.
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// base_entity rows per tenant (ids 1..=R, see docs/benchmarks.md for the id scheme).
    #[arg(long, default_value_t = 100)]
    rows_per_tenant: u64,
    /// pgbench scale factor for --mode pgbench (100000 accounts per unit).
    #[arg(long, default_value_t = 10)]
    scale: u64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Percentage of reads in --mode seed (the rest are writes).
    #[arg(long, default_value_t = 80)]
    read_pct: u32,
    /// Think time between a busy client's transactions, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    think_ms: f64,
    #[arg(long, value_enum, default_value_t = ThinkDist::Fixed)]
    think_dist: ThinkDist,
    /// Set app.tenant_id and app.tenant_sig in every transaction (for direct PostgreSQL and
    /// PgBouncer, where nothing else sets them). Needs --signing-key.
    #[arg(long)]
    set_tenant: bool,
    /// Hex key the database verifies app.tenant_sig with (launch.set_signing_key).
    #[arg(long, env = "LAUNCH_LOAD_SIGNING_KEY", hide_env_values = true)]
    signing_key: Option<String>,
    /// Open a new connection for every transaction (latency includes the connect).
    #[arg(long)]
    connect_per_tx: bool,
    /// Connection attempts in flight at once during the connect phase.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds one connection attempt may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds one transaction may take before it counts as a timeout.
    #[arg(long, default_value_t = 30.0)]
    tx_timeout: f64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Process id of the proxy (or PgBouncer): report its CPU seconds and RSS.
    #[arg(long)]
    proxy_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// A name for this run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Random seed (row choice, read/write mix); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Plot(p)) => plot_cmd(&p),
        Some(Command::Summarize(s)) => summarize_cmd(&s),
        None => load(cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("launch-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn plot_cmd(p: &PlotArgs) -> Result<ExitCode, String> {
    let tsv =
        std::fs::read_to_string(&p.input).map_err(|e| format!("{}: {e}", p.input.display()))?;
    let series = plot::parse(&tsv)?;
    std::fs::write(&p.output, plot::svg(&p.title, &series))
        .map_err(|e| format!("{}: {e}", p.output.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn summarize_cmd(a: &SummarizeArgs) -> Result<ExitCode, String> {
    let records = summarize::read_records(&a.runs)?;
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        &a.markdown,
        summarize::markdown(&records) + &summarize::by_round(&records),
    )?;
    write(&a.svg, summarize::svg(&records, &a.title)?)?;
    let meta = match &a.meta {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => serde_json::Value::Null,
    };
    let json = serde_json::to_string_pretty(&summarize::results_json(records, meta))
        .map_err(|e| e.to_string())?;
    write(&a.json, json + "\n")?;
    Ok(ExitCode::SUCCESS)
}

fn secs(v: f64, what: &str, max: f64) -> Result<Duration, String> {
    if !(v.is_finite() && v >= 0.0 && v <= max) {
        return Err(format!("--{what} must be between 0 and {max} seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn load(a: RunArgs) -> Result<ExitCode, String> {
    // Validation: every loop of the run is bounded by these.
    let duration = secs(a.duration, "duration", 86_400.0)?;
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    let warmup = secs(a.warmup, "warmup", 3_600.0)?;
    let connect_timeout = secs(a.connect_timeout, "connect-timeout", 600.0)?;
    let tx_timeout = secs(a.tx_timeout, "tx-timeout", 600.0)?;
    if a.clients == 0 || a.clients > 200_000 {
        return Err("--clients must be 1..=200000".into());
    }
    let busy = match a.mode {
        Mode::Idle => 0,
        _ => a.busy.unwrap_or(a.clients),
    };
    if busy > a.clients {
        return Err("--busy cannot exceed --clients".into());
    }
    if a.tenants == 0 || a.rows_per_tenant == 0 || a.scale == 0 {
        return Err("--tenants, --rows-per-tenant and --scale must be positive".into());
    }
    if a.read_pct > 100 {
        return Err("--read-pct must be 0..=100".into());
    }
    if !(a.think_ms.is_finite() && a.think_ms >= 0.0) {
        return Err("--think-ms must be >= 0".into());
    }
    let key = match (a.set_tenant, &a.signing_key) {
        (false, _) => None,
        (true, Some(k)) => {
            let k = ids::parse_hex(k).map_err(|e| format!("--signing-key: {e}"))?;
            if k.len() < 32 {
                return Err("--signing-key must be at least 32 bytes (64 hex digits)".into());
            }
            Some(k)
        }
        (true, None) => {
            return Err("--set-tenant needs --signing-key (or LAUNCH_LOAD_SIGNING_KEY)".into())
        }
    };
    if a.set_tenant && a.mode != Mode::Seed {
        eprintln!("launch-load: note: --set-tenant only affects --mode seed");
    }

    let mut templates = a.conns.clone();
    if let Some(f) = &a.conn_file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        templates.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if templates.is_empty() {
        return Err("give at least one --conn (or --conn-file); see --help".into());
    }

    // Thousands of sockets: raise the open-files limit (soft up to hard; hard too as root).
    let want = a.clients as u64 + 256;
    let have = procfs::raise_nofile(want);
    if have < want {
        eprintln!(
            "launch-load: warning: open-files limit is {have}, below the {want} this run needs \
             (raise it with `ulimit -n {want}` or run as root)"
        );
    }

    let mut clients = Vec::with_capacity(a.clients);
    for i in 0..a.clients {
        let tenant = i % a.tenants + 1;
        let conninfo = ids::expand(&templates[i % templates.len()], tenant);
        clients.push(run::ClientSpec {
            config: run::parse_config(&conninfo, connect_timeout)?,
            ctx: ClientCtx::new(tenant, key.as_deref()),
            busy: i < busy,
        });
    }

    let settings = serde_json::json!({
        "mode": a.mode,
        "protocol": a.protocol,
        "clients": a.clients,
        "busy": busy,
        "tenants": a.tenants,
        "rows_per_tenant": a.rows_per_tenant,
        "scale": a.scale,
        "duration_s": a.duration,
        "warmup_s": a.warmup,
        "read_pct": a.read_pct,
        "think_ms": a.think_ms,
        "think_dist": a.think_dist,
        "set_tenant": a.set_tenant,
        "connect_per_tx": a.connect_per_tx,
        "connect_concurrency": a.connect_concurrency,
        "threads": a.threads,
        "conns": templates.iter().map(|t| run::redact(t)).collect::<Vec<_>>(),
        "nofile_limit": have,
    });
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let plan = run::Plan {
        label: a.label.clone(),
        settings,
        clients,
        workload: Workload {
            mode: a.mode,
            protocol: a.protocol,
            read_pct: a.read_pct,
            rows_per_tenant: a.rows_per_tenant,
            accounts: a.scale * 100_000,
            think_ms: a.think_ms,
            think_dist: a.think_dist,
        },
        warmup,
        duration,
        connect_concurrency: a.connect_concurrency,
        connect_timeout,
        tx_timeout,
        connect_per_tx: a.connect_per_tx,
        proxy_pid: a.proxy_pid,
        seed,
        quiet: a.quiet,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = runtime.block_on(run::run(plan));
    runtime.shutdown_timeout(Duration::from_secs(2));

    print!("{}", report.text());
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    // Exit 1 when nothing worked: no connection at all, or a workload without one success.
    let nothing = report.connect.ok == 0 && report.connect.attempted > 0
        || (a.mode != Mode::Idle && report.transactions_ok == 0);
    Ok(if nothing {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
