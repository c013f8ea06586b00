//! Shared helpers of the orchestrator tests: a cluster under an orchestrator in a
//! temporary directory, waiting for views and conditions with deadlines, and reading
//! the recorded steps.

#![allow(dead_code)]

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;
use understudy_cluster::process::{is_alive, processes_in_dir};
use understudy_cluster::{
    ClusterView, Credentials, EmbeddedCluster, FailoverEvent, HealthSettings, Node, Orchestrator,
    OrchestratorHandle, Redundancy, Step,
};

/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Tests of one binary run one at a time: each runs two PostgreSQL servers and measures
/// failure detection, which a machine crowded by parallel clusters would distort.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running cluster under an orchestrator.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub handle: OrchestratorHandle,
    pub creds: Credentials,
}

impl Fixture {
    /// Brings a fresh cluster up and hands it to an orchestrator with `health`.
    pub async fn start(health: HealthSettings) -> Fixture {
        let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let cluster = EmbeddedCluster::up(&dir.path().join(".understudy"))
            .await
            .expect("up");
        let creds = cluster.creds.clone();
        let handle = Orchestrator::spawn(cluster, health);
        Fixture { dir, handle, creds }
    }

    /// The working directory of the cluster.
    pub fn work(&self) -> std::path::PathBuf {
        self.dir.path().join(".understudy")
    }

    /// A connection to the current primary (as published).
    pub async fn primary(&self) -> Client {
        let node = self.handle.roles().primary;
        node.connect(&self.creds, "postgres")
            .await
            .expect("connect to the primary")
    }

    /// Waits until the view satisfies `ok`.
    pub async fn wait_view(&self, what: &str, ok: impl FnMut(&ClusterView) -> bool) -> ClusterView {
        wait_view(&mut self.handle.view(), what, ok).await
    }

    /// Waits until the standby streams again after a change of primary.
    pub async fn wait_redundancy(&self) {
        let mut rx = self.handle.redundancy_changes();
        tokio::time::timeout(DEADLINE, rx.wait_for(|r| *r == Redundancy::Ready))
            .await
            .expect("redundancy restored in time")
            .expect("orchestrator running");
    }
}

/// Settings that do not declare a busy machine's primary failed: for tests that are not
/// about detection.
pub fn lenient() -> HealthSettings {
    HealthSettings {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_secs(2),
        failure_timeout: Duration::from_secs(4),
    }
}

/// Waits until the view on `rx` satisfies `ok`.
pub async fn wait_view(
    rx: &mut watch::Receiver<ClusterView>,
    what: &str,
    ok: impl FnMut(&ClusterView) -> bool,
) -> ClusterView {
    tokio::time::timeout(DEADLINE, rx.wait_for(ok))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("orchestrator running")
        .clone()
}

/// Polls `check` every 20 ms until it returns true; panics after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every live pid of `node`: its postmaster and every process in its data directory.
pub fn node_pids(node: &Node) -> Vec<i32> {
    let mut pids: Vec<i32> = node.postmaster_pid().into_iter().collect();
    pids.extend(processes_in_dir(node.data_dir()));
    pids.sort();
    pids.dedup();
    pids
}

/// The pids among `pids` that are still alive.
pub fn alive(pids: &[i32]) -> Vec<i32> {
    pids.iter().copied().filter(|pid| is_alive(*pid)).collect()
}

/// True when `query` returns a row on `node`.
pub async fn has_row(node: &Node, creds: &Credentials, query: &str) -> bool {
    match node.connect(creds, "postgres").await {
        Ok(client) => matches!(client.query_opt(query, &[]).await, Ok(Some(_))),
        Err(_) => false,
    }
}

/// True when `primary` reports the standby `name` streaming.
pub async fn streams_from(primary: &Node, creds: &Credentials, name: &str) -> bool {
    let Ok(client) = primary.connect(creds, "postgres").await else {
        return false;
    };
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
            &[&name],
        )
        .await
        .map(|row| row.get::<_, i64>(0) == 1)
        .unwrap_or(false)
}

/// The recorded steps from the `n`-th last [`Step::FailureDetected`] on, printed with
/// their timings (the test output shows them with `--nocapture`).
pub fn failover_steps(events: &[FailoverEvent]) -> Vec<FailoverEvent> {
    let start = events
        .iter()
        .rposition(|e| e.step == Step::FailureDetected)
        .expect("a failure was recorded");
    let steps: Vec<FailoverEvent> = events[start..].to_vec();
    for e in &steps {
        eprintln!(
            "  {:<20} {:<6} +{:>5} ms  (at {:>5} ms)  {}",
            e.step.as_str(),
            e.node,
            e.step_ms,
            e.elapsed_ms,
            e.detail
        );
    }
    steps
}

/// Milliseconds since the Unix epoch, to compare with [`FailoverEvent::at_unix_ms`].
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Prints when each step happened relative to `origin` (a Unix time in ms, e.g. the
/// moment the primary was killed).
pub fn print_since(origin: u64, what: &str, events: &[FailoverEvent]) {
    let line: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} +{} ms",
                e.step.as_str(),
                e.at_unix_ms.saturating_sub(origin)
            )
        })
        .collect();
    eprintln!("  since {what}: {}", line.join(", "));
}

/// The kinds of `events`, in order.
pub fn kinds(events: &[FailoverEvent]) -> Vec<Step> {
    events.iter().map(|e| e.step).collect()
}

/// The first event of kind `step`.
pub fn find(events: &[FailoverEvent], step: Step) -> &FailoverEvent {
    events
        .iter()
        .find(|e| e.step == step)
        .unwrap_or_else(|| panic!("no {step} event in {:?}", kinds(events)))
}
