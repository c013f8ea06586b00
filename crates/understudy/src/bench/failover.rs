//! `understudy bench --failover`: pgbench tpcb-like (`-M prepared`) through understudy
//! while the primary's postmaster is killed (`kill -9`) every K seconds, then the same
//! run through PgBouncer (session mode, pointed at the primary) with one kill, on an
//! orchestrated primary + standby like `understudy up`'s (the orchestrator, and the
//! proxy following its view, run in this process).
//!
//! From pgbench's per-transaction logs it computes the throughput per 100 ms and each
//! client's pause at each kill: the longest interval between two consecutive successful
//! transaction ends of that client that overlaps the second after the kill (a client
//! with no successful transaction after that second did not resume). It writes
//! `failover.json`, `failover.md` and `failover.svg`.
//!
//! # Layout
//! - this module: the cluster, the proxy, pgbench runs and the kills.
//! - [`logs`]: running pgbench with per-transaction logs, reading the logs.
//! - [`report`]: throughput, pauses and errors; the report files.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use understudy_cluster::{
    free_port, Credentials, EmbeddedCluster, HealthSettings, Orchestrator, OrchestratorHandle,
    Phase, Redundancy, RunAs, Signal,
};
use understudy_config::{Config, Secret, Server};
use understudy_proxy::topology;

use super::error::BenchError;
use super::pgbench::{Load, Pgbench};
use super::pgbouncer::PgBouncer;
use super::tools::{self, Tools};
use super::{cluster_dir, validate, WorkDir};
use crate::cli::BenchArgs;
use crate::run::shutdown_signal;
use crate::up::topology_of;
use crate::CliError;

mod logs;
mod report;

use self::logs::{read_logs, run_pgbench};
use self::report::{Report, Settings, TargetReport, PAUSE_DEFINITION};

/// `--seconds` when not given.
const DEFAULT_SECONDS: u32 = 30;
/// Width of a throughput bucket.
const BUCKET_US: u64 = 100_000;
/// The time after a kill in which a client's pause is looked for.
const PAUSE_WINDOW_US: u64 = 1_000_000;
/// How long to wait for the standby to stream again before a run or a kill.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a new primary may take to be published after a kill.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the failover benchmark described by `args` and writes its report.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let load = validate(&args, args.seconds.unwrap_or(DEFAULT_SECONDS))?;
    if args.kill_every == 0 || args.kill_every >= load.seconds {
        return Err(BenchError::InvalidArgument {
            flag: "kill-every",
            reason: format!(
                "{} s with --seconds {}: give a kill interval shorter than the run (e.g. --seconds 30 --kill-every 10)",
                args.kill_every, load.seconds
            ),
        }
        .into());
    }
    let tools = tools::locate().await?;
    let mut work = WorkDir::create()?;
    tracing::info!(dir = %work.path().display(), "benchmark working directory");
    let outcome = tokio::select! {
        outcome = bench(&args, load, &tools, &mut work) => outcome,
        () = shutdown_signal() => Err(BenchError::Interrupted),
    };
    drop(work);
    let report = outcome?;
    report.write(&args.out)?;
    tracing::info!(out = %args.out.display(), "failover.json, failover.md and failover.svg written");
    print!("{}", report.to_markdown());
    Ok(())
}

/// Builds the orchestrated cluster, measures both targets and shuts everything down.
async fn bench(
    args: &BenchArgs,
    load: Load,
    tools: &Tools,
    work: &mut WorkDir,
) -> Result<Report, BenchError> {
    let run_as = RunAs::detect()?;
    let dir = cluster_dir(work, &run_as)?;
    tracing::info!("starting a primary and a streaming standby under the orchestrator");
    let cluster = EmbeddedCluster::up(&dir).await?;
    let config = Arc::new(proxy_config(&cluster)?);
    let orchestrator = Orchestrator::spawn(cluster, HealthSettings::from(&config.health));
    let result = measure(
        args,
        load,
        tools,
        work.path(),
        &run_as,
        &orchestrator,
        config,
    )
    .await;
    let stopped = orchestrator.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}

/// The proxy's configuration: like `understudy up`'s, on a free port.
fn proxy_config(cluster: &EmbeddedCluster) -> Result<Config, BenchError> {
    let mut config = Config::default_for_embedded();
    config.proxy.listen = ([127, 0, 0, 1], free_port()?).into();
    config.auth.auth_user = cluster.creds.superuser.clone();
    config.auth.auth_password = Secret::new(cluster.creds.password.clone());
    config.servers = [&cluster.primary, &cluster.standby]
        .into_iter()
        .map(|node| Server {
            name: node.name().to_owned(),
            host: "127.0.0.1".to_owned(),
            port: node.port(),
            patroni: None,
        })
        .collect();
    config
        .validate()
        .map_err(|e| BenchError::io("configuring the proxy")(std::io::Error::other(e)))?;
    Ok(config)
}

/// Runs pgbench through understudy (a kill every K s), then through PgBouncer (one kill).
async fn measure(
    args: &BenchArgs,
    load: Load,
    tools: &Tools,
    dir: &Path,
    run_as: &RunAs,
    orchestrator: &OrchestratorHandle,
    config: Arc<Config>,
) -> Result<Report, BenchError> {
    let creds = orchestrator.credentials().clone();
    let primary = || orchestrator.roles().primary.port();
    tracing::info!(scale = args.scale, "initialising the pgbench tables");
    let pgbench = Pgbench::new(tools.pgbench.clone(), creds.clone());
    pgbench.initialize(primary(), args.scale).await?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(BenchError::io(format!("creating {}", logs.display())))?;
    let runner = Runner {
        load,
        every: args.kill_every,
        pgbench: &tools.pgbench,
        creds: &creds,
        orchestrator,
        logs: &logs,
    };

    let (topology_tx, topology_rx) = topology::channel(topology_of(&orchestrator.view().borrow()));
    let mut view = orchestrator.view();
    let follower = tokio::spawn(async move {
        while view.changed().await.is_ok() {
            topology_tx.send_replace(topology_of(&view.borrow_and_update()));
        }
    });
    let proxy = understudy_proxy::start(config, topology_rx)
        .await
        .map_err(|e| BenchError::io("starting the proxy")(std::io::Error::other(e)))?;
    let understudy = runner
        .run("understudy", proxy.local_addr().port(), usize::MAX)
        .await;
    proxy.stop_accepting().await;
    follower.abort();
    let understudy = understudy?;

    wait_ready(orchestrator).await?;
    let pgbouncer_dir = dir.join("pgbouncer");
    let bouncer = PgBouncer::start(
        &tools.pgbouncer,
        &pgbouncer_dir,
        run_as,
        primary(),
        &creds,
        load.clients,
    )
    .await?;
    // PgBouncer has a fixed server: after the first kill there is nothing left to kill.
    let pgbouncer = runner.run("pgbouncer", bouncer.port(), 1).await;
    bouncer.stop().await;
    Ok(Report {
        settings: Settings {
            seconds: load.seconds,
            kill_every: args.kill_every,
            clients: load.clients,
            threads: load.threads,
            scale: args.scale,
            query_mode: "prepared",
            bucket_ms: BUCKET_US / 1000,
            pause_window_ms: PAUSE_WINDOW_US / 1000,
            pause_definition: PAUSE_DEFINITION,
            pgbench_version: tools.pgbench_version.clone(),
            pgbouncer_version: tools.pgbouncer_version.clone(),
        },
        targets: vec![understudy, pgbouncer?],
    })
}

/// What every run shares.
struct Runner<'a> {
    load: Load,
    /// Seconds between kills.
    every: u32,
    pgbench: &'a Path,
    creds: &'a Credentials,
    orchestrator: &'a OrchestratorHandle,
    logs: &'a Path,
}

/// One kill of the primary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kill {
    /// Seconds since the start of the run.
    pub at_s: f64,
    #[serde(skip)]
    at_us: u64,
    /// The node killed.
    pub node: String,
    /// Its postmaster's pid.
    pub pid: i32,
    /// Milliseconds from the kill until the orchestrator published a new primary.
    pub new_primary_after_ms: Option<u64>,
}

impl Runner<'_> {
    /// Runs pgbench against 127.0.0.1:`port` (called `name`) while killing the primary
    /// every `every` seconds, at most `max_kills` times.
    async fn run(
        &self,
        name: &str,
        port: u16,
        max_kills: usize,
    ) -> Result<TargetReport, BenchError> {
        let (load, orchestrator) = (self.load, self.orchestrator);
        wait_ready(orchestrator).await?;
        tracing::info!(
            target = name,
            seconds = load.seconds,
            every = self.every,
            "running pgbench tpcb-like, killing the primary"
        );
        let prefix = self.logs.join(name);
        let t0 = now_us();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let bench = async {
            let output = run_pgbench(self.pgbench, self.creds, port, load, &prefix).await;
            done_tx.send_replace(true);
            output
        };
        let end = t0 + u64::from(load.seconds) * 1_000_000;
        let killer = kill_periodically(orchestrator, t0, end, self.every, max_kills, done_rx);
        let (output, kills) = tokio::join!(bench, killer);
        let output = output?;
        let entries = tokio::task::spawn_blocking(move || read_logs(&prefix))
            .await
            .map_err(|e| BenchError::io("reading the pgbench logs")(std::io::Error::other(e)))??;
        Ok(TargetReport::new(name, load, t0, &output, &entries, kills))
    }
}

/// Kills the primary at `t0` + k·`every` s (k = 1, 2, …) before `end`, at most `max`
/// times, each time once the standby can take over; stops when `done` turns true.
async fn kill_periodically(
    orchestrator: &OrchestratorHandle,
    t0: u64,
    end: u64,
    every: u32,
    max: usize,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<Kill> {
    let mut kills = Vec::new();
    for k in 1u64.. {
        let due = t0 + k * u64::from(every) * 1_000_000;
        if kills.len() >= max || due + PAUSE_WINDOW_US > end {
            break;
        }
        let ready = async {
            tokio::time::sleep(Duration::from_micros(due.saturating_sub(now_us()))).await;
            wait_ready(orchestrator).await
        };
        // Once sent, a kill is recorded even if pgbench ends meanwhile.
        tokio::select! {
            ready = ready => match ready {
                Ok(()) => kills.extend(kill_primary(orchestrator, t0).await),
                Err(e) => {
                    tracing::warn!(error = %e, "no more kills: the standby cannot take over");
                    break;
                }
            },
            _ = done.wait_for(|d| *d) => break,
        }
    }
    kills
}

/// `kill -9` of the primary's postmaster; waits until a new primary is published.
async fn kill_primary(orchestrator: &OrchestratorHandle, t0: u64) -> Option<Kill> {
    let mut view = orchestrator.view();
    let generation = view.borrow_and_update().generation;
    let node = orchestrator.roles().primary;
    let pid = node.postmaster_pid()?;
    let at_us = now_us();
    let sent = Instant::now();
    if let Err(e) = understudy_cluster::process::signal(pid, Signal::SIGKILL) {
        tracing::warn!(pid, error = %e, "cannot kill the primary");
        return None;
    }
    let published = view.wait_for(|v| v.generation > generation && v.primary.is_some());
    let after = tokio::time::timeout(PUBLISH_TIMEOUT, published).await;
    let new_primary_after_ms =
        matches!(after, Ok(Ok(_))).then(|| sent.elapsed().as_millis() as u64);
    tracing::info!(
        node = node.name(),
        pid,
        ?new_primary_after_ms,
        "killed the primary"
    );
    Some(Kill {
        at_s: at_us.saturating_sub(t0) as f64 / 1e6,
        at_us,
        node: node.name().to_owned(),
        pid,
        new_primary_after_ms,
    })
}

/// Waits until the standby streams from a serving primary (a kill is then survivable).
async fn wait_ready(orchestrator: &OrchestratorHandle) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let view = orchestrator.view().borrow().clone();
        if orchestrator.redundancy() == Redundancy::Ready
            && view.phase == Phase::Serving
            && view.primary.is_some()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::io("waiting for the standby")(
                std::io::Error::other(format!(
                    "the standby did not stream from the primary within {} s",
                    READY_TIMEOUT.as_secs()
                )),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
