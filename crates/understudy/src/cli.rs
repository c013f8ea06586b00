//! Command-line interface: the subcommands and their flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// understudy: a PostgreSQL proxy that moves client sessions to another
/// server when the primary fails, without the clients noticing.
#[derive(Debug, Parser)]
#[command(name = "understudy", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start an embedded primary + streaming standby behind the proxy, in the foreground.
    Up(UpArgs),
    /// Run the proxy alone in front of the servers listed in a configuration file.
    Run(RunArgs),
    /// Show nodes, proxy and sessions of a running instance.
    Status(StatusArgs),
    /// Planned switchover of a running `understudy up`: sessions move to the
    /// standby at transaction boundaries, it is promoted, the old primary
    /// becomes its standby.
    Switchover(StatusArgs),
    /// Hold tables for maintenance (`start <table…>`: statements touching
    /// them wait) or release them (`end`).
    Maintenance(MaintenanceArgs),
    /// Benchmark direct PostgreSQL, understudy and PgBouncer side by side with pgbench.
    Bench(BenchArgs),
}

/// `understudy up`
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory that holds the cluster's state, credentials and (when reachable) data.
    #[arg(long, default_value = "./.understudy", env = "UNDERSTUDY_DIR")]
    pub dir: PathBuf,
    /// Port clients connect to (on 127.0.0.1); 0 picks a free one (the `ready:`
    /// line names it).
    #[arg(long, default_value_t = 6543)]
    pub port: u16,
    /// Port of the admin endpoint (on 127.0.0.1); default: the proxy port + 1, or a
    /// free one when --port is 0.
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Rules file (rewrite, access rights, masking); see docs/rules.md.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// `understudy run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (TOML); see docs/config.md.
    #[arg(long, short, env = "UNDERSTUDY_CONFIG")]
    pub config: PathBuf,
    /// Overrides proxy.listen.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Overrides admin.listen.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Overrides proxy.rules: the rules file; see docs/rules.md.
    #[arg(long)]
    pub rules: Option<PathBuf>,
}

/// `understudy maintenance`
#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// `start` or `end`.
    #[command(subcommand)]
    pub action: MaintenanceAction,
}

/// What `understudy maintenance` does.
#[derive(Debug, Subcommand)]
pub enum MaintenanceAction {
    /// Hold these tables: statements touching them wait until `end`.
    Start {
        /// Tables (`name` or `schema.name`).
        #[arg(required = true)]
        tables: Vec<String>,
        /// Which instance.
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Release every held table; the waiting statements go on in order.
    End {
        /// Which instance.
        #[command(flatten)]
        target: StatusArgs,
    },
}

/// `understudy status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Directory of an `understudy up` instance.
    #[arg(long, default_value = "./.understudy", env = "UNDERSTUDY_DIR")]
    pub dir: PathBuf,
    /// Admin endpoint address (host:port) of an `understudy run` instance; overrides --dir.
    #[arg(long)]
    pub admin: Option<String>,
    /// Admin token, when the endpoint requires one.
    #[arg(long, env = "UNDERSTUDY_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// Print the raw JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `understudy bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Instead of the throughput comparison: pgbench tpcb-like through understudy while
    /// the primary is killed (`kill -9`) every --kill-every seconds, then through
    /// PgBouncer; writes failover.json, failover.md and failover.svg.
    #[arg(long)]
    pub failover: bool,
    /// With --failover: seconds between two kills of the primary.
    #[arg(long, default_value_t = 10, requires = "failover")]
    pub kill_every: u32,
    /// Seconds each pgbench run lasts (default 10; 30 with --failover).
    #[arg(long)]
    pub seconds: Option<u32>,
    /// pgbench clients (-c).
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// pgbench threads (-j).
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// pgbench scale factor for initialisation (-s).
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// Rounds of the throughput comparison. Each round runs every target once,
    /// understudy and PgBouncer in turn first; the report gives each round's
    /// ratios and their median.
    #[arg(long, default_value_t = 3, conflicts_with = "failover")]
    pub rounds: u32,
    /// Also measure select-only through a second understudy with this rules
    /// file, in the same run, and report the TPS ratio rules on / off.
    #[arg(long, conflicts_with = "failover")]
    pub rules: Option<PathBuf>,
    /// Directory for the reports (report.json and report.md, or failover.*).
    #[arg(long, default_value = "./bench-out")]
    pub out: PathBuf,
}
