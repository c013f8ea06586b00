//! Process-wide counters of the proxy, rendered in the Prometheus text
//! format by the admin endpoint. Relaxed atomics: each counter is
//! independent and read only for reporting.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters and gauges shared by all sessions.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// Client connections accepted.
    pub connections_total: AtomicU64,
    /// Client connections open now (gauge).
    pub connections_active: AtomicU64,
    /// Sessions that completed startup and reached the relay.
    pub sessions_total: AtomicU64,
    /// Sessions relaying now (gauge).
    pub sessions_active: AtomicU64,
    /// Bytes received from clients.
    pub client_bytes_in: AtomicU64,
    /// Bytes received from servers.
    pub server_bytes_in: AtomicU64,
    /// Simple queries and Execute messages from clients.
    pub queries_total: AtomicU64,
    /// ErrorResponses sent by servers to clients.
    pub server_errors_total: AtomicU64,
    /// Failed client authentications.
    pub auth_failures_total: AtomicU64,
    /// Client connections refused because of `max_client_connections`.
    pub connections_refused_total: AtomicU64,
    /// Failed attempts to open a backend connection.
    pub backend_connect_errors_total: AtomicU64,
    /// Client protocol violations.
    pub client_protocol_errors_total: AtomicU64,
    /// Cancel requests received.
    pub cancel_requests_total: AtomicU64,
    /// Cancel requests forwarded to a server.
    pub cancel_forwarded_total: AtomicU64,
    /// Sessions moved to another backend after theirs was lost.
    pub sessions_moved_total: AtomicU64,
    /// Sessions that lost their backend and could not be moved.
    pub move_failures_total: AtomicU64,
    /// Transactions failed with 40001 because their replay differed.
    pub replay_divergences_total: AtomicU64,
    /// Sessions ended by `proxy.idle_in_transaction_timeout_ms`.
    pub idle_in_transaction_timeouts_total: AtomicU64,
    /// Client connections that completed a TLS handshake.
    pub tls_handshakes_total: AtomicU64,
    /// Statements refused by a rule.
    pub rule_denials_total: AtomicU64,
    /// Statements refused, per rule name.
    pub rule_denials: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Result values masked by a rule.
    pub masked_values_total: AtomicU64,
    /// Statements waiting for a table held for maintenance (gauge).
    pub held_statements: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Counts a statement refused by `rule`.
pub fn denied(metrics: &ProxyMetrics, rule: &str) {
    inc(&metrics.rule_denials_total);
    if let Ok(mut per_rule) = metrics.rule_denials.lock() {
        *per_rule.entry(rule.to_owned()).or_default() += 1;
    }
}

/// Subtracts one from a gauge.
pub fn dec(gauge: &AtomicU64) {
    gauge.fetch_sub(1, Ordering::Relaxed);
}

impl ProxyMetrics {
    /// Sessions relaying now.
    pub fn sessions_active(&self) -> u64 {
        self.sessions_active.load(Ordering::Relaxed)
    }

    /// Appends every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self, out: &mut String) {
        let metrics: [(&str, &str, &str, &AtomicU64); 22] = [
            (
                "understudy_client_connections_total",
                "counter",
                "Client connections accepted.",
                &self.connections_total,
            ),
            (
                "understudy_client_connections",
                "gauge",
                "Client connections open now.",
                &self.connections_active,
            ),
            (
                "understudy_sessions_total",
                "counter",
                "Sessions that completed startup.",
                &self.sessions_total,
            ),
            (
                "understudy_sessions",
                "gauge",
                "Sessions relaying now.",
                &self.sessions_active,
            ),
            (
                "understudy_client_bytes_total",
                "counter",
                "Bytes received from clients.",
                &self.client_bytes_in,
            ),
            (
                "understudy_server_bytes_total",
                "counter",
                "Bytes received from servers.",
                &self.server_bytes_in,
            ),
            (
                "understudy_queries_total",
                "counter",
                "Simple queries and Execute messages relayed.",
                &self.queries_total,
            ),
            (
                "understudy_server_errors_total",
                "counter",
                "ErrorResponses relayed from servers.",
                &self.server_errors_total,
            ),
            (
                "understudy_auth_failures_total",
                "counter",
                "Failed client authentications.",
                &self.auth_failures_total,
            ),
            (
                "understudy_connections_refused_total",
                "counter",
                "Connections refused by max_client_connections.",
                &self.connections_refused_total,
            ),
            (
                "understudy_backend_connect_errors_total",
                "counter",
                "Failed backend connection attempts.",
                &self.backend_connect_errors_total,
            ),
            (
                "understudy_client_protocol_errors_total",
                "counter",
                "Malformed messages from clients.",
                &self.client_protocol_errors_total,
            ),
            (
                "understudy_cancel_requests_total",
                "counter",
                "Cancel requests received.",
                &self.cancel_requests_total,
            ),
            (
                "understudy_cancel_forwarded_total",
                "counter",
                "Cancel requests forwarded to a server.",
                &self.cancel_forwarded_total,
            ),
            (
                "understudy_sessions_moved_total",
                "counter",
                "Sessions moved to another backend after theirs was lost.",
                &self.sessions_moved_total,
            ),
            (
                "understudy_move_failures_total",
                "counter",
                "Sessions that lost their backend and could not be moved.",
                &self.move_failures_total,
            ),
            (
                "understudy_replay_divergences_total",
                "counter",
                "Transactions failed with 40001 because their replay differed.",
                &self.replay_divergences_total,
            ),
            (
                "understudy_idle_in_transaction_timeouts_total",
                "counter",
                "Sessions ended by proxy.idle_in_transaction_timeout_ms.",
                &self.idle_in_transaction_timeouts_total,
            ),
            (
                "understudy_tls_handshakes_total",
                "counter",
                "Client connections that completed a TLS handshake.",
                &self.tls_handshakes_total,
            ),
            (
                "understudy_rule_denials_total",
                "counter",
                "Statements refused by a rule (SQLSTATE 42501).",
                &self.rule_denials_total,
            ),
            (
                "understudy_masked_values_total",
                "counter",
                "Result values masked by a rule.",
                &self.masked_values_total,
            ),
            (
                "understudy_held_statements",
                "gauge",
                "Statements waiting for a table held for maintenance.",
                &self.held_statements,
            ),
        ];
        for (name, kind, help, value) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP understudy_rule_denials Statements refused, per rule."
        );
        let _ = writeln!(out, "# TYPE understudy_rule_denials counter");
        if let Ok(per_rule) = self.rule_denials.lock() {
            for (rule, count) in per_rule.iter() {
                let label = rule.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "understudy_rule_denials{{rule=\"{label}\"}} {count}");
            }
        }
    }
}
