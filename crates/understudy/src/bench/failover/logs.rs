//! pgbench runs of the failover benchmark: `pgbench -b tpcb-like -M prepared` with
//! per-transaction logs (`-l`), whose exit status is a result rather than an error
//! (clients abort when their server dies), and the reading of those logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use understudy_cluster::Credentials;

use super::super::error::BenchError;
use super::super::pgbench::Load;

/// Extra time a pgbench run may take beyond `-T`.
const RUN_SLACK: Duration = Duration::from_secs(120);

/// Runs `pgbench -M prepared` (tpcb-like) with per-transaction logs; a non-zero exit
/// (aborted clients) is a result, not an error.
pub async fn run_pgbench(
    program: &Path,
    creds: &Credentials,
    port: u16,
    load: Load,
    prefix: &Path,
) -> Result<PgbenchOutput, BenchError> {
    let mut cmd = tokio::process::Command::new(program);
    // Every option is explicit: no libpq variable may change what pgbench does.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    let (port, seconds) = (port.to_string(), load.seconds.to_string());
    let (clients, threads) = (load.clients.to_string(), load.threads.to_string());
    cmd.env("PGPASSWORD", &creds.password)
        .env("PGSSLMODE", "disable")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", &creds.superuser])
        .args(["-b", "tpcb-like", "-M", "prepared", "-T", &seconds])
        .args(["-c", &clients, "-j", &threads, "-l", "--log-prefix"])
        .arg(prefix)
        .arg("postgres")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let limit = Duration::from_secs(u64::from(load.seconds)) + RUN_SLACK;
    let output = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| BenchError::io("running pgbench")(std::io::ErrorKind::TimedOut.into()))?
        .map_err(BenchError::io(format!("running {}", program.display())))?;
    Ok(PgbenchOutput {
        status: output
            .status
            .code()
            .map_or_else(|| output.status.to_string(), |code| code.to_string()),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// What a pgbench run printed.
pub struct PgbenchOutput {
    /// Its exit status.
    pub status: String,
    /// Standard output (the summary).
    pub stdout: String,
    /// Standard error (errors, aborted clients).
    pub stderr: String,
}

/// One line of a pgbench transaction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// `client_id`.
    pub client: u32,
    /// End of the transaction, µs since the Unix epoch (`time_epoch`, `time_us`).
    pub end_us: u64,
    /// Completed without error (not `failed` or `skipped`).
    pub ok: bool,
}

/// Parses `client_id transaction_no time script_no time_epoch time_us …`.
pub fn parse_log_line(line: &str) -> Option<LogEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (client, _, time, _, epoch, us) = (
        f.first()?,
        f.get(1)?,
        f.get(2)?,
        f.get(3)?,
        f.get(4)?,
        f.get(5)?,
    );
    Some(LogEntry {
        client: client.parse().ok()?,
        end_us: epoch.parse::<u64>().ok()? * 1_000_000 + us.parse::<u64>().ok()?,
        ok: time.parse::<u64>().is_ok(),
    })
}

/// Every entry of the logs `prefix.*`.
pub fn read_logs(prefix: &Path) -> Result<Vec<LogEntry>, BenchError> {
    let dir = prefix
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let stem = format!(
        "{}.",
        prefix.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut entries = Vec::new();
    for entry in
        std::fs::read_dir(&dir).map_err(BenchError::io(format!("listing {}", dir.display())))?
    {
        let path = entry
            .map_err(BenchError::io(format!("listing {}", dir.display())))?
            .path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&stem))
        {
            let text = std::fs::read_to_string(&path)
                .map_err(BenchError::io(format!("reading {}", path.display())))?;
            entries.extend(text.lines().filter_map(parse_log_line));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    #[test]
    fn log_lines() {
        // pgbench 15 `-l`: client, transaction, latency or failed/skipped, script, epoch, µs.
        assert_eq!(
            parse_log_line("3 17 2412 0 1700000000 250000"),
            Some(LogEntry {
                client: 3,
                end_us: T0 + 250_000,
                ok: true
            })
        );
        assert_eq!(
            parse_log_line("3 18 failed 0 1700000001 5").map(|e| e.ok),
            Some(false)
        );
        assert_eq!(parse_log_line("pgbench: error"), None);
        assert_eq!(parse_log_line("1 2 3"), None);
    }
}
