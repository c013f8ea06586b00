//! What a failover benchmark run measured, from pgbench's output and per-transaction
//! logs: throughput per 100 ms, each client's pause at each kill, errors; and the
//! report files `failover.json`, `failover.md` and `failover.svg`.

use std::path::Path;

use serde::Serialize;

use super::super::error::BenchError;
use super::super::pgbench::{parse_summary, percentile, Load};
use super::super::svg::{throughput_chart, Series};
use super::logs::{LogEntry, PgbenchOutput};
use super::{Kill, BUCKET_US, PAUSE_WINDOW_US};

/// How a client's pause is defined, for the reports.
pub const PAUSE_DEFINITION: &str = "for each kill and each client: the longest interval between two consecutive successful transaction ends of that client that overlaps the second after the kill (it includes the transaction in flight, so a client that never noticed the kill has a pause of about one transaction latency); a client with no successful transaction after that second did not resume";

/// Successful transactions per bucket of [`BUCKET_US`] from `t0`, for `seconds`.
pub fn throughput(entries: &[LogEntry], t0: u64, seconds: u32) -> Vec<u32> {
    let mut buckets = vec![0u32; (u64::from(seconds) * 1_000_000 / BUCKET_US) as usize];
    for e in entries.iter().filter(|e| e.ok && e.end_us >= t0) {
        if let Some(b) = buckets.get_mut(((e.end_us - t0) / BUCKET_US) as usize) {
            *b += 1;
        }
    }
    buckets
}

/// Each client's pause at each kill (µs; see the module documentation), and how many
/// (kill, client) pairs never resumed.
pub fn pauses(entries: &[LogEntry], clients: u32, t0: u64, kills: &[u64]) -> (Vec<u64>, usize) {
    let mut ends: Vec<Vec<u64>> = vec![Vec::new(); clients as usize];
    for e in entries.iter().filter(|e| e.ok) {
        if let Some(v) = ends.get_mut(e.client as usize) {
            v.push(e.end_us);
        }
    }
    let (mut samples, mut stuck) = (Vec::new(), 0);
    for &kill in kills {
        let window_end = kill + PAUSE_WINDOW_US;
        for times in &mut ends {
            times.sort_unstable();
            if times.last().is_none_or(|&last| last <= window_end) {
                stuck += 1;
                continue;
            }
            let (mut prev, mut longest) = (t0, 0);
            for &t in times.iter() {
                if t > kill && prev < window_end {
                    longest = longest.max(t.saturating_sub(prev));
                }
                prev = t;
            }
            samples.push(longest);
        }
    }
    samples.sort_unstable();
    (samples, stuck)
}

/// Pause percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PauseMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

/// One target's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    /// `understudy` or `pgbouncer`.
    pub target: String,
    /// pgbench's exit status (non-zero when clients aborted).
    pub exit_status: String,
    /// Transactions pgbench counted as processed.
    pub transactions: u64,
    /// TPS pgbench reported, when it printed a summary.
    pub tps: Option<f64>,
    /// Transactions that failed with an error the client saw (pgbench's count).
    pub failed_transactions: u64,
    /// Clients pgbench aborted after an error (connection lost, …).
    pub aborted_clients: u64,
    /// Lines of pgbench's standard error that report an error.
    pub error_lines: u64,
    /// The first of them.
    pub first_error: Option<String>,
    /// The kills of the primary during the run.
    pub kills: Vec<Kill>,
    /// Per (kill, client) pause percentiles; none when no client resumed.
    pub pause_ms: Option<PauseMs>,
    /// (kill, client) pairs with a pause.
    pub pause_samples: usize,
    /// (kill, client) pairs where the client did not resume.
    pub not_resumed: usize,
    /// When the last successful transaction ended, in seconds since the start.
    pub last_transaction_s: Option<f64>,
    /// Successful transactions in each 100 ms of the run.
    pub transactions_per_100ms: Vec<u32>,
}

impl TargetReport {
    /// Puts together what pgbench printed and logged for one target.
    pub fn new(
        target: &str,
        load: Load,
        t0: u64,
        output: &PgbenchOutput,
        entries: &[LogEntry],
        kills: Vec<Kill>,
    ) -> TargetReport {
        let (stdout, stderr) = (&output.stdout, &output.stderr);
        let summary = parse_summary(stdout).ok();
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        let kill_times: Vec<u64> = kills.iter().map(|k| k.at_us).collect();
        let (samples, not_resumed) = pauses(entries, load.clients, t0, &kill_times);
        let ms = |p: f64| percentile(&samples, p).map(|us| (us as f64 / 100.0).round() / 10.0);
        let pause_ms = match (ms(50.0), ms(99.0), ms(100.0)) {
            (Some(p50), Some(p99), Some(max)) => Some(PauseMs { p50, p99, max }),
            _ => None,
        };
        TargetReport {
            target: target.to_owned(),
            exit_status: output.status.clone(),
            transactions: summary.as_ref().map_or_else(
                || entries.iter().filter(|e| e.ok).count() as u64,
                |s| s.transactions,
            ),
            tps: summary.as_ref().map(|s| (s.tps * 10.0).round() / 10.0),
            failed_transactions: summary.map_or(0, |s| s.failed),
            aborted_clients: errors
                .iter()
                .filter(|l| l.contains(" aborted in command "))
                .count() as u64,
            error_lines: errors.len() as u64,
            first_error: errors.first().map(|l| l.chars().take(300).collect()),
            kills,
            pause_ms,
            pause_samples: samples.len(),
            not_resumed,
            last_transaction_s: entries
                .iter()
                .filter(|e| e.ok)
                .map(|e| e.end_us.saturating_sub(t0))
                .max()
                .map(|us| (us as f64 / 1e5).round() / 10.0),
            transactions_per_100ms: throughput(entries, t0, load.seconds),
        }
    }
}

/// How the run went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Seconds per pgbench run.
    pub seconds: u32,
    /// Seconds between kills.
    pub kill_every: u32,
    /// pgbench clients.
    pub clients: u32,
    /// pgbench threads.
    pub threads: u32,
    /// pgbench scale factor.
    pub scale: u32,
    /// pgbench `-M`.
    pub query_mode: &'static str,
    /// Width of a throughput bucket.
    pub bucket_ms: u64,
    /// The time after a kill in which pauses are looked for.
    pub pause_window_ms: u64,
    /// [`PAUSE_DEFINITION`].
    pub pause_definition: &'static str,
    /// `pgbench --version`.
    pub pgbench_version: String,
    /// `pgbouncer --version`.
    pub pgbouncer_version: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// How it ran.
    pub settings: Settings,
    /// understudy, then PgBouncer.
    pub targets: Vec<TargetReport>,
}

impl Report {
    /// `failover.md`.
    pub fn to_markdown(&self) -> String {
        let s = &self.settings;
        let mut md = format!(
            "# Failover benchmark\n\npgbench tpcb-like `-M {}`, {} clients, {} threads, scale {}, {} s per target; \
             the primary's postmaster is killed (`kill -9`) every {} s through understudy, once through PgBouncer \
             (pointed at the primary, it has nowhere else to go). pgbench {}, PgBouncer {}.\n\n\
             | target | transactions | TPS¹ | last commit at (s) | failed | aborted clients | kills | pause p50 / p99 / max (ms) | not resumed |\n\
             |---|---:|---:|---:|---:|---:|---:|---|---:|\n",
            s.query_mode, s.clients, s.threads, s.scale, s.seconds, s.kill_every, s.pgbench_version, s.pgbouncer_version
        );
        for t in &self.targets {
            let pause = t.pause_ms.map_or("-".to_owned(), |p| {
                format!("{} / {} / {}", p.p50, p.p99, p.max)
            });
            let tps = t.tps.map_or("-".to_owned(), |v| v.to_string());
            let last = t
                .last_transaction_s
                .map_or("-".to_owned(), |v| v.to_string());
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} of {} |\n",
                t.target,
                t.transactions,
                tps,
                last,
                t.failed_transactions,
                t.aborted_clients,
                t.kills.len(),
                pause,
                t.not_resumed,
                t.not_resumed + t.pause_samples
            ));
        }
        md.push_str(&format!(
            "\n¹ as pgbench reports it: over the time its clients ran (until they aborted).\n\n\
             Pause: {PAUSE_DEFINITION}.\n\n"
        ));
        for t in &self.targets {
            md.push_str(&format!(
                "{} (pgbench exit status {}):\n",
                t.target, t.exit_status
            ));
            for k in &t.kills {
                let after = k
                    .new_primary_after_ms
                    .map_or("not within 30 s".to_owned(), |ms| format!("{ms} ms"));
                md.push_str(&format!(
                    "- kill at {:.1} s of {} (pid {}); new primary published after {after}\n",
                    k.at_s, k.node, k.pid
                ));
            }
            if let Some(e) = &t.first_error {
                md.push_str(&format!(
                    "- first error ({} error lines): `{}`\n",
                    t.error_lines,
                    e.replace('`', "'")
                ));
            }
            md.push('\n');
        }
        md.push_str("Throughput per 100 ms with the kills marked: failover.svg\n");
        md
    }

    /// `failover.svg`.
    pub fn to_svg(&self) -> String {
        let bucket_s = self.settings.bucket_ms as f64 / 1000.0;
        let series: Vec<Series> = self
            .targets
            .iter()
            .zip(["#1f77b4", "#ff7f0e"])
            .map(|(t, color)| Series {
                name: t.target.clone(),
                color,
                tps: t
                    .transactions_per_100ms
                    .iter()
                    .map(|&n| f64::from(n) / bucket_s)
                    .collect(),
                kills: t.kills.iter().map(|k| k.at_s).collect(),
            })
            .collect();
        let title = format!(
            "pgbench tpcb-like, {} clients: kill -9 of the primary",
            self.settings.clients
        );
        throughput_chart(&title, bucket_s, f64::from(self.settings.seconds), &series)
    }

    /// Writes the three files into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<(), BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        let json = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
        for (name, text) in [
            ("failover.json", json + "\n"),
            ("failover.md", self.to_markdown()),
            ("failover.svg", self.to_svg()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(BenchError::io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    fn ok(client: u32, ms: u64) -> LogEntry {
        LogEntry {
            client,
            end_us: T0 + ms * 1000,
            ok: true,
        }
    }

    #[test]
    fn throughput_counts_successes_per_bucket() {
        let mut entries = vec![ok(0, 10), ok(1, 50), ok(0, 150), ok(0, 2500)];
        entries.push(LogEntry {
            ok: false,
            ..ok(1, 160)
        });
        assert_eq!(
            throughput(&entries, T0, 1),
            vec![2, 1, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn pause_is_the_gap_across_the_kill() {
        // Kill at 1000 ms. Client 0 stalls from 990 ms to 1400 ms; client 1 goes on
        // every 100 ms; client 2 stops for good; client 3 stalls after the window.
        let mut entries: Vec<LogEntry> = (0..30).map(|i| ok(1, i * 100)).collect();
        entries.extend([ok(0, 900), ok(0, 990), ok(0, 1400)]);
        entries.extend((15..30).map(|i| ok(0, i * 100)));
        entries.extend([ok(2, 500), ok(2, 1100)]);
        entries.extend([ok(3, 950), ok(3, 1050), ok(3, 2050), ok(3, 9000)]);
        let (samples, stuck) = pauses(&entries, 4, T0, &[T0 + 1_000_000]);
        assert_eq!(samples, vec![100_000, 410_000, 1_000_000]);
        assert_eq!(stuck, 1);
    }
}
