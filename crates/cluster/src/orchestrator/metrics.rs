//! Counters of the orchestrator, rendered in the Prometheus text format next to the
//! proxy's metrics on `/metrics`. Relaxed atomics: each value is independent and read
//! only for reporting.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Failover, switchover and rebuild counters.
#[derive(Debug, Default)]
pub struct OrchestratorMetrics {
    failovers_total: AtomicU64,
    switchovers_total: AtomicU64,
    last_failover_duration_ms: AtomicU64,
    last_failover_detection_ms: AtomicU64,
    rebuilds_total: AtomicU64,
    rebuild_failures_total: AtomicU64,
    generation: AtomicU64,
}

impl OrchestratorMetrics {
    /// Completed failovers (a new primary was published).
    pub fn failovers_total(&self) -> u64 {
        self.failovers_total.load(Ordering::Relaxed)
    }

    /// Completed switchovers.
    pub fn switchovers_total(&self) -> u64 {
        self.switchovers_total.load(Ordering::Relaxed)
    }

    /// Milliseconds from declaring the primary failed to publishing the new one, for the
    /// last failover (0 before the first).
    pub fn last_failover_duration_ms(&self) -> u64 {
        self.last_failover_duration_ms.load(Ordering::Relaxed)
    }

    /// Milliseconds from the last successful probe of the failed primary to declaring
    /// it failed, for the last failover.
    pub fn last_failover_detection_ms(&self) -> u64 {
        self.last_failover_detection_ms.load(Ordering::Relaxed)
    }

    /// Nodes rebuilt as standbys that reached streaming.
    pub fn rebuilds_total(&self) -> u64 {
        self.rebuilds_total.load(Ordering::Relaxed)
    }

    /// Rebuild attempts that failed (each is retried).
    pub fn rebuild_failures_total(&self) -> u64 {
        self.rebuild_failures_total.load(Ordering::Relaxed)
    }

    /// The generation of the published view.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub(crate) fn failover_done(&self, detection_ms: u64, duration_ms: u64) {
        self.failovers_total.fetch_add(1, Ordering::Relaxed);
        self.last_failover_detection_ms
            .store(detection_ms, Ordering::Relaxed);
        self.last_failover_duration_ms
            .store(duration_ms, Ordering::Relaxed);
    }

    pub(crate) fn switchover_done(&self) {
        self.switchovers_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rebuild_done(&self) {
        self.rebuilds_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rebuild_failed(&self) {
        self.rebuild_failures_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// Appends every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let metrics: [(&str, &str, &str, u64); 7] = [
            (
                "understudy_failovers_total",
                "counter",
                "Failovers completed (a standby was promoted and published).",
                self.failovers_total(),
            ),
            (
                "understudy_switchovers_total",
                "counter",
                "Planned switchovers completed.",
                self.switchovers_total(),
            ),
            (
                "understudy_last_failover_duration_ms",
                "gauge",
                "Milliseconds from declaring the primary failed to publishing the new one, last failover.",
                self.last_failover_duration_ms(),
            ),
            (
                "understudy_last_failover_detection_ms",
                "gauge",
                "Milliseconds from the last successful probe to declaring the primary failed, last failover.",
                self.last_failover_detection_ms(),
            ),
            (
                "understudy_rebuilds_total",
                "counter",
                "Nodes rebuilt as standbys that reached streaming.",
                self.rebuilds_total(),
            ),
            (
                "understudy_rebuild_failures_total",
                "counter",
                "Rebuild attempts that failed.",
                self.rebuild_failures_total(),
            ),
            (
                "understudy_primary_generation",
                "gauge",
                "Generation of the published primary (increases at every change of primary).",
                self.generation(),
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let metrics = OrchestratorMetrics::default();
        metrics.failover_done(120, 340);
        metrics.rebuild_failed();
        metrics.set_generation(2);
        let mut out = String::new();
        metrics.render_prometheus(&mut out);
        for line in [
            "understudy_failovers_total 1\n",
            "understudy_switchovers_total 0\n",
            "understudy_last_failover_duration_ms 340\n",
            "understudy_last_failover_detection_ms 120\n",
            "understudy_rebuilds_total 0\n",
            "understudy_rebuild_failures_total 1\n",
            "understudy_primary_generation 2\n",
            "# TYPE understudy_failovers_total counter\n",
        ] {
            assert!(out.contains(line), "{line:?} missing from:\n{out}");
        }
    }
}
