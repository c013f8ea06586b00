//! Running pgbench — initialisation and timed runs over loopback TCP, the password passed
//! in `PGPASSWORD` — and reading what it reports: the summary on standard output (TPS
//! without connection time, transactions, failures) and the per-transaction logs of `-l`,
//! from which the latency percentiles are computed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use understudy_cluster::Credentials;

use super::error::BenchError;
use super::proc_cpu::CpuPerTransaction;

/// Lines of pgbench's standard error quoted in errors.
const STDERR_TAIL_LINES: usize = 15;
/// Extra time a timed run may take beyond its duration (vacuum, connections, exit).
const RUN_SLACK: Duration = Duration::from_secs(120);
/// Bound on `pgbench -i`.
const INIT_TIMEOUT: Duration = Duration::from_secs(1800);
/// libpq variables that must not change what pgbench does; every option is explicit.
const SCRUBBED_ENV: [&str; 10] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGPASSFILE",
    "PGAPPNAME",
];

/// A pgbench workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// The builtin `select-only` script (`-S`) with prepared statements.
    SelectOnly,
    /// The builtin `tpcb-like` script (the default) with prepared statements.
    TpcbLike,
    /// One `UPDATE` per transaction, outside any transaction block, sent as a simple
    /// Query: what understudy runs through the extended protocol to stamp it
    /// (docs/decisions/0007), at the price of a second round trip.
    AutocommitUpdate,
}

/// The script of [`Workload::AutocommitUpdate`] (rows of scale 1, which every scale
/// has).
const AUTOCOMMIT_UPDATE_SCRIPT: &str = "\\set aid random(1, 100000)\n\
     \\set delta random(-5000, 5000)\n\
     UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n";

impl Workload {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select_only",
            Workload::TpcbLike => "tpcb_like",
            Workload::AutocommitUpdate => "autocommit_update",
        }
    }

    /// The pgbench command line of the workload, as the report shows it.
    pub fn command_line(self) -> &'static str {
        match self {
            Workload::SelectOnly => "pgbench -S -M prepared",
            Workload::TpcbLike => "pgbench -M prepared",
            Workload::AutocommitUpdate => "pgbench -M simple -f autocommit_update.sql",
        }
    }

    /// The pgbench options selecting the workload (a script it needs is written next to
    /// `log_prefix` first).
    fn args(self, log_prefix: &Path) -> Result<Vec<std::ffi::OsString>, BenchError> {
        Ok(match self {
            Workload::SelectOnly => vec!["-S".into(), "-M".into(), "prepared".into()],
            Workload::TpcbLike => vec!["-M".into(), "prepared".into()],
            Workload::AutocommitUpdate => {
                let mut script = log_prefix.as_os_str().to_owned();
                script.push(".sql");
                std::fs::write(&script, AUTOCOMMIT_UPDATE_SCRIPT).map_err(BenchError::io(
                    format!("writing {}", Path::new(&script).display()),
                ))?;
                vec!["-M".into(), "simple".into(), "-f".into(), script]
            }
        })
    }
}

/// How long and with how many connections a run goes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Duration (`-T`).
    pub seconds: u32,
    /// Clients (`-c`).
    pub clients: u32,
    /// Threads (`-j`).
    pub threads: u32,
}

/// What one timed run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    /// Transactions processed.
    pub transactions: u64,
    /// Transactions that failed (serialization or deadlock errors).
    pub failed: u64,
    /// Latency percentiles from the per-transaction log.
    pub latency: Latency,
    /// The proxy's CPU per transaction, when the run went through a proxy whose CPU
    /// time could be read.
    pub proxy_cpu: Option<CpuPerTransaction>,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// The summary pgbench prints on standard output.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// `tps = … (without initial connection time)`.
    pub tps: f64,
    /// `number of transactions actually processed: …`.
    pub transactions: u64,
    /// `number of failed transactions: …` (0 when the line is absent).
    pub failed: u64,
}

/// pgbench, with the role it logs in as.
#[derive(Debug, Clone)]
pub struct Pgbench {
    path: PathBuf,
    creds: Credentials,
}

impl Pgbench {
    /// `path` logs in as `creds` to database `postgres`.
    pub fn new(path: PathBuf, creds: Credentials) -> Pgbench {
        Pgbench { path, creds }
    }

    /// `pgbench -i -s scale` against 127.0.0.1:`port`.
    pub async fn initialize(&self, port: u16, scale: u32) -> Result<(), BenchError> {
        let what = format!("-i -s {scale}");
        let target = format!("the primary (127.0.0.1:{port})");
        let mut cmd = self.command(port);
        cmd.args(["-i", "-s", &scale.to_string(), "--quiet", "postgres"]);
        self.execute(cmd, INIT_TIMEOUT, &what, &target).await?;
        Ok(())
    }

    /// Runs `workload` under `load` against 127.0.0.1:`port` (named `target` in errors),
    /// logging every transaction under `log_prefix`; reads and then removes the logs.
    pub async fn run(
        &self,
        workload: Workload,
        load: Load,
        target: &str,
        port: u16,
        log_prefix: &Path,
    ) -> Result<RunResult, BenchError> {
        let what = format!("{} run", workload.name());
        let target = format!("{target} (127.0.0.1:{port})");
        let mut cmd = self.command(port);
        cmd.args(workload.args(log_prefix)?)
            .args(["-T", &load.seconds.to_string()])
            .args(["-c", &load.clients.to_string()])
            .args(["-j", &load.threads.to_string()])
            .arg("-l")
            .arg("--log-prefix")
            .arg(log_prefix)
            .arg("postgres");
        let limit = Duration::from_secs(u64::from(load.seconds)) + RUN_SLACK;
        let output = self.execute(cmd, limit, &what, &target).await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary = parse_summary(&stdout).map_err(|reason| BenchError::PgbenchOutput {
            what: what.clone(),
            target: target.clone(),
            reason,
            output: stdout.to_string(),
        })?;
        let prefix = log_prefix.to_path_buf();
        let latencies = tokio::task::spawn_blocking(move || read_logs(&prefix))
            .await
            .map_err(|e| BenchError::Io {
                context: "reading the pgbench transaction logs".into(),
                source: std::io::Error::other(e),
            })??;
        let latency = latency_ms(latencies).ok_or_else(|| BenchError::PgbenchOutput {
            what,
            target,
            reason: format!(
                "no completed transaction in the logs {}.*",
                log_prefix.display()
            ),
            output: stdout.to_string(),
        })?;
        Ok(RunResult {
            tps: summary.tps,
            transactions: summary.transactions,
            failed: summary.failed,
            latency,
            proxy_cpu: None,
        })
    }

    /// pgbench with host, port, user and password set and a clean libpq environment.
    fn command(&self, port: u16) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.path);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.env("PGPASSWORD", &self.creds.password)
            .env("PGSSLMODE", "disable")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", &self.creds.superuser])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `cmd` to completion within `limit`; a non-zero exit is an error.
    async fn execute(
        &self,
        mut cmd: tokio::process::Command,
        limit: Duration,
        what: &str,
        target: &str,
    ) -> Result<Output, BenchError> {
        let failed = |status: String, stderr: &[u8]| BenchError::Pgbench {
            what: what.to_string(),
            target: target.to_string(),
            status,
            stderr_tail: tail(&String::from_utf8_lossy(stderr), STDERR_TAIL_LINES),
        };
        let child = cmd
            .spawn()
            .map_err(BenchError::io(format!("starting {}", self.path.display())))?;
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(output) => {
                output.map_err(BenchError::io(format!("running {}", self.path.display())))?
            }
            Err(_) => {
                return Err(failed(
                    format!("killed: still running after {} s", limit.as_secs()),
                    b"",
                ))
            }
        };
        if !output.status.success() {
            return Err(failed(output.status.to_string(), &output.stderr));
        }
        Ok(output)
    }
}

/// Reads the summary pgbench prints at the end of a run.
pub fn parse_summary(stdout: &str) -> Result<Summary, String> {
    let mut tps = None;
    let mut transactions = None;
    let mut failed = 0;
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            if rest.contains("without initial connection time") {
                tps = first_word(rest).and_then(|v| v.parse::<f64>().ok());
            }
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            // "N" for -T runs, "N/M" for -t runs.
            transactions = first_word(rest)
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse::<u64>().ok());
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            failed = first_word(rest)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("malformed line {line:?}"))?;
        }
    }
    let tps = tps.ok_or("no \"tps = … (without initial connection time)\" line")?;
    let transactions =
        transactions.ok_or("no \"number of transactions actually processed\" line")?;
    Ok(Summary {
        tps,
        transactions,
        failed,
    })
}

fn first_word(s: &str) -> Option<&str> {
    s.split_whitespace().next()
}

/// The latency in microseconds of one line of a pgbench transaction log
/// (`client_id transaction_no time script_no time_epoch time_us …`); None for a
/// transaction that failed or was skipped (`failed`/`skipped` in place of the time) and
/// for lines that are not log lines.
pub fn parse_log_latency_us(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let _client = fields.next()?.parse::<u64>().ok()?;
    let _transaction = fields.next()?.parse::<u64>().ok()?;
    fields.next()?.parse::<u64>().ok()
}

/// The latencies (µs) of every completed transaction in the logs `prefix.<pid>` and
/// `prefix.<pid>.<thread>`; the log files are removed once read.
fn read_logs(prefix: &Path) -> Result<Vec<u64>, BenchError> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let stem = match prefix.file_name() {
        Some(name) => format!("{}.", name.to_string_lossy()),
        None => return Ok(Vec::new()),
    };
    let entries =
        std::fs::read_dir(dir).map_err(BenchError::io(format!("listing {}", dir.display())))?;
    let mut latencies = Vec::new();
    for entry in entries {
        let entry = entry.map_err(BenchError::io(format!("listing {}", dir.display())))?;
        if !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .map_err(BenchError::io(format!("reading {}", path.display())))?;
        latencies.extend(text.lines().filter_map(parse_log_latency_us));
        std::fs::remove_file(&path)
            .map_err(BenchError::io(format!("removing {}", path.display())))?;
    }
    Ok(latencies)
}

/// p50 and p99 (nearest rank) of latencies in microseconds, in milliseconds; None when
/// there are none.
pub fn latency_ms(mut latencies_us: Vec<u64>) -> Option<Latency> {
    latencies_us.sort_unstable();
    let ms = |p: f64| percentile(&latencies_us, p).map(|us| us as f64 / 1000.0);
    Some(Latency {
        p50_ms: ms(50.0)?,
        p99_ms: ms(99.0)?,
    })
}

/// The nearest-rank `p`th percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The last `lines` non-empty lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(no output on standard error)".to_string()
    } else {
        tail.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard output of `pgbench -S -M prepared -c 4 -j 2 -T 2` (PostgreSQL 15.18).
    const SELECT_ONLY_STDOUT: &str = "\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 92388
number of failed transactions: 0 (0.000%)
latency average = 0.086 ms
initial connection time = 9.796 ms
tps = 46276.441480 (without initial connection time)
";

    /// Standard output of `pgbench -M prepared -c 4 -j 2 -T 2` (PostgreSQL 15.18).
    const TPCB_STDOUT: &str = "\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
duration: 2 s
number of transactions actually processed: 4972
number of failed transactions: 0 (0.000%)
latency average = 1.611 ms
initial connection time = 8.434 ms
tps = 2483.016655 (without initial connection time)
";

    /// Standard error of a run where a backend was terminated (exit status 2).
    const ABORTED_STDERR: &str = "\
starting vacuum...end.
pgbench: error: client 0 script 0 aborted in command 1 query 0: FATAL:  terminating connection due to administrator command
pgbench: error: Run was aborted; the above results are incomplete.
";

    #[test]
    fn summary_of_a_select_only_run() {
        let summary = parse_summary(SELECT_ONLY_STDOUT).expect("parses");
        assert_eq!(
            summary,
            Summary {
                tps: 46276.441480,
                transactions: 92388,
                failed: 0,
            }
        );
    }

    #[test]
    fn summary_of_a_tpcb_run_and_failures() {
        let summary = parse_summary(TPCB_STDOUT).expect("parses");
        assert_eq!(summary.tps, 2483.016655);
        assert_eq!(summary.transactions, 4972);
        let with_failures = TPCB_STDOUT.replace(
            "number of failed transactions: 0 (0.000%)",
            "number of failed transactions: 17 (0.342%)",
        );
        assert_eq!(parse_summary(&with_failures).expect("parses").failed, 17);
    }

    #[test]
    fn summary_of_a_transaction_count_run() {
        let text = SELECT_ONLY_STDOUT.replace(
            "number of transactions actually processed: 92388",
            "number of transactions actually processed: 400/400",
        );
        assert_eq!(parse_summary(&text).expect("parses").transactions, 400);
    }

    #[test]
    fn summary_without_tps_is_an_error() {
        let text: String = SELECT_ONLY_STDOUT
            .lines()
            .filter(|l| !l.starts_with("tps"))
            .map(|l| format!("{l}\n"))
            .collect();
        let err = parse_summary(&text).unwrap_err();
        assert!(err.contains("tps"), "{err}");
        assert!(parse_summary("").is_err());
    }

    #[test]
    fn log_lines_give_the_latency_in_microseconds() {
        // Lines of `pgbench -l` (15.18): client, transaction, latency (µs), script,
        // epoch seconds, microseconds.
        assert_eq!(
            parse_log_latency_us("0 1 1237 0 1795779576 810079"),
            Some(1237)
        );
        assert_eq!(
            parse_log_latency_us("2 3 283 0 1795779576 810986"),
            Some(283)
        );
        // With --rate: schedule lag follows; with --max-tries: retries.
        assert_eq!(
            parse_log_latency_us("1 7 512 0 1795779576 810986 20 0"),
            Some(512)
        );
        assert_eq!(parse_log_latency_us("3 9 failed 0 1795779576 810986"), None);
        assert_eq!(
            parse_log_latency_us("3 9 skipped 0 1795779576 810986"),
            None
        );
        assert_eq!(parse_log_latency_us(""), None);
        assert_eq!(parse_log_latency_us("starting vacuum...end."), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        let latency = latency_ms(vec![3000, 1000, 2000]).expect("values");
        assert_eq!(latency.p50_ms, 2.0);
        assert_eq!(latency.p99_ms, 3.0);
        assert_eq!(latency_ms(Vec::new()), None);
    }

    #[test]
    fn logs_of_every_thread_are_read_then_removed() {
        let dir =
            std::env::temp_dir().join(format!("understudy-bench-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("run.4242"),
            "0 1 1237 0 1795779576 810079\n0 2 473 0 1795779576 810565\n",
        )
        .expect("write");
        std::fs::write(dir.join("run.4242.1"), "2 1 1728 0 1795779576 810523\n").expect("write");
        std::fs::write(dir.join("other.4242"), "0 1 9 0 1795779576 810079\n").expect("write");
        let mut latencies = read_logs(&dir.join("run")).expect("read");
        latencies.sort_unstable();
        assert_eq!(latencies, vec![473, 1237, 1728]);
        assert!(!dir.join("run.4242").exists());
        assert!(!dir.join("run.4242.1").exists());
        assert!(dir.join("other.4242").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        assert_eq!(
            tail(ABORTED_STDERR, 1),
            "pgbench: error: Run was aborted; the above results are incomplete."
        );
        assert!(tail(ABORTED_STDERR, 15).starts_with("starting vacuum"));
        assert_eq!(tail("", 3), "(no output on standard error)");
    }
}
