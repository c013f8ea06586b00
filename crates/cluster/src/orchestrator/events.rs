//! The steps of failovers, switchovers and rebuilds as they happen: each is logged
//! (`tracing`) and kept, with its wall-clock time and durations, in a bounded ring that
//! `understudy status` shows.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

/// How many events the ring keeps.
pub const EVENT_CAPACITY: usize = 256;

/// One step of a failover, a switchover or a rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// The primary was declared failed (the detail says why).
    FailureDetected,
    /// The standby cannot be promoted (down, or not yet a streaming standby): no primary
    /// is published; probing continues.
    StandbyUnavailable,
    /// The primary that was declared failed answers again and is published again.
    PrimaryRecovered,
    /// Every process of the old primary's data directory is gone.
    Fenced,
    /// Some process of the old primary survived SIGKILL; the standby is not promoted.
    FenceFailed,
    /// The standby was promoted and accepts writes.
    Promoted,
    /// Promoting the standby failed; it is retried.
    PromotionFailed,
    /// The new primary was published to sessions.
    Published,
    /// Recording the new primary in `state.toml` failed.
    StateNotSaved,
    /// A switchover was asked for; sessions are draining.
    SwitchoverStarted,
    /// Every session is parked at a transaction boundary.
    Drained,
    /// The old primary was shut down cleanly (the detail has its last checkpoint).
    PrimaryStopped,
    /// The standby has replayed everything the old primary wrote.
    CaughtUp,
    /// The switchover was abandoned; the old primary serves again.
    SwitchoverAborted,
    /// Rebuilding a node as a standby of the primary started.
    RebuildStarted,
    /// `pg_rewind` could not be used; the node is copied afresh with `pg_basebackup`.
    RewindFailed,
    /// The rebuilt node streams from the primary: the cluster survives the next crash.
    RedundancyRestored,
    /// A rebuild attempt failed; it is retried later.
    RebuildFailed,
    /// The orchestrator was shut down.
    ShutDown,
}

impl Step {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::FailureDetected => "failure_detected",
            Step::StandbyUnavailable => "standby_unavailable",
            Step::PrimaryRecovered => "primary_recovered",
            Step::Fenced => "fenced",
            Step::FenceFailed => "fence_failed",
            Step::Promoted => "promoted",
            Step::PromotionFailed => "promotion_failed",
            Step::Published => "published",
            Step::StateNotSaved => "state_not_saved",
            Step::SwitchoverStarted => "switchover_started",
            Step::Drained => "drained",
            Step::PrimaryStopped => "primary_stopped",
            Step::CaughtUp => "caught_up",
            Step::SwitchoverAborted => "switchover_aborted",
            Step::RebuildStarted => "rebuild_started",
            Step::RewindFailed => "rewind_failed",
            Step::RedundancyRestored => "redundancy_restored",
            Step::RebuildFailed => "rebuild_failed",
            Step::ShutDown => "shut_down",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A recorded step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverEvent {
    /// Wall-clock time of the step, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What happened.
    pub step: Step,
    /// The node it happened to.
    pub node: String,
    /// How long this step took (since the previous step of the same operation).
    pub step_ms: u64,
    /// Time since the operation began (failure detected, switchover asked for, rebuild
    /// started).
    pub elapsed_ms: u64,
    /// Details: a reason, an error, a position in the WAL.
    pub detail: String,
}

/// The bounded ring of recent events.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    ring: Mutex<VecDeque<FailoverEvent>>,
}

impl EventLog {
    /// Logs `event` and keeps it, dropping the oldest beyond [`EVENT_CAPACITY`].
    pub(crate) fn push(&self, event: FailoverEvent) {
        tracing::info!(
            step = %event.step,
            node = %event.node,
            step_ms = event.step_ms,
            elapsed_ms = event.elapsed_ms,
            detail = %event.detail,
            "orchestrator"
        );
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == EVENT_CAPACITY {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The kept events, oldest first.
    pub(crate) fn recent(&self) -> Vec<FailoverEvent> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().cloned().collect()
    }
}

/// The clock of one operation: records steps with the time since the previous step and
/// since the start.
pub(crate) struct Timeline<'a> {
    log: &'a EventLog,
    start: Instant,
    last: Instant,
}

impl<'a> Timeline<'a> {
    /// An operation that began at `start`.
    pub(crate) fn new(log: &'a EventLog, start: Instant) -> Timeline<'a> {
        Timeline {
            log,
            start,
            last: start,
        }
    }

    /// Records `step` for `node` now.
    pub(crate) fn step(&mut self, step: Step, node: &str, detail: impl Into<String>) {
        let now = Instant::now();
        self.log.push(FailoverEvent {
            at_unix_ms: unix_ms(),
            step,
            node: node.to_string(),
            step_ms: millis(now - self.last),
            elapsed_ms: millis(now - self.start),
            detail: detail.into(),
        });
        self.last = now;
    }

    /// Time since the operation began.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_events() {
        let log = EventLog::default();
        let mut timeline = Timeline::new(&log, Instant::now());
        for i in 0..EVENT_CAPACITY + 10 {
            timeline.step(Step::Fenced, "node1", format!("{i}"));
        }
        let events = log.recent();
        assert_eq!(events.len(), EVENT_CAPACITY);
        assert_eq!(events[0].detail, "10");
        assert_eq!(
            events.last().map(|e| e.detail.clone()),
            Some(format!("{}", EVENT_CAPACITY + 9))
        );
        assert!(events.iter().all(|e| e.elapsed_ms >= e.step_ms));
    }
}
