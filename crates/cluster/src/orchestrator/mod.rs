//! The orchestrator of `understudy up`: it owns the [`EmbeddedCluster`], watches the
//! primary, and on failure fences it, promotes the standby, publishes the new primary to
//! sessions and rebuilds the old primary as the new standby; on request it moves the
//! primary role to the standby without losing anything (switchover).
//!
//! What sessions see is a [`ClusterView`] on a `watch` channel: the primary to use (none
//! while a failover or switchover is under way: hold), a generation that increases at
//! every change of primary, and the phase. Every step is recorded as a
//! [`FailoverEvent`] and counted in [`OrchestratorMetrics`].
//!
//! Who may change what: every change of roles, and every publication of the view,
//! happens with the cluster lock held (failover, switchover, end of a rebuild, shutdown),
//! so they never interleave. The monitor task probes without the lock and takes it only
//! to fail over; a failure report made stale by a publication in between is dropped.
//!
//! # Layout
//!
//! - `view.rs` — [`ClusterView`], [`Endpoint`], [`Phase`].
//! - `probe.rs` — [`HealthSettings`], the probe of the primary and the failure rule, the
//!   readiness check of a standby.
//! - `failover.rs` — the monitor task and the failover sequence.
//! - `fence.rs` — killing every process of the failed primary's data directory.
//! - `promote.rs` — promoting the standby and preparing its replication slot.
//! - `rebuild.rs` — making the old primary a streaming standby again, in the background.
//! - `switchover.rs` — the planned switchover and its [`SwitchoverReport`].
//! - `events.rs` — [`FailoverEvent`], [`Step`] and the bounded event ring.
//! - `metrics.rs` — [`OrchestratorMetrics`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::embedded::EmbeddedCluster;
use crate::error::Result;
use crate::node::{Credentials, Node};
use crate::status::{self, NodeStatus};

mod events;
mod failover;
mod fence;
mod metrics;
mod probe;
mod promote;
mod rebuild;
mod switchover;
mod view;

pub use events::{FailoverEvent, Step, EVENT_CAPACITY};
pub use metrics::OrchestratorMetrics;
pub use probe::HealthSettings;
pub use switchover::SwitchoverReport;
pub use view::{ClusterView, Endpoint, Phase};

use events::EventLog;

/// How long a status query may wait for a node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the cluster would survive the loss of its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Redundancy {
    /// The standby is a promotable standby of the primary.
    Ready,
    /// The standby is being rebuilt from the primary; it cannot be promoted yet.
    Rebuilding,
}

/// The two nodes in their current roles.
#[derive(Debug, Clone)]
pub struct Roles {
    /// The node that is (or was last) the primary.
    pub primary: Node,
    /// The other node.
    pub standby: Node,
}

/// Starts orchestrators.
#[derive(Debug)]
pub struct Orchestrator;

impl Orchestrator {
    /// Takes ownership of `cluster` (primary and standby running), publishes its primary
    /// as generation 1 and starts watching it. Must be called inside a tokio runtime.
    pub fn spawn(cluster: EmbeddedCluster, health: HealthSettings) -> OrchestratorHandle {
        let metrics = Arc::new(OrchestratorMetrics::default());
        metrics.set_generation(1);
        let (view, _) = watch::channel(ClusterView::serving(Endpoint::of(&cluster.primary), 1));
        let (redundancy, _) = watch::channel(Redundancy::Ready);
        let (stopping, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            creds: cluster.creds.clone(),
            health,
            view,
            events: EventLog::default(),
            metrics,
            roles: Mutex::new(Roles {
                primary: cluster.primary.clone(),
                standby: cluster.standby.clone(),
            }),
            cluster: tokio::sync::Mutex::new(Some(cluster)),
            rebuild: Mutex::new(None),
            redundancy,
            stopping,
        });
        let monitor = tokio::spawn(failover::monitor(Arc::clone(&inner)));
        OrchestratorHandle {
            inner,
            monitor: Mutex::new(Some(monitor)),
        }
    }
}

/// The running orchestrator. Dropping it without [`OrchestratorHandle::shutdown`] stops
/// its tasks, and the cluster is then stopped by signal (see [`EmbeddedCluster`]'s `Drop`).
#[derive(Debug)]
pub struct OrchestratorHandle {
    inner: Arc<Inner>,
    monitor: Mutex<Option<JoinHandle<()>>>,
}

impl OrchestratorHandle {
    /// A receiver of the published view; the current value is available at once.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.inner.view.subscribe()
    }

    /// Role, port, pid and lag of both nodes (current primary first); a node that does
    /// not answer is `down`.
    pub async fn status(&self) -> Vec<NodeStatus> {
        let roles = self.inner.roles();
        status::collect(
            &[&roles.primary, &roles.standby],
            &self.inner.creds,
            STATUS_TIMEOUT,
        )
        .await
    }

    /// The recent steps of failovers, switchovers and rebuilds, oldest first (at most
    /// [`EVENT_CAPACITY`]).
    pub fn events(&self) -> Vec<FailoverEvent> {
        self.inner.events.recent()
    }

    /// The orchestrator's counters.
    pub fn metrics(&self) -> Arc<OrchestratorMetrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// Whether the standby can take over right now.
    pub fn redundancy(&self) -> Redundancy {
        *self.inner.redundancy.borrow()
    }

    /// A receiver of [`Redundancy`] changes.
    pub fn redundancy_changes(&self) -> watch::Receiver<Redundancy> {
        self.inner.redundancy.subscribe()
    }

    /// The two nodes in their current roles (descriptions, for signals and paths).
    pub fn roles(&self) -> Roles {
        self.inner.roles()
    }

    /// The superuser of both nodes.
    pub fn credentials(&self) -> &Credentials {
        &self.inner.creds
    }

    /// Moves the primary role to the standby: publishes [`Phase::Draining`], waits for
    /// `drained` (every session parked at a transaction boundary), stops the primary
    /// cleanly, waits until the standby has replayed all of it, promotes the standby,
    /// publishes it, and rebuilds the old primary as its standby. Refused (nothing
    /// touched) unless the standby is streaming and nothing else is under way.
    pub async fn switchover(&self, drained: impl Future<Output = ()>) -> Result<SwitchoverReport> {
        switchover::run(&self.inner, drained).await
    }

    /// Stops the monitor and any rebuild, then both nodes; returns when no process of
    /// their data directories is left. The view then has no primary. Calling it again
    /// does nothing.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stopping.send_replace(true);
        let monitor = lock(&self.monitor).take();
        if let Some(monitor) = monitor {
            monitor.abort();
            let _ = monitor.await;
        }
        let mut guard = self.inner.cluster.lock().await;
        let cluster = guard.take();
        // With the cluster gone from under the lock, nothing can start another rebuild.
        self.inner.abort_rebuild().await;
        drop(guard);
        let Some(cluster) = cluster else {
            return Ok(());
        };
        let view = self.inner.current();
        self.inner.publish(ClusterView {
            primary: None,
            ..view
        });
        let mut timeline = events::Timeline::new(&self.inner.events, tokio::time::Instant::now());
        let result = cluster.shutdown().await;
        let detail = match &result {
            Ok(()) => "both nodes stopped".to_string(),
            Err(e) => e.to_string(),
        };
        timeline.step(Step::ShutDown, "cluster", detail);
        result
    }
}

impl Drop for OrchestratorHandle {
    fn drop(&mut self) {
        self.inner.stopping.send_replace(true);
        if let Some(monitor) = lock(&self.monitor).take() {
            monitor.abort();
        }
        if let Some(rebuild) = lock(&self.inner.rebuild).take() {
            rebuild.abort();
        }
    }
}

/// State shared by the handle and the orchestrator's tasks.
#[derive(Debug)]
struct Inner {
    creds: Credentials,
    health: HealthSettings,
    view: watch::Sender<ClusterView>,
    events: EventLog,
    metrics: Arc<OrchestratorMetrics>,
    /// Copies of the node descriptions in their current roles, for status and probes.
    roles: Mutex<Roles>,
    /// The cluster; whoever changes roles or publishes holds this lock. None once shut
    /// down.
    cluster: tokio::sync::Mutex<Option<EmbeddedCluster>>,
    /// The background rebuild, if one runs.
    rebuild: Mutex<Option<JoinHandle<()>>>,
    redundancy: watch::Sender<Redundancy>,
    /// Set when shutting down.
    stopping: watch::Sender<bool>,
}

impl Inner {
    /// Publishes `view` to sessions (always notifies, even when unchanged).
    fn publish(&self, view: ClusterView) {
        tracing::info!(
            primary = ?view.primary.as_ref().map(|p| p.to_string()),
            generation = view.generation,
            phase = %view.phase,
            "publishing the cluster view"
        );
        self.metrics.set_generation(view.generation);
        self.view.send_replace(view);
    }

    /// The published view.
    fn current(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    fn roles(&self) -> Roles {
        lock(&self.roles).clone()
    }

    fn set_roles(&self, cluster: &EmbeddedCluster) {
        *lock(&self.roles) = Roles {
            primary: cluster.primary.clone(),
            standby: cluster.standby.clone(),
        };
    }

    /// Stops the background rebuild, if any, and waits until its task is gone. The
    /// processes it may have started are left to the caller.
    async fn abort_rebuild(&self) {
        let task = lock(&self.rebuild).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Resolves once shutdown has begun.
    async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}

/// Locks a std mutex, ignoring poisoning (the data stays usable: plain values).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
