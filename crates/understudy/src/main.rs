//! The `understudy` binary.
//!
//! # Layout
//! - [`cli`]: subcommands and flags (clap).
//! - [`up`]: `understudy up`, the embedded primary + standby behind the proxy.
//! - [`run`]: `understudy run`, the proxy in front of existing servers.
//! - [`discovery`]: finds the primary among configured servers.
//! - [`status`]: `understudy status`, a client of the admin endpoint.
//! - [`admin`]: the admin endpoint (`/status`, `/metrics`).
//! - [`bench`]: `understudy bench`, pgbench direct vs understudy vs PgBouncer.
//! - [`runtime_files`]: the file an instance leaves in its directory so
//!   `status` can find it.

mod admin;
mod bench;
mod cli;
mod discovery;
mod patroni;
mod run;
mod runtime_files;
mod status;
mod tls_files;
mod up;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match build_runtime(worker_threads()) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("understudy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Switchover(args) => status::switchover(args).await,
            Command::Maintenance(args) => status::maintenance(args).await,
            Command::Bench(args) => bench::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("understudy: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The async runtime with `workers` worker threads. One worker is the
/// current-thread scheduler: the same single thread, without the bookkeeping
/// a multi-threaded scheduler does for work stealing on every task run.
fn build_runtime(workers: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if workers > 1 {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build()
}

/// Environment variable that sets the number of runtime worker threads
/// (tokio's own name for it, honoured as tokio would).
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Worker threads of the runtime: `TOKIO_WORKER_THREADS` when set to a
/// positive number, otherwise half the CPUs (at least one).
///
/// A relayed message costs the proxy little besides its `recv` and `send`,
/// and most of the cost of those is the kernel's loopback and TCP work, which
/// runs on whichever CPU makes the call. What a second worker adds on a small
/// machine is wake-ups: a worker that finds a session ready wakes an idle one
/// to share the work (a futex call on each side and a context switch), per
/// message, while the clients and the servers want the same CPUs. Half the
/// CPUs leaves those to them and still spreads sessions on a larger machine.
fn worker_threads() -> usize {
    let from_env = std::env::var(WORKER_THREADS_ENV)
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|&n| n > 0);
    from_env.unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / 2).max(1)
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UNDERSTUDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// An error that ends a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid configuration (exit code 2).
    #[error("{0}")]
    Config(#[from] understudy_config::ConfigError),
    /// The embedded cluster failed.
    #[error("{0}")]
    Cluster(#[from] understudy_cluster::ClusterError),
    /// The proxy could not start.
    #[error("{0}")]
    Proxy(#[from] understudy_proxy::StartError),
    /// The benchmark failed.
    #[error("{0}")]
    Bench(#[from] bench::BenchError),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(e) => e.exit_code().clamp(1, 255) as u8,
            _ => 1,
        }
    }
}
