//! Restoring redundancy after a change of primary, in the background: the replication
//! slot for the standby is created on the new primary, the old primary is rewound to the new primary's history (`pg_rewind`, which runs crash recovery first
//! when the node was killed) or, when that fails, copied afresh (`pg_basebackup`); then it
//! is configured as a standby using the slot prepared at promotion, started, and watched
//! until the new primary reports it streaming. Failed attempts are retried with a growing
//! pause, for as long as the roles stay the same.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::events::{Step, Timeline};
use super::failover::FENCE_WAIT;
use super::fence::fence;
use super::{lock, promote, Inner, Redundancy};
use crate::embedded::STANDBY_SLOT;
use crate::error::{ClusterError, Result};
use crate::node::{Credentials, Node};
use crate::status;

/// Pause after the first failed attempt; doubled after each further one.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between attempts.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a started standby may take to reach streaming.
const STREAMING_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between checks of `pg_stat_replication`.
const POLL: Duration = Duration::from_millis(20);

/// Starts rebuilding `target` as a standby of `source` in the background (replacing a
/// rebuild already running). The standby cannot be promoted until it is done.
pub(super) fn spawn(inner: &Arc<Inner>, target: Node, source: Node) {
    inner.redundancy.send_replace(Redundancy::Rebuilding);
    let task = tokio::spawn(run(Arc::clone(inner), target, source));
    if let Some(previous) = lock(&inner.rebuild).replace(task) {
        previous.abort();
    }
}

async fn run(inner: Arc<Inner>, mut target: Node, source: Node) {
    let mut pause = RETRY_FIRST;
    for attempt in 1u32.. {
        let mut timeline = Timeline::new(&inner.events, Instant::now());
        timeline.step(
            Step::RebuildStarted,
            target.name(),
            format!("attempt {attempt}: following {}", source.name()),
        );
        match rebuild_once(&inner.creds, &mut target, &source, &mut timeline).await {
            Ok(method) => {
                let mut guard = inner.cluster.lock().await;
                let Some(cluster) = guard.as_mut() else {
                    return;
                };
                if cluster.standby.name() != target.name() {
                    return;
                }
                // The port may have changed.
                cluster.standby = target.clone();
                inner.set_roles(cluster);
                inner.metrics.rebuild_done();
                timeline.step(
                    Step::RedundancyRestored,
                    target.name(),
                    format!("{method}; streams from {}", source.name()),
                );
                inner.redundancy.send_replace(Redundancy::Ready);
                return;
            }
            Err(e) => {
                inner.metrics.rebuild_failed();
                timeline.step(
                    Step::RebuildFailed,
                    target.name(),
                    format!("{e}; retrying in {} s", pause.as_secs()),
                );
                if let Err(reason) = fence(target.data_dir(), FENCE_WAIT).await {
                    tracing::warn!(%reason, "cannot stop what the failed rebuild started");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// One attempt; returns how the data was brought over.
async fn rebuild_once(
    creds: &Credentials,
    target: &mut Node,
    source: &Node,
    timeline: &mut Timeline<'_>,
) -> Result<&'static str> {
    fence(target.data_dir(), FENCE_WAIT)
        .await
        .map_err(ClusterError::Inconsistent)?;
    promote::prepare_slot(source, creds).await?;
    // A freshly promoted server's control file still names its old timeline until its
    // next checkpoint, and pg_rewind reads the timeline from there: without this it may
    // wrongly find that no rewind is required.
    let client = source
        .connect_within(creds, "postgres", Duration::from_secs(10))
        .await?;
    client
        .batch_execute("CHECKPOINT")
        .await
        .map_err(ClusterError::sql(format!(
            "checkpoint on node {}",
            source.name()
        )))?;
    drop(client);
    let method = if target.is_initialized() {
        match target.rewind_from(source).await {
            Ok(()) => "pg_rewind",
            Err(e) => {
                timeline.step(Step::RewindFailed, target.name(), e.to_string());
                target.reclone_from(source, STANDBY_SLOT).await?;
                "pg_basebackup"
            }
        }
    } else {
        target.reclone_from(source, STANDBY_SLOT).await?;
        "pg_basebackup"
    };
    target.configure_standby(source.port(), STANDBY_SLOT)?;
    match target.start().await {
        Ok(()) => {}
        Err(ClusterError::StartFailed { log_tail, .. }) if log_tail.contains("could not bind") => {
            target.start_on_free_port().await?
        }
        Err(e) => return Err(e),
    }
    wait_streaming(creds, source, target.name()).await?;
    Ok(method)
}

/// Polls `pg_stat_replication` on `primary` until the standby named `name` streams and
/// has flushed the WAL the primary had written when the wait began. (A standby whose
/// history diverged also shows up as streaming, for a moment, every few seconds.)
async fn wait_streaming(creds: &Credentials, primary: &Node, name: &str) -> Result<()> {
    let deadline = Instant::now() + STREAMING_DEADLINE;
    let mut client = None;
    let mut target: Option<u64> = None;
    loop {
        if client.is_none() {
            client = primary
                .connect_within(creds, "postgres", Duration::from_secs(2))
                .await
                .ok();
        }
        if let Some(c) = &client {
            if target.is_none() {
                target = status::current_wal_lsn(c).await.ok();
            }
            if let Some(target) = target {
                if flushed(c, name, target).await.unwrap_or(false) {
                    return Ok(());
                }
            }
            if c.is_closed() {
                client = None;
            }
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Inconsistent(format!(
                "node {name} does not stream from node {} after {} s",
                primary.name(),
                STREAMING_DEADLINE.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// True when the standby `name` streams from the primary behind `client` and has flushed
/// everything up to `lsn`.
async fn flushed(client: &tokio_postgres::Client, name: &str, lsn: u64) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_stat_replication \
             WHERE application_name = $1 AND state = 'streaming' \
             AND flush_lsn >= $2::text::pg_lsn",
            &[&name, &status::format_lsn(lsn)],
        )
        .await
        .map_err(ClusterError::sql(format!(
            "asking pg_stat_replication about {name}"
        )))?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// True when `pg_stat_replication` on the primary behind `client` shows the standby
/// `name` streaming.
pub(super) async fn streams(client: &tokio_postgres::Client, name: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_stat_replication \
             WHERE application_name = $1 AND state = 'streaming'",
            &[&name],
        )
        .await
        .map_err(ClusterError::sql(format!(
            "asking pg_stat_replication about {name}"
        )))?;
    Ok(row.get::<_, i64>(0) > 0)
}
