//! The monitor task and the failover sequence. The monitor probes the published primary
//! while the cluster is serving; when the primary is declared failed it takes the cluster
//! lock and: publishes "no primary" (sessions hold), makes sure the standby can take over
//! (otherwise it holds and keeps probing both nodes, republishing the old primary if it
//! answers again), fences the old primary, promotes the standby, records and publishes
//! it, and starts rebuilding the old primary as the new standby.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::events::{millis, Step, Timeline};
use super::fence::fence;
use super::probe::{standby_ready, Failure, Probe, Verdict};
use super::view::{ClusterView, Endpoint, Phase};
use super::{promote, rebuild, Inner, Redundancy};

/// How long fencing keeps sending SIGKILL to processes that refuse it or keep appearing
/// before it reports failure and tries again.
pub(super) const FENCE_WAIT: Duration = Duration::from_secs(10);
/// Pause before repeating a failed fencing or promotion.
const RETRY: Duration = Duration::from_secs(1);

/// Watches the primary for as long as the orchestrator runs.
pub(super) async fn monitor(inner: Arc<Inner>) {
    let mut view_rx = inner.view.subscribe();
    loop {
        let view = view_rx.borrow_and_update().clone();
        let primary = inner.roles().primary;
        let watched = match (&view.primary, view.phase) {
            (Some(endpoint), Phase::Serving) => endpoint.name == primary.name(),
            _ => false,
        };
        if !watched {
            // Nothing to watch (a switchover or a failover is under way): wait for news.
            if view_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let mut probe = Probe::new(primary, inner.creds.clone());
        if let Some(failure) = probe.until_failure(&inner.health, &view_rx).await {
            fail_over(&inner, &mut view_rx, failure).await;
        }
    }
}

/// Replaces the failed primary by the standby (see the module documentation).
async fn fail_over(
    inner: &Arc<Inner>,
    view_rx: &mut watch::Receiver<ClusterView>,
    failure: Failure,
) {
    let mut guard = inner.cluster.lock().await;
    if view_rx.has_changed().unwrap_or(true) {
        // Something was published while the lock was awaited: the report is stale.
        tracing::debug!(reason = %failure.reason, "dropping a stale failure report");
        return;
    }
    let Some(cluster) = guard.as_mut() else {
        return;
    };
    let generation = inner.current().generation;
    let old = cluster.primary.name().to_string();
    let settings = inner.health;
    let mut timeline = Timeline::new(&inner.events, failure.last_ok);
    timeline.step(Step::FailureDetected, &old, failure.reason.clone());
    inner.publish(ClusterView::holding(generation, Phase::FailingOver));
    view_rx.borrow_and_update();

    // A standby that can take over, or hold. A postmaster that has exited cannot come
    // back, so what is left of it is fenced while the standby is checked.
    let mut fenced_early = None;
    let mut reported = false;
    let mut standby_client = loop {
        let ready = if *inner.redundancy.borrow() == Redundancy::Rebuilding {
            Err(format!(
                "node {} is still being rebuilt as a standby",
                cluster.standby.name()
            ))
        } else if failure.gone && fenced_early.is_none() {
            let (ready, fenced) = tokio::join!(
                standby_ready(&cluster.standby, &inner.creds, settings.probe_timeout),
                fence(cluster.primary.data_dir(), FENCE_WAIT)
            );
            fenced_early = Some(fenced);
            ready
        } else {
            standby_ready(&cluster.standby, &inner.creds, settings.probe_timeout).await
        };
        let reason = match ready {
            Ok(client) => break Some(client),
            Err(reason) => reason,
        };
        if !reported {
            timeline.step(
                Step::StandbyUnavailable,
                cluster.standby.name(),
                format!("{reason}; no primary is published, probing both nodes"),
            );
            reported = true;
        }
        if !failure.gone {
            let mut probe = Probe::new(cluster.primary.clone(), inner.creds.clone());
            if probe.check(settings.probe_timeout).await == Verdict::Healthy {
                timeline.step(
                    Step::PrimaryRecovered,
                    &old,
                    "answers again; published again",
                );
                inner.publish(ClusterView::serving(
                    Endpoint::of(&cluster.primary),
                    generation,
                ));
                view_rx.borrow_and_update();
                return;
            }
        }
        tokio::time::sleep(settings.probe_interval).await;
    };

    // Fence: nothing of the old primary may run (or commit) once the standby is promoted.
    // Done again when the early fence failed, or the standby took time to be ready (a
    // process could have appeared meanwhile only if something restarted the node, but
    // checking costs one scan).
    let mut early = fenced_early.filter(|_| !reported);
    let fencing = async {
        loop {
            let fenced = match early.take() {
                Some(fenced) => fenced,
                None => fence(cluster.primary.data_dir(), FENCE_WAIT).await,
            };
            match fenced {
                Ok(fenced) => {
                    timeline.step(
                        Step::Fenced,
                        &old,
                        format!(
                            "SIGKILL to {} processes {:?}",
                            fenced.killed.len(),
                            fenced.killed
                        ),
                    );
                    break;
                }
                Err(reason) => {
                    timeline.step(Step::FenceFailed, &old, format!("{reason}; not promoting"));
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    };
    // Meanwhile the standby keeps the WAL the old primary will need once rewound.
    let reserving = async {
        match standby_client.as_ref() {
            Some(client) => promote::reserve_wal_for_old_primary(&cluster.standby, client).await,
            None => Ok(()),
        }
    };
    let ((), reserved) = tokio::join!(fencing, reserving);
    if let Err(e) = reserved {
        // The rebuild creates the slot later and may need a base backup instead.
        tracing::warn!(node = %cluster.standby.name(), error = %e, "cannot reserve WAL for the old primary before the promotion");
    }

    // Promoted with pg_promote() on the connection that found it ready (no program
    // to start); with pg_ctl when that connection is gone.
    let new = cluster.standby.name().to_string();
    loop {
        let promotion = match standby_client.take() {
            Some(client) => promote::promote_on(&cluster.standby, &inner.creds, client).await,
            None => promote::promote(&mut cluster.standby, &inner.creds).await,
        };
        match promotion {
            Ok(detail) => {
                // The only standby is now the primary: nothing can take over until the
                // old primary is rebuilt.
                inner.redundancy.send_replace(Redundancy::Rebuilding);
                timeline.step(Step::Promoted, &new, detail);
                break;
            }
            Err(e) => {
                timeline.step(Step::PromotionFailed, &new, format!("{e}; retrying"));
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    cluster.swap_roles();
    inner.set_roles(cluster);
    if let Err(e) = cluster.record_primary() {
        timeline.step(Step::StateNotSaved, &new, e.to_string());
    }
    let generation = generation + 1;
    inner.publish(ClusterView::serving(
        Endpoint::of(&cluster.primary),
        generation,
    ));
    view_rx.borrow_and_update();
    let detection_ms = millis(failure.declared - failure.last_ok);
    let duration_ms = millis(failure.declared.elapsed());
    timeline.step(
        Step::Published,
        &new,
        format!(
            "generation {generation}; {duration_ms} ms after the failure was declared, {} ms \
             after the last successful probe",
            millis(timeline.elapsed())
        ),
    );
    inner.metrics.failover_done(detection_ms, duration_ms);
    rebuild::spawn(inner, cluster.standby.clone(), cluster.primary.clone());
}
