//! Command line: run the proxy, or check a config and print the effective settings.

use crate::config::{self, LoadOverrides};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "launch-proxy",
    version,
    about = "Tenant-aware PostgreSQL pooling proxy"
)]
pub struct Args {
    /// Run with this config file.
    #[arg(long, env = "LAUNCH_PROXY_CONFIG", conflicts_with = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this config, print the effective settings and warnings, and exit.
    #[arg(long, value_name = "PATH")]
    pub check_config: Option<PathBuf>,
    /// Override `listen` (address:port).
    #[arg(long, env = "LAUNCH_PROXY_LISTEN")]
    pub listen: Option<String>,
    /// Override `metrics_listen` (address:port, or empty to disable).
    #[arg(long, env = "LAUNCH_PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Override `instance_listen` (address:port of this process alone, or empty for none).
    #[arg(long, env = "LAUNCH_PROXY_INSTANCE_LISTEN")]
    pub instance_listen: Option<String>,
    /// Override `cancel.host_id` (0..=15): processes of one config file differ in it.
    #[arg(long, env = "LAUNCH_PROXY_HOST_ID")]
    pub host_id: Option<u8>,
}

/// Sets the calling thread's scheduling policy; the threads it starts later inherit it.
/// The binary passes it in because the one `unsafe` call it needs stays out of the library.
pub type SetCpuScheduling = fn(config::CpuScheduling) -> std::io::Result<()>;

pub fn main(set_cpu_scheduling: SetCpuScheduling) -> ExitCode {
    let args = Args::parse();
    let overrides = LoadOverrides {
        listen: args.listen.clone(),
        metrics_listen: args.metrics_listen.clone(),
        instance_listen: args.instance_listen.clone(),
        host_id: args.host_id,
    };
    if let Some(path) = &args.check_config {
        return check(path, &overrides);
    }
    let Some(path) = &args.config else {
        eprintln!("launch-proxy: give --config PATH (or --check-config PATH)");
        return ExitCode::from(2);
    };
    init_logging();
    let settings = match config::load(path, &overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("launch-proxy: invalid configuration: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &settings.warnings {
        tracing::warn!("config: {w}");
    }
    // How many task polls may pass before the I/O driver is polled again (env
    // LAUNCH_PROXY_EVENT_INTERVAL): tokio's 61. Every poll of the driver is an `epoll_wait`
    // and a pass over the timer wheel, and the run queue of a proxy holds only tasks whose
    // sockets are ready: at 8, pgbench -S with 50 clients made 4.28 syscalls per
    // transaction (0.27 of them `epoll_wait`) against 4.09 at 61, PgBouncer's count, and
    // the seed workload at 2000 clients 4.38 against 4.13 (PgBouncer: 4.83).
    let interval = std::env::var("LAUNCH_PROXY_EVENT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(61);
    if let Err(e) = set_cpu_scheduling(settings.config.cpu_scheduling) {
        tracing::warn!(
            policy = ?settings.config.cpu_scheduling,
            "cannot set the CPU scheduling policy, keeping the inherited one: {e}"
        );
    }
    let runtime = crate::runtime::build(
        settings.config.workers,
        interval,
        settings.config.event_coalesce_us,
    );
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("launch-proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(crate::server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("launch-proxy: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path, overrides: &LoadOverrides) -> ExitCode {
    match config::load(path, overrides) {
        Ok(settings) => {
            println!("# effective settings of {}", path.display());
            print!("{}", settings.describe());
            for w in &settings.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "# configuration OK ({} warning(s))",
                settings.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a terminal: the journal and log files get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
