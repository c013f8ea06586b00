//! `understudy bench`: pgbench directly, through understudy and through PgBouncer, side
//! by side in one run, on a fresh primary + standby built for the occasion in a temporary
//! directory. Everything started is stopped and the directory removed at the end, also
//! when a step fails or the command is interrupted.
//!
//! # Layout
//! - [`tools`]: finding `pgbench` and `pgbouncer` before anything starts.
//! - [`pgbench`]: running pgbench and reading its summary and transaction logs.
//! - [`understudy_process`]: the proxy under test, this binary run as a child.
//! - [`pgbouncer`]: PgBouncer in session mode, for comparison.
//! - [`child`]: stopping those children by pid, waiting until they accept connections.
//! - [`proc_cpu`]: the CPU time a proxy spends per transaction.
//! - [`report`]: `report.json` and `report.md`.
//! - [`failover`]: `--failover`, pgbench while the primary is killed, understudy vs
//!   PgBouncer; [`svg`]: its throughput plot.
//! - [`error`]: the [`BenchError`] enum.

mod child;
mod error;
mod failover;
mod pgbench;
mod pgbouncer;
mod proc_cpu;
mod report;
mod svg;
mod tools;
mod understudy_process;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use understudy_cluster::{workdir, ClusterError, EmbeddedCluster, RunAs};

pub use self::error::BenchError;
use self::pgbench::{Load, Pgbench, RunResult, Workload};
use self::pgbouncer::PgBouncer;
use self::report::{Report, RulesReport, Settings, WorkloadReport, WorkloadResults};
use self::tools::Tools;
use self::understudy_process::UnderstudyProcess;
use crate::cli::BenchArgs;
use crate::run::shutdown_signal;
use crate::CliError;

/// Seconds of unrecorded select-only load on the primary before the measured runs, so
/// that the first target measured does not pay for cold caches.
const WARMUP_SECONDS: u32 = 2;
/// Connections the benchmark's servers accept (`max_connections`), minus a margin for
/// the proxies' own connections and replication.
const MAX_CLIENTS: u32 = 250;
/// `--seconds` when not given.
const DEFAULT_SECONDS: u32 = 10;

/// Runs the benchmark described by `args`, writes the report to `args.out` and prints
/// it.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if args.failover {
        return failover::run(args).await;
    }
    let load = validate(&args, args.seconds.unwrap_or(DEFAULT_SECONDS))?;
    if let Some(rules) = &args.rules {
        understudy_rules::RuleSet::from_file(rules).map_err(|e| BenchError::InvalidArgument {
            flag: "rules",
            reason: e.to_string(),
        })?;
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
    tracing::info!(out = %args.out.display(), "report.json and report.md written");
    print!("{}", report.to_markdown());
    Ok(())
}

/// Checks the flags and turns them into a pgbench load of `seconds`.
fn validate(args: &BenchArgs, seconds: u32) -> Result<Load, BenchError> {
    let positive = |flag: &'static str, value: u32| {
        if value == 0 {
            Err(BenchError::InvalidArgument {
                flag,
                reason: "must be at least 1".into(),
            })
        } else {
            Ok(())
        }
    };
    positive("seconds", seconds)?;
    positive("clients", args.clients)?;
    positive("threads", args.threads)?;
    positive("scale", args.scale)?;
    positive("rounds", args.rounds)?;
    if args.rounds > MAX_ROUNDS {
        return Err(BenchError::InvalidArgument {
            flag: "rounds",
            reason: format!("at most {MAX_ROUNDS}"),
        });
    }
    if args.threads > args.clients {
        return Err(BenchError::InvalidArgument {
            flag: "threads",
            reason: format!(
                "{} threads for {} clients: pgbench needs at least one client per thread",
                args.threads, args.clients
            ),
        });
    }
    if args.clients > MAX_CLIENTS {
        return Err(BenchError::InvalidArgument {
            flag: "clients",
            reason: format!(
                "at most {MAX_CLIENTS}: the benchmark's servers accept 300 connections"
            ),
        });
    }
    Ok(Load {
        seconds,
        clients: args.clients,
        threads: args.threads,
    })
}

/// Maximum `--rounds`.
const MAX_ROUNDS: u32 = 20;

/// Builds the cluster, runs the benchmark on it and shuts it down.
async fn bench(
    args: &BenchArgs,
    load: Load,
    tools: &Tools,
    work: &mut WorkDir,
) -> Result<Report, BenchError> {
    let run_as = RunAs::detect()?;
    let cluster_dir = cluster_dir(work, &run_as)?;
    tracing::info!("starting a primary and a streaming standby");
    let cluster = EmbeddedCluster::up(&cluster_dir).await?;
    let result = bench_on(args, load, tools, work.path(), &run_as, &cluster).await;
    let stopped = cluster.shutdown().await;
    let report = result?;
    stopped?;
    Ok(report)
}

/// Creates `work/cluster` for the benchmark's primary and standby and registers the
/// paths the cluster keeps outside it for removal; returns its canonical path.
fn cluster_dir(work: &mut WorkDir, run_as: &RunAs) -> Result<PathBuf, BenchError> {
    let dir = work.path().join("cluster");
    std::fs::create_dir(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let dir = std::fs::canonicalize(&dir)
        .map_err(BenchError::io(format!("resolving {}", dir.display())))?;
    // The cluster keeps its sockets (and, were the directory unreachable for the
    // PostgreSQL user, its data) outside its directory: remove those too.
    work.also_remove(workdir::socket_dir(&dir));
    let data_root = workdir::default_data_root(&dir, run_as);
    if !data_root.starts_with(work.path()) {
        work.also_remove(data_root);
    }
    Ok(dir)
}

/// Initialises pgbench, starts both proxies and measures every workload on every target.
async fn bench_on(
    args: &BenchArgs,
    load: Load,
    tools: &Tools,
    dir: &Path,
    run_as: &RunAs,
    cluster: &EmbeddedCluster,
) -> Result<Report, BenchError> {
    let primary_port = cluster.primary.port();
    let pgbench = Pgbench::new(tools.pgbench.clone(), cluster.creds.clone());
    tracing::info!(
        scale = args.scale,
        "initialising the pgbench tables on the primary"
    );
    pgbench.initialize(primary_port, args.scale).await?;
    let postgres_version = server_version(cluster).await?;

    let exe = std::env::current_exe().map_err(BenchError::io("locating the understudy binary"))?;
    let understudy = UnderstudyProcess::start(&exe, dir, cluster, None).await?;
    let rules_file = match &args.rules {
        Some(path) => Some(
            std::fs::canonicalize(path)
                .map_err(BenchError::io(format!("resolving {}", path.display())))?,
        ),
        None => None,
    };
    // Started for its own run only, so that it adds no load to the others.
    let with_rules = rules_file.as_deref().map(|file| RulesProxy {
        exe: &exe,
        dir,
        cluster,
        file,
    });
    let pgbouncer = PgBouncer::start(
        &tools.pgbouncer,
        &dir.join("pgbouncer"),
        run_as,
        primary_port,
        &cluster.creds,
        args.clients,
    )
    .await?;

    let ports = Ports {
        direct: Target::direct(primary_port),
        understudy: Target {
            port: understudy.port(),
            pid: understudy.pid(),
        },
        pgbouncer: Target {
            port: pgbouncer.port(),
            pid: pgbouncer.pid(),
        },
    };
    let measured = measure(
        &pgbench,
        load,
        args.rounds,
        &dir.join("logs"),
        ports,
        with_rules,
    )
    .await;
    understudy.stop().await;
    pgbouncer.stop().await;
    let measured = measured?;
    let rules = match (rules_file, measured.rules) {
        (Some(file), Some((without, with))) => Some(RulesReport::new(
            file.display().to_string(),
            &without,
            &with,
        )),
        _ => None,
    };

    Ok(Report {
        select_only: WorkloadReport::new(&measured.select_only),
        tpcb_like: WorkloadReport::new(&measured.tpcb_like),
        autocommit_update: WorkloadReport::new(&measured.autocommit_update),
        rules,
        settings: Settings {
            seconds: load.seconds,
            clients: args.clients,
            threads: args.threads,
            scale: args.scale,
            rounds: args.rounds,
            pgbench_version: tools.pgbench_version.clone(),
            pgbouncer_version: tools.pgbouncer_version.clone(),
            postgres_version,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            run_order: measured.order,
        },
    })
}

/// The three targets.
#[derive(Debug, Clone, Copy)]
struct Ports {
    direct: Target,
    understudy: Target,
    pgbouncer: Target,
}

/// Where pgbench connects, and the proxy process there (whose CPU time is measured).
#[derive(Debug, Clone, Copy)]
struct Target {
    port: u16,
    pid: Option<u32>,
}

impl Target {
    /// The primary itself: no proxy.
    fn direct(port: u16) -> Target {
        Target { port, pid: None }
    }
}

/// How to start understudy with the `--rules` file.
#[derive(Clone, Copy)]
struct RulesProxy<'a> {
    exe: &'a Path,
    dir: &'a Path,
    cluster: &'a EmbeddedCluster,
    file: &'a Path,
}

/// What [`measure`] measured.
struct Measured {
    /// Select-only, one entry per round.
    select_only: Vec<WorkloadResults>,
    /// tpcb-like, one entry per round.
    tpcb_like: Vec<WorkloadResults>,
    /// Autocommit updates as simple Queries, one entry per round.
    autocommit_update: Vec<WorkloadResults>,
    /// The runs in the order they went, as `workload/target#round`.
    order: Vec<String>,
    /// Select-only through understudy without and with the rules file (first
    /// round), when asked.
    rules: Option<(RunResult, RunResult)>,
}

/// Warms up, then runs `rounds` rounds of select-only, then of tpcb-like, then of
/// autocommit updates. A round runs direct first, then understudy and PgBouncer, which take turns
/// at going first so that neither always inherits the other's leftovers (select-only of
/// the first round also runs through understudy with rules, right after understudy).
async fn measure(
    pgbench: &Pgbench,
    load: Load,
    rounds: u32,
    log_dir: &Path,
    ports: Ports,
    with_rules: Option<RulesProxy<'_>>,
) -> Result<Measured, BenchError> {
    std::fs::create_dir_all(log_dir)
        .map_err(BenchError::io(format!("creating {}", log_dir.display())))?;
    tracing::info!(
        seconds = WARMUP_SECONDS,
        "warming up the primary (not recorded)"
    );
    let warmup = Load {
        seconds: WARMUP_SECONDS,
        ..load
    };
    pgbench
        .run(
            Workload::SelectOnly,
            warmup,
            "direct (warm-up)",
            ports.direct.port,
            &log_dir.join("warmup"),
        )
        .await?;

    let mut order = Vec::new();
    let mut runs = Runs {
        pgbench,
        load,
        log_dir,
        order: &mut order,
    };
    let mut rules = None;
    let mut select_only = Vec::new();
    for round in 1..=rounds {
        let w = Workload::SelectOnly;
        let direct = runs.one(w, "direct", ports.direct, round).await?;
        let understudy_first = round % 2 == 1;
        let mut pgbouncer = None;
        if !understudy_first {
            pgbouncer = Some(runs.one(w, "pgbouncer", ports.pgbouncer, round).await?);
        }
        let understudy = runs.one(w, "understudy", ports.understudy, round).await?;
        if let (Some(r), 1) = (with_rules, round) {
            let proxy = UnderstudyProcess::start(r.exe, r.dir, r.cluster, Some(r.file)).await?;
            let target = Target {
                port: proxy.port(),
                pid: proxy.pid(),
            };
            let run = runs.one(w, "understudy+rules", target, round).await;
            proxy.stop().await;
            rules = Some((understudy.clone(), run?));
        }
        let pgbouncer = match pgbouncer {
            Some(run) => run,
            None => runs.one(w, "pgbouncer", ports.pgbouncer, round).await?,
        };
        select_only.push(WorkloadResults {
            direct,
            understudy,
            pgbouncer,
        });
    }
    let mut tpcb_like = Vec::new();
    for round in 1..=rounds {
        tpcb_like.push(runs.workload(Workload::TpcbLike, ports, round).await?);
    }
    let mut autocommit_update = Vec::new();
    for round in 1..=rounds {
        autocommit_update.push(
            runs.workload(Workload::AutocommitUpdate, ports, round)
                .await?,
        );
    }
    Ok(Measured {
        select_only,
        tpcb_like,
        autocommit_update,
        order,
        rules,
    })
}

/// The measured runs, recording their order.
struct Runs<'a> {
    pgbench: &'a Pgbench,
    load: Load,
    log_dir: &'a Path,
    order: &'a mut Vec<String>,
}

impl Runs<'_> {
    /// Round `round` of `workload`: direct, then understudy and PgBouncer, understudy
    /// first in odd rounds.
    async fn workload(
        &mut self,
        workload: Workload,
        ports: Ports,
        round: u32,
    ) -> Result<WorkloadResults, BenchError> {
        let direct = self.one(workload, "direct", ports.direct, round).await?;
        let (understudy, pgbouncer) = if round % 2 == 1 {
            let u = self
                .one(workload, "understudy", ports.understudy, round)
                .await?;
            (
                u,
                self.one(workload, "pgbouncer", ports.pgbouncer, round)
                    .await?,
            )
        } else {
            let b = self
                .one(workload, "pgbouncer", ports.pgbouncer, round)
                .await?;
            (
                self.one(workload, "understudy", ports.understudy, round)
                    .await?,
                b,
            )
        };
        Ok(WorkloadResults {
            direct,
            understudy,
            pgbouncer,
        })
    }

    /// One pgbench run of `workload` against `to`, with the CPU its proxy used.
    async fn one(
        &mut self,
        workload: Workload,
        target: &str,
        to: Target,
        round: u32,
    ) -> Result<RunResult, BenchError> {
        let name = workload.name();
        tracing::info!(
            workload = name,
            target,
            round,
            seconds = self.load.seconds,
            "running pgbench"
        );
        let prefix = self.log_dir.join(format!("{name}-{target}-{round}"));
        let cpu_before = to.pid.and_then(proc_cpu::sample);
        let mut result = self
            .pgbench
            .run(workload, self.load, target, to.port, &prefix)
            .await?;
        let cpu_after = to.pid.and_then(proc_cpu::sample);
        if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
            result.proxy_cpu = proc_cpu::per_transaction(before, after, result.transactions);
        }
        tracing::info!(
            workload = name,
            target,
            tps = format!("{:.1}", result.tps),
            p50_ms = result.latency.p50_ms,
            p99_ms = result.latency.p99_ms,
            proxy_cpu_us = result
                .proxy_cpu
                .map(|cpu| format!("{:.2}", cpu.total_us()))
                .unwrap_or_default(),
            "done"
        );
        self.order.push(format!("{name}/{target}#{round}"));
        Ok(result)
    }
}

/// `SHOW server_version` on the primary.
async fn server_version(cluster: &EmbeddedCluster) -> Result<String, BenchError> {
    let client = cluster.primary.connect(&cluster.creds, "postgres").await?;
    let row = client
        .query_one("SHOW server_version", &[])
        .await
        .map_err(ClusterError::sql("asking the primary for its version"))?;
    Ok(row.get(0))
}

/// The temporary directory of one benchmark, under /tmp and traversable by the PostgreSQL
/// user; removed (with the other paths registered) when dropped.
struct WorkDir {
    path: PathBuf,
    extra: Vec<PathBuf>,
}

impl WorkDir {
    /// Creates `/tmp/understudy-bench-<pid>-<n>` (mode 0755).
    fn create() -> Result<WorkDir, BenchError> {
        use std::os::unix::fs::PermissionsExt;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut attempt = 0u32;
        loop {
            let path = PathBuf::from(format!(
                "/tmp/understudy-bench-{}-{}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(BenchError::io(format!(
                            "setting permissions of {}",
                            path.display()
                        )))?;
                    return Ok(WorkDir {
                        path,
                        extra: Vec::new(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(e) => return Err(BenchError::io(format!("creating {}", path.display()))(e)),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Removes `path` too when the directory is removed.
    fn also_remove(&mut self, path: PathBuf) {
        self.extra.push(path);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        for path in std::iter::once(&self.path).chain(&self.extra) {
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove; remove it by hand");
                }
                _ => {}
            }
        }
    }
}
