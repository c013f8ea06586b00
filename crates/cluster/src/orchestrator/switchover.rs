//! The planned switchover: the primary role moves to the standby without losing a
//! commit. Sessions are drained to transaction boundaries ([`Phase::Draining`]), the
//! primary is shut down cleanly (its WAL, up to the shutdown checkpoint, goes to the
//! standby on the way), the standby is promoted once it has replayed that checkpoint,
//! the new primary is published, and the old primary follows it as a standby.
//!
//! Sessions wait from the moment they are parked until the publication, so nothing that
//! can be done before is done in that time: the primary's dirty pages are flushed by a
//! checkpoint while sessions still run, the connection to the standby that watches its
//! replay and promotes it is opened before the drain, the primary's control file is
//! polled for its shutdown checkpoint (the standby is promoted once it has replayed it,
//! while the old postmaster is still exiting), and a primary known to hold nothing the
//! standby lacks is published as lossless (the proxy then has no commit to re-apply).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::events::{millis, Step, Timeline};
use super::rebuild::{self, streams};
use super::view::{ClusterView, Endpoint, Phase};
use super::{promote, Inner, Redundancy};
use crate::error::{ClusterError, Result};
use crate::node::{ControlData, Credentials, Node, StopMode};
use crate::status::{self, format_lsn as lsn};

/// How long the clean shutdown of the old primary may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the standby may take to replay the old primary's shutdown checkpoint.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);
/// How long the switchover waits for the old primary to stream from the new one.
const RESTORE_WAIT: Duration = Duration::from_secs(120);
/// Pause between replay checks.
const POLL: Duration = Duration::from_millis(2);
/// Bound on one connection attempt to the standby.
const CONNECT: Duration = Duration::from_secs(2);

/// What a switchover did and how long each part took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwitchoverReport {
    /// The node that was the primary.
    pub old_primary: String,
    /// The node that is the primary now.
    pub new_primary: String,
    /// The generation of the published view with the new primary.
    pub generation: u64,
    /// From publishing [`Phase::Draining`] until `drained` resolved.
    pub drain_ms: u64,
    /// The old primary's clean shutdown, until its shutdown checkpoint was written (or,
    /// when its control file could not tell, until it exited).
    pub stop_ms: u64,
    /// Until the standby had replayed the old primary's shutdown checkpoint.
    pub catch_up_ms: u64,
    /// Promotion of the standby until it accepted writes.
    pub promote_ms: u64,
    /// From `drained` until the new primary was published: how long parked sessions
    /// waited for a primary.
    pub paused_ms: u64,
    /// From the request until the new primary was published.
    pub total_ms: u64,
    /// From publication until the old primary streamed from the new one; None when that
    /// did not happen within the wait (the rebuild goes on in the background).
    pub standby_restored_ms: Option<u64>,
}

/// Runs a switchover (see [`super::OrchestratorHandle::switchover`]).
pub(super) async fn run(
    inner: &Arc<Inner>,
    drained: impl Future<Output = ()>,
) -> Result<SwitchoverReport> {
    let start = Instant::now();
    let refuse = |reason: String| Err(ClusterError::NotReady { reason });
    if inner.current().phase != Phase::Serving {
        return refuse("a failover or another switchover is under way".into());
    }
    let mut guard = inner.cluster.lock().await;
    let cluster = guard.as_mut().ok_or(ClusterError::ShutDown)?;
    let view = inner.current();
    if view.phase != Phase::Serving || view.primary.is_none() {
        return refuse("a failover or another switchover is under way".into());
    }
    if *inner.redundancy.borrow() != Redundancy::Ready {
        return refuse(format!(
            "node {} is still being rebuilt as a standby",
            cluster.standby.name()
        ));
    }
    let old = cluster.primary.name().to_string();
    let new = cluster.standby.name().to_string();
    check_streaming(&inner.creds, &cluster.primary, &new).await?;
    // Flushing dirty pages now, while sessions still run, keeps the shutdown checkpoint
    // (which they wait for) short.
    if let Err(e) = checkpoint(&inner.creds, &cluster.primary).await {
        tracing::warn!(error = %e, "checkpoint before the switchover failed");
    }
    // Watches the standby's replay and promotes it; opened now, not while sessions wait.
    let mut observer = Some(
        cluster
            .standby
            .connect_within(&inner.creds, "postgres", CONNECT)
            .await?,
    );

    let mut timeline = Timeline::new(&inner.events, start);
    timeline.step(
        Step::SwitchoverStarted,
        &old,
        format!("moving sessions to {new}"),
    );
    let successor = Some(Endpoint::of(&cluster.standby));
    inner.publish(ClusterView {
        phase: Phase::Draining,
        successor: successor.clone(),
        ..view.clone()
    });
    let drain_start = Instant::now();
    tokio::select! {
        () = drained => {}
        () = inner.stopped() => return Err(ClusterError::ShutDown),
    }
    let drain_ms = millis(drain_start.elapsed());
    timeline.step(Step::Drained, &old, "every session is parked");
    let paused_from = Instant::now();
    inner.publish(ClusterView {
        successor,
        ..ClusterView::holding(view.generation, Phase::Draining)
    });

    let stop_start = Instant::now();
    let abort = |reason: String| ClusterError::SwitchoverAborted {
        primary: old.clone(),
        reason,
    };
    let control = match shutdown_checkpoint(&cluster.primary).await {
        Some(checkpoint_lsn) => Ok(ControlData {
            state: "shut down".to_owned(),
            checkpoint_lsn,
        }),
        None => {
            if let Err(e) = cluster
                .primary
                .stop_promptly(StopMode::Fast, STOP_TIMEOUT)
                .await
            {
                // Processes survive SIGKILL: the node cannot be stopped, so it stays the
                // primary.
                timeline.step(Step::SwitchoverAborted, &old, e.to_string());
                inner.publish(ClusterView::serving(
                    Endpoint::of(&cluster.primary),
                    view.generation,
                ));
                return Err(abort(e.to_string()));
            }
            cluster.primary.control_data().await
        }
    };
    let stop_ms = millis(stop_start.elapsed());
    let catch_up_start = Instant::now();
    let mut caught_up = false;
    match control {
        Ok(control) if control.is_clean_shutdown() => {
            timeline.step(
                Step::PrimaryStopped,
                &old,
                format!(
                    "shut down cleanly, last checkpoint at {}",
                    lsn(control.checkpoint_lsn)
                ),
            );
            if let Err(reason) = wait_replayed(
                &inner.creds,
                &cluster.standby,
                &mut observer,
                control.checkpoint_lsn,
            )
            .await
            {
                timeline.step(Step::SwitchoverAborted, &old, reason.clone());
                restart_old_primary(inner, &mut cluster.primary, view.generation).await;
                return Err(abort(reason));
            }
            timeline.step(Step::CaughtUp, &new, "replayed the shutdown checkpoint");
            caught_up = true;
        }
        other => {
            // The primary died on the way down: what it wrote last may be missing on the
            // standby, exactly as in a failover, and it is stopped (fenced) already.
            let detail = match other {
                Ok(control) => format!("not shut down cleanly ({})", control.state),
                Err(e) => format!("control file unreadable: {e}"),
            };
            timeline.step(Step::PrimaryStopped, &old, detail);
        }
    }
    let catch_up_ms = millis(catch_up_start.elapsed());

    let promote_start = Instant::now();
    let promotion = match observer.take() {
        Some(client) => promote::promote_on(&cluster.standby, &inner.creds, client).await,
        None => promote::promote(&mut cluster.standby, &inner.creds).await,
    };
    let promoted = match promotion {
        Ok(detail) => detail,
        Err(e) => {
            let role = role_of(&inner.creds, &cluster.standby).await;
            if role != Some(status::Role::Primary) {
                // Still a standby, or unreachable: the old primary takes over again.
                timeline.step(Step::SwitchoverAborted, &new, e.to_string());
                restart_old_primary(inner, &mut cluster.primary, view.generation).await;
                return Err(abort(e.to_string()));
            }
            // It left recovery but did not show it accepts writes in time: it is the
            // primary now, the old one must not come back. Publish it; the monitor
            // takes over from there.
            timeline.step(Step::PromotionFailed, &new, e.to_string());
            "left recovery".to_string()
        }
    };
    inner.redundancy.send_replace(Redundancy::Rebuilding);
    let promote_ms = millis(promote_start.elapsed());
    timeline.step(Step::Promoted, &new, promoted);

    cluster.swap_roles();
    inner.set_roles(cluster);
    if let Err(e) = cluster.record_primary() {
        timeline.step(Step::StateNotSaved, &new, e.to_string());
    }
    let generation = view.generation + 1;
    let endpoint = Endpoint::of(&cluster.primary);
    inner.publish(if caught_up {
        ClusterView::handed_over(endpoint, generation)
    } else {
        ClusterView::serving(endpoint, generation)
    });
    let paused_ms = millis(paused_from.elapsed());
    let total_ms = millis(start.elapsed());
    timeline.step(
        Step::Published,
        &new,
        format!("generation {generation}; sessions paused for {paused_ms} ms"),
    );
    inner.metrics.switchover_done();
    // The old primary may still be exiting (its WAL senders wait for the last
    // acknowledgement): it must be gone before it is rebuilt.
    if let Err(e) = cluster
        .standby
        .stop_promptly(StopMode::Fast, STOP_TIMEOUT)
        .await
    {
        tracing::error!(error = %e, "the old primary does not stop after the switchover");
    }
    rebuild::spawn(inner, cluster.standby.clone(), cluster.primary.clone());
    drop(guard);

    let published = Instant::now();
    let mut redundancy = inner.redundancy.subscribe();
    let restored = tokio::select! {
        result = tokio::time::timeout(RESTORE_WAIT, redundancy.wait_for(|r| *r == Redundancy::Ready)) => {
            matches!(result, Ok(Ok(_)))
        }
        () = inner.stopped() => false,
    };
    Ok(SwitchoverReport {
        old_primary: old,
        new_primary: new,
        generation,
        drain_ms,
        stop_ms,
        catch_up_ms,
        promote_ms,
        paused_ms,
        total_ms,
        standby_restored_ms: restored.then(|| millis(published.elapsed())),
    })
}

/// Refuses unless `primary` reports the standby `name` streaming.
async fn check_streaming(creds: &Credentials, primary: &Node, name: &str) -> Result<()> {
    let client = primary
        .connect_within(creds, "postgres", Duration::from_secs(2))
        .await?;
    if streams(&client, name).await? {
        Ok(())
    } else {
        Err(ClusterError::NotReady {
            reason: format!("node {name} is not streaming from node {}", primary.name()),
        })
    }
}

async fn checkpoint(creds: &Credentials, node: &Node) -> Result<()> {
    let client = node
        .connect_within(creds, "postgres", Duration::from_secs(2))
        .await?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(ClusterError::sql(format!(
            "checkpoint on node {}",
            node.name()
        )))
}

/// Begins the fast shutdown of `primary` and waits until its control file shows the
/// shutdown checkpoint written, the last record a primary writes: by then it has no
/// backend left and accepts no connection, so nothing can be written there any more,
/// and the standby can be promoted once it has replayed that record. That is tens of
/// milliseconds before the postmaster exits (its WAL senders wait for the standby's
/// acknowledgement, then every process exits), time the parked sessions would wait.
/// Returns where the checkpoint starts; None when the control file does not tell
/// (unreadable, or the postmaster gone without a clean shutdown), and the caller then
/// waits for the exit and asks `pg_controldata`.
async fn shutdown_checkpoint(primary: &Node) -> Option<u64> {
    primary.kill(StopMode::Fast.signal()).ok()?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let control = primary.read_control_file();
        if let Some(checkpoint) = control.and_then(|c| c.shutdown_checkpoint()) {
            return Some(checkpoint);
        }
        if primary.postmaster_pid().is_none() || Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until `standby` has replayed past `checkpoint` (the start of the old primary's
/// shutdown checkpoint record: replaying it means replaying everything before it), on
/// `client` (opened again if missing; left missing if it fails).
async fn wait_replayed(
    creds: &Credentials,
    standby: &Node,
    client: &mut Option<Client>,
    checkpoint: u64,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    loop {
        let c = match client.take() {
            Some(c) => c,
            None => standby
                .connect_within(creds, "postgres", CONNECT)
                .await
                .map_err(|e| e.to_string())?,
        };
        let replayed = status::replay_lsn(&c).await.map_err(|e| e.to_string())?;
        *client = Some(c);
        if replayed.is_some_and(|replayed| replayed > checkpoint) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "node {} replayed only up to {} of {} within {} s",
                standby.name(),
                replayed.map(lsn).unwrap_or_else(|| "nothing".into()),
                lsn(checkpoint),
                CATCH_UP_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// After an abandoned switchover: starts the old primary again and publishes it. If it
/// does not start, it is published anyway, and the monitor fails over to the standby.
async fn restart_old_primary(inner: &Inner, primary: &mut Node, generation: u64) {
    // It may still be exiting after its shutdown checkpoint.
    if let Err(e) = primary.stop_promptly(StopMode::Fast, STOP_TIMEOUT).await {
        tracing::error!(error = %e, "the old primary does not stop after an abandoned switchover");
    }
    if let Err(e) = primary.start().await {
        tracing::error!(error = %e, "the old primary does not start again after an abandoned switchover");
    }
    inner.publish(ClusterView::serving(Endpoint::of(primary), generation));
}

async fn role_of(creds: &Credentials, node: &Node) -> Option<status::Role> {
    let client = node
        .connect_within(creds, "postgres", Duration::from_secs(2))
        .await
        .ok()?;
    status::node_role(&client).await.ok()
}
