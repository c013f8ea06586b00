//! The benchmark report: `report.json` (figures and settings) and `report.md` (a table
//! per workload with the same-run ratios), written to the output directory. With several
//! rounds, each figure is the median over the rounds, and each ratio the median of the
//! ratios measured within one round.

use std::path::Path;

use serde::Serialize;

use super::error::BenchError;
use super::pgbench::{RunResult, Workload};
use super::proc_cpu::CpuPerTransaction;

/// The three targets' results for one workload in one round.
#[derive(Debug, Clone)]
pub struct WorkloadResults {
    /// pgbench straight to the primary.
    pub direct: RunResult,
    /// Through understudy.
    pub understudy: RunResult,
    /// Through PgBouncer (session mode).
    pub pgbouncer: RunResult,
}

/// Latency percentiles of one target, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// One workload in `report.json`: medians over the rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    /// Rounds measured.
    pub rounds: usize,
    /// TPS straight to the primary.
    pub direct_tps: f64,
    /// TPS through understudy.
    pub understudy_tps: f64,
    /// TPS through PgBouncer.
    pub pgbouncer_tps: f64,
    /// Latency straight to the primary.
    pub direct_latency_ms: LatencyMs,
    /// Latency through understudy.
    pub understudy_latency_ms: LatencyMs,
    /// Latency through PgBouncer.
    pub pgbouncer_latency_ms: LatencyMs,
    /// understudy TPS / direct TPS (null when direct made no progress).
    pub understudy_vs_direct: Option<f64>,
    /// understudy TPS / PgBouncer TPS.
    pub understudy_vs_pgbouncer: Option<f64>,
    /// PgBouncer TPS / direct TPS.
    pub pgbouncer_vs_direct: Option<f64>,
    /// understudy TPS / PgBouncer TPS in each round, in order.
    pub understudy_vs_pgbouncer_by_round: Vec<Option<f64>>,
    /// Transactions processed straight to the primary (all rounds).
    pub direct_transactions: u64,
    /// Transactions processed through understudy (all rounds).
    pub understudy_transactions: u64,
    /// Transactions processed through PgBouncer (all rounds).
    pub pgbouncer_transactions: u64,
    /// Failed transactions straight to the primary (all rounds).
    pub direct_failed_transactions: u64,
    /// Failed transactions through understudy (all rounds).
    pub understudy_failed_transactions: u64,
    /// Failed transactions through PgBouncer (all rounds).
    pub pgbouncer_failed_transactions: u64,
    /// understudy's CPU per transaction, in µs (null when it could not be read).
    pub understudy_cpu_us: Option<CpuPerTransaction>,
    /// PgBouncer's CPU per transaction, in µs.
    pub pgbouncer_cpu_us: Option<CpuPerTransaction>,
    /// understudy's CPU per transaction / PgBouncer's (user + system): below 1, understudy
    /// spends less per transaction.
    pub understudy_vs_pgbouncer_cpu: Option<f64>,
}

impl WorkloadReport {
    /// Takes the medians of the rounds' results and relates them.
    pub fn new(rounds: &[WorkloadResults]) -> WorkloadReport {
        let direct: Vec<&RunResult> = rounds.iter().map(|r| &r.direct).collect();
        let understudy: Vec<&RunResult> = rounds.iter().map(|r| &r.understudy).collect();
        let pgbouncer: Vec<&RunResult> = rounds.iter().map(|r| &r.pgbouncer).collect();
        let tps = |runs: &[&RunResult]| round(median(runs.iter().map(|r| r.tps)).unwrap_or(0.0), 1);
        let latency = |runs: &[&RunResult]| LatencyMs {
            p50: round(
                median(runs.iter().map(|r| r.latency.p50_ms)).unwrap_or(0.0),
                3,
            ),
            p99: round(
                median(runs.iter().map(|r| r.latency.p99_ms)).unwrap_or(0.0),
                3,
            ),
        };
        let ratios = |of: fn(&WorkloadResults) -> (f64, f64)| -> Vec<Option<f64>> {
            rounds
                .iter()
                .map(|r| {
                    let (a, b) = of(r);
                    ratio(a, b)
                })
                .collect()
        };
        let median_ratio = |by_round: &[Option<f64>]| {
            median(by_round.iter().flatten().copied()).map(|r| round(r, 3))
        };
        let u_vs_b = ratios(|r| (r.understudy.tps, r.pgbouncer.tps));
        let cpu = |runs: &[&RunResult]| {
            let measured: Vec<CpuPerTransaction> =
                runs.iter().filter_map(|r| r.proxy_cpu).collect();
            Some(CpuPerTransaction {
                user_us: round(median(measured.iter().map(|c| c.user_us))?, 2),
                system_us: round(median(measured.iter().map(|c| c.system_us))?, 2),
            })
        };
        let cpu_by_round: Vec<Option<f64>> = rounds
            .iter()
            .map(|r| {
                let (u, b) = (r.understudy.proxy_cpu?, r.pgbouncer.proxy_cpu?);
                ratio(u.total_us(), b.total_us())
            })
            .collect();
        let sum = |runs: &[&RunResult], of: fn(&RunResult) -> u64| runs.iter().map(|r| of(r)).sum();
        WorkloadReport {
            rounds: rounds.len(),
            direct_tps: tps(&direct),
            understudy_tps: tps(&understudy),
            pgbouncer_tps: tps(&pgbouncer),
            direct_latency_ms: latency(&direct),
            understudy_latency_ms: latency(&understudy),
            pgbouncer_latency_ms: latency(&pgbouncer),
            understudy_vs_direct: median_ratio(&ratios(|r| (r.understudy.tps, r.direct.tps))),
            understudy_vs_pgbouncer: median_ratio(&u_vs_b),
            pgbouncer_vs_direct: median_ratio(&ratios(|r| (r.pgbouncer.tps, r.direct.tps))),
            understudy_vs_pgbouncer_by_round: u_vs_b,
            direct_transactions: sum(&direct, |r| r.transactions),
            understudy_transactions: sum(&understudy, |r| r.transactions),
            pgbouncer_transactions: sum(&pgbouncer, |r| r.transactions),
            direct_failed_transactions: sum(&direct, |r| r.failed),
            understudy_failed_transactions: sum(&understudy, |r| r.failed),
            pgbouncer_failed_transactions: sum(&pgbouncer, |r| r.failed),
            understudy_cpu_us: cpu(&understudy),
            pgbouncer_cpu_us: cpu(&pgbouncer),
            understudy_vs_pgbouncer_cpu: median_ratio(&cpu_by_round),
        }
    }

    fn rows(&self) -> [(&'static str, f64, LatencyMs, u64); 3] {
        [
            (
                "direct",
                self.direct_tps,
                self.direct_latency_ms,
                self.direct_failed_transactions,
            ),
            (
                "understudy",
                self.understudy_tps,
                self.understudy_latency_ms,
                self.understudy_failed_transactions,
            ),
            (
                "pgbouncer",
                self.pgbouncer_tps,
                self.pgbouncer_latency_ms,
                self.pgbouncer_failed_transactions,
            ),
        ]
    }
}

/// How the benchmark ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Seconds per pgbench run.
    pub seconds: u32,
    /// pgbench clients.
    pub clients: u32,
    /// pgbench threads.
    pub threads: u32,
    /// pgbench scale factor.
    pub scale: u32,
    /// Rounds of each workload.
    pub rounds: u32,
    /// `pgbench --version`.
    pub pgbench_version: String,
    /// `pgbouncer --version`.
    pub pgbouncer_version: String,
    /// `SHOW server_version` on the primary.
    pub postgres_version: String,
    /// CPUs available to this process.
    pub cpus: usize,
    /// The measured runs in the order they ran, as `workload/target#round`.
    pub run_order: Vec<String>,
}

/// Select-only through understudy with and without a rules file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RulesReport {
    /// The rules file.
    pub file: String,
    /// TPS through understudy without rules.
    pub understudy_tps: f64,
    /// TPS through understudy with the rules.
    pub understudy_rules_tps: f64,
    /// Latency with the rules.
    pub understudy_rules_latency_ms: LatencyMs,
    /// `understudy_rules_tps / understudy_tps`.
    pub rules_on_vs_off: Option<f64>,
}

impl RulesReport {
    /// The comparison of `without` and `with` rules.
    pub fn new(file: String, without: &RunResult, with: &RunResult) -> RulesReport {
        RulesReport {
            file,
            understudy_tps: round(without.tps, 1),
            understudy_rules_tps: round(with.tps, 1),
            understudy_rules_latency_ms: LatencyMs {
                p50: round(with.latency.p50_ms, 3),
                p99: round(with.latency.p99_ms, 3),
            },
            rules_on_vs_off: ratio(with.tps, without.tps),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `pgbench -S -M prepared`.
    pub select_only: WorkloadReport,
    /// `pgbench -M prepared` (builtin tpcb-like).
    pub tpcb_like: WorkloadReport,
    /// `pgbench -M simple` of one autocommit `UPDATE` per transaction.
    pub autocommit_update: WorkloadReport,
    /// `--rules`: select-only through understudy with the rules file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<RulesReport>,
    /// How it ran.
    pub settings: Settings,
}

impl Report {
    /// `report.json`.
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(text) => text + "\n",
            // Plain structs of numbers and strings always serialize.
            Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
        }
    }

    /// `report.md`.
    pub fn to_markdown(&self) -> String {
        let s = &self.settings;
        let mut md = String::from("# understudy bench\n\n");
        md.push_str(&format!(
            "pgbench {} · PgBouncer {} (session mode) · PostgreSQL {} · {} CPUs\n\n\
             {} clients, {} threads, {} s per run, scale {}, {} rounds (figures are medians \
             over the rounds). Order: {}.\n",
            s.pgbench_version,
            s.pgbouncer_version,
            s.postgres_version,
            s.cpus,
            s.clients,
            s.threads,
            s.seconds,
            s.scale,
            s.rounds,
            s.run_order.join(", "),
        ));
        for (workload_kind, workload) in [
            (Workload::SelectOnly, &self.select_only),
            (Workload::TpcbLike, &self.tpcb_like),
            (Workload::AutocommitUpdate, &self.autocommit_update),
        ] {
            let (title, command) = (workload_kind.name(), workload_kind.command_line());
            md.push_str(&format!(
                "\n## {title} (`{command}`)\n\n\
                 | target | TPS | p50 (ms) | p99 (ms) | failed |\n\
                 |---|---:|---:|---:|---:|\n"
            ));
            for (target, tps, latency, failed) in workload.rows() {
                md.push_str(&format!(
                    "| {target} | {tps:.1} | {:.3} | {:.3} | {failed} |\n",
                    latency.p50, latency.p99
                ));
            }
            md.push_str(&format!(
                "\nunderstudy / direct: {} · understudy / pgbouncer: {} · pgbouncer / direct: {}\n",
                show_ratio(workload.understudy_vs_direct),
                show_ratio(workload.understudy_vs_pgbouncer),
                show_ratio(workload.pgbouncer_vs_direct),
            ));
            let by_round: Vec<String> = workload
                .understudy_vs_pgbouncer_by_round
                .iter()
                .map(|r| show_ratio(*r))
                .collect();
            md.push_str(&format!(
                "understudy / pgbouncer by round: {}\n",
                by_round.join(", ")
            ));
            if let (Some(u), Some(b)) = (workload.understudy_cpu_us, workload.pgbouncer_cpu_us) {
                md.push_str(&format!(
                    "proxy CPU per transaction (user + system): understudy {:.2} µs (user {:.2}) \
                     · pgbouncer {:.2} µs (user {:.2}) · understudy / pgbouncer: {}\n",
                    u.total_us(),
                    u.user_us,
                    b.total_us(),
                    b.user_us,
                    show_ratio(workload.understudy_vs_pgbouncer_cpu),
                ));
            }
        }
        if let Some(rules) = &self.rules {
            md.push_str(&format!(
                "\n## rules (`pgbench -S -M prepared`, `--rules {}`)\n\n\
                 | target | TPS | p50 (ms) | p99 (ms) |\n\
                 |---|---:|---:|---:|\n\
                 | understudy | {:.1} | | |\n\
                 | understudy+rules | {:.1} | {:.3} | {:.3} |\n\
                 \nrules on / off: {}\n",
                rules.file,
                rules.understudy_tps,
                rules.understudy_rules_tps,
                rules.understudy_rules_latency_ms.p50,
                rules.understudy_rules_latency_ms.p99,
                show_ratio(rules.rules_on_vs_off),
            ));
        }
        md.push_str(
            "\nOnly the ratios between targets measured in this same run are meaningful: \
             client, proxies and PostgreSQL share the machine, and absolute TPS varies from \
             run to run. A proxy's CPU per transaction (its user and system time from \
             /proc over the run, divided by the run's transactions) varies less, and shows \
             what the proxy itself costs.\n",
        );
        md
    }

    /// Writes `report.json` and `report.md` into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> Result<(), BenchError> {
        std::fs::create_dir_all(dir)
            .map_err(BenchError::io(format!("creating {}", dir.display())))?;
        for (name, text) in [
            ("report.json", self.to_json()),
            ("report.md", self.to_markdown()),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(BenchError::io(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

/// `a / b` to three decimals; None when `b` is not positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| round(a / b, 3))
}

/// The median of `values` (the mean of the middle two for an even count); `None`
/// when there are none.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

fn show_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{r:.3}"),
        None => "n/a".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::pgbench::Latency;

    fn run(tps: f64, p50_ms: f64, p99_ms: f64) -> RunResult {
        RunResult {
            tps,
            transactions: (tps * 10.0) as u64,
            failed: 0,
            latency: Latency { p50_ms, p99_ms },
            proxy_cpu: None,
        }
    }

    fn with_cpu(mut run: RunResult, user_us: f64, system_us: f64) -> RunResult {
        run.proxy_cpu = Some(CpuPerTransaction { user_us, system_us });
        run
    }

    fn report() -> Report {
        let select = WorkloadResults {
            direct: run(40000.0, 0.18, 0.5),
            understudy: with_cpu(run(25000.0, 0.3, 0.9), 2.0, 18.0),
            pgbouncer: with_cpu(run(24000.04, 0.31, 1.0), 1.5, 17.5),
        };
        let tpcb = WorkloadResults {
            direct: run(3000.0, 2.5, 8.0),
            understudy: run(0.0, 3.0, 9.0),
            pgbouncer: run(0.0, 3.1, 9.5),
        };
        Report {
            select_only: WorkloadReport::new(&[select]),
            tpcb_like: WorkloadReport::new(std::slice::from_ref(&tpcb)),
            autocommit_update: WorkloadReport::new(&[tpcb]),
            rules: None,
            settings: Settings {
                seconds: 10,
                clients: 8,
                threads: 2,
                scale: 10,
                rounds: 1,
                pgbench_version: "15.18".into(),
                pgbouncer_version: "1.18.0".into(),
                postgres_version: "15.18".into(),
                cpus: 2,
                run_order: vec!["select_only/direct".into(), "select_only/understudy".into()],
            },
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let value: serde_json::Value =
            serde_json::from_str(&report().to_json()).expect("valid JSON");
        let select = &value["select_only"];
        assert_eq!(select["direct_tps"], 40000.0);
        assert_eq!(select["pgbouncer_tps"], 24000.0);
        assert_eq!(select["understudy_latency_ms"]["p50"], 0.3);
        assert_eq!(select["pgbouncer_latency_ms"]["p99"], 1.0);
        assert_eq!(select["understudy_vs_direct"], 0.625);
        assert_eq!(select["understudy_vs_pgbouncer"], 1.042);
        assert_eq!(select["pgbouncer_vs_direct"], 0.6);
        assert_eq!(select["understudy_cpu_us"]["user_us"], 2.0);
        assert_eq!(select["pgbouncer_cpu_us"]["system_us"], 17.5);
        assert_eq!(select["understudy_vs_pgbouncer_cpu"], 1.053);
        let tpcb = &value["tpcb_like"];
        assert_eq!(tpcb["understudy_vs_direct"], 0.0);
        assert!(
            tpcb["understudy_vs_pgbouncer"].is_null(),
            "no division by zero"
        );
        let settings = &value["settings"];
        for key in [
            "seconds",
            "clients",
            "threads",
            "scale",
            "rounds",
            "pgbench_version",
            "pgbouncer_version",
            "cpus",
        ] {
            assert!(!settings[key].is_null(), "settings.{key} present");
        }
    }

    #[test]
    fn markdown_has_a_table_per_workload_and_the_ratios() {
        let md = report().to_markdown();
        assert!(md.contains("## select_only (`pgbench -S -M prepared`)"));
        assert!(md.contains("## tpcb_like (`pgbench -M prepared`)"));
        assert!(md.contains("## autocommit_update (`pgbench -M simple -f autocommit_update.sql`)"));
        assert!(md.contains("| understudy | 25000.0 | 0.300 | 0.900 | 0 |"));
        assert!(md.contains("understudy / direct: 0.625"));
        assert!(md.contains("understudy / pgbouncer: n/a"));
        assert!(
            md.contains(
                "proxy CPU per transaction (user + system): understudy 20.00 µs (user 2.00) \
                 · pgbouncer 19.00 µs (user 1.50) · understudy / pgbouncer: 1.053"
            ),
            "{md}"
        );
        assert_eq!(
            md.matches("proxy CPU per transaction").count(),
            1,
            "only where measured"
        );
        assert!(md.contains("same run"));
        assert_eq!(md.matches("| target | TPS |").count(), 3);
    }

    #[test]
    fn rounds_report_medians_and_the_median_of_same_round_ratios() {
        let round = |u: f64, b: f64| WorkloadResults {
            direct: run(40000.0, 0.1, 0.4),
            understudy: with_cpu(run(u, 0.3, 0.9), 2.0, 600000.0 / u),
            pgbouncer: with_cpu(run(b, 0.3, 0.9), 1.0, 600000.0 / b),
        };
        // The machine slows down over the run: the ratio of the medians
        // (20000 / 19000) mixes rounds; the reported ratio is the median of
        // the rounds' own ratios.
        let rounds = [
            round(30000.0, 29000.0),
            round(20000.0, 19000.0),
            round(10000.0, 12000.0),
        ];
        let report = WorkloadReport::new(&rounds);
        assert_eq!(report.rounds, 3);
        assert_eq!(report.understudy_tps, 20000.0);
        assert_eq!(report.pgbouncer_tps, 19000.0);
        assert_eq!(
            report.understudy_vs_pgbouncer_by_round,
            vec![Some(1.034), Some(1.053), Some(0.833)]
        );
        assert_eq!(report.understudy_vs_pgbouncer, Some(1.034));
        assert_eq!(report.understudy_transactions, 600000);
        // CPU: the medians of each proxy's figures, and the median of the rounds' ratios.
        let cpu = report.understudy_cpu_us.expect("measured");
        assert_eq!((cpu.user_us, cpu.system_us), (2.0, 30.0));
        assert_eq!(
            report.pgbouncer_cpu_us.map(|c| c.system_us),
            Some(round2(600000.0 / 19000.0))
        );
        // Rounds: 22/21.69, 32/32.58, 62/51 -> 1.014, 0.982, 1.216.
        assert_eq!(report.understudy_vs_pgbouncer_cpu, Some(1.014));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    fn round2(value: f64) -> f64 {
        round(value, 2)
    }

    #[test]
    fn rules_comparison_reports_the_ratio_on_over_off() {
        let mut r = report();
        assert!(!r.to_json().contains("rules_on_vs_off"));
        r.rules = Some(RulesReport::new(
            "examples/rules.toml".into(),
            &run(25000.0, 0.3, 0.9),
            &run(24000.0, 0.31, 0.95),
        ));
        let value: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(value["rules"]["rules_on_vs_off"], 0.96);
        assert_eq!(value["rules"]["understudy_rules_tps"], 24000.0);
        let md = r.to_markdown();
        assert!(md.contains("rules on / off: 0.960"), "{md}");
        assert!(md.contains("| understudy+rules | 24000.0 |"), "{md}");
    }
}
