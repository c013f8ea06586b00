//! Sampling WAL positions: the primary's insert position and the lowest
//! position its standbys have flushed, every few milliseconds, over one
//! control connection.
//!
//! Rounds are numbered. A commit acknowledged while round `r` was the last
//! completed one was inserted before round `r + 2` started (round `r + 1`
//! may have started just before the acknowledgement), so its commit record
//! is at or below the insert position of round `r + 2`. Once the standbys'
//! flush position passes that, the commit is safe on them.
//!
//! The sampler also remembers since when its rounds have found no standby
//! streaming at all ([`LsnTracker::standbys_absent_for`]): a large COMMIT
//! waiting for a standby that is down or being rebuilt would only wait out
//! its limit, so it is acknowledged at once then. While rounds find none, the
//! sampler keeps sampling (more slowly) even with nothing waiting, to notice
//! the standby back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use understudy_config::Config;

use super::CommitLog;
use crate::topology::{self, TopologyRx};

/// Pause between samples. Each sample is a query on the primary: every 5 ms
/// cost about a tenth of tpcb-like throughput on 2 cores; 20 ms keeps 20 ms
/// more commits in memory and costs little.
const INTERVAL: Duration = Duration::from_millis(20);
/// Rounds remembered.
const HISTORY: usize = 4096;

/// The latest samples.
#[derive(Default)]
pub struct LsnTracker {
    /// Rounds completed.
    completed: AtomicU64,
    /// (round, insert position) of recent rounds.
    inserts: Mutex<VecDeque<(u64, u64)>>,
    /// Lowest flush position of the standbys, in the latest round; 0 when
    /// there is none.
    standby_flush: AtomicU64,
    /// The configuration lists servers besides the primary: a round that
    /// finds no standby streaming does not make anything safe.
    standbys_listed: AtomicBool,
    /// COMMIT acknowledgements waiting for the standbys outside the log
    /// (`relay::standby_wait`): the sampler runs for them too.
    waiting: AtomicUsize,
    /// When the latest round completed, and since when the rounds up to it
    /// have found no standby streaming.
    absence: Mutex<Absence>,
}

/// Rounds that found no standby streaming (see
/// [`LsnTracker::standbys_absent_for`]).
#[derive(Default)]
struct Absence {
    latest_round_at: Option<Instant>,
    none_streaming_since: Option<Instant>,
}

/// A latest round older than this tells nothing about the standbys now.
const ABSENCE_FRESH: Duration = Duration::from_secs(1);
/// With nothing waiting and no standby streaming, one round in this many
/// samples (every 200 ms), well within [`ABSENCE_FRESH`].
const ABSENT_EVERY: u32 = 10;

impl LsnTracker {
    /// The last completed round.
    pub fn round(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Entries acknowledged in rounds before this one are safe on the
    /// standbys; `None` when nothing is known to be. With no standby
    /// streaming, nothing is: a listed standby may be reconnecting, and a
    /// primary that just died took its WAL senders with it — a round
    /// sampled then finds none, and must not let go of the very commits
    /// the failover will need. Only with no standby configured at all is
    /// there nothing to fail over to, and everything "safe".
    pub fn safe_round(&self) -> Option<u64> {
        if self.completed.load(Ordering::Acquire) == 0 {
            return None;
        }
        let flush = self.standby_flush.load(Ordering::Acquire);
        if flush == 0 {
            return (!self.standbys_listed.load(Ordering::Acquire)).then_some(u64::MAX);
        }
        let inserts = self.inserts.lock().unwrap_or_else(PoisonError::into_inner);
        // The newest round whose insert position the standbys have flushed:
        // commits acknowledged two rounds before it are safe.
        inserts
            .iter()
            .rev()
            .find(|(_, insert)| *insert <= flush)
            .map(|(round, _)| round.saturating_sub(1))
    }

    /// True when a commit acknowledged while `round` was the last completed
    /// one is safe on the standbys (see [`Self::safe_round`]).
    pub fn is_safe(&self, round: u64) -> bool {
        self.safe_round().is_some_and(|safe| round < safe)
    }

    /// How long every round has found no standby streaming, when standbys
    /// are configured and the latest round is recent; `None` when a standby
    /// streams, nothing is known, or no standby is configured (then
    /// [`Self::safe_round`] makes everything safe at once).
    pub fn standbys_absent_for(&self) -> Option<Duration> {
        self.absent_for_at(Instant::now())
    }

    fn absent_for_at(&self, now: Instant) -> Option<Duration> {
        if !self.standbys_listed.load(Ordering::Acquire) {
            return None;
        }
        let absence = self.absence.lock().unwrap_or_else(PoisonError::into_inner);
        let latest = absence.latest_round_at?;
        if now.saturating_duration_since(latest) > ABSENCE_FRESH {
            return None;
        }
        absence
            .none_streaming_since
            .map(|since| now.saturating_duration_since(since))
    }

    /// True while the rounds find no standby streaming: the sampler keeps
    /// sampling to notice one back.
    fn none_streaming(&self) -> bool {
        self.standbys_listed.load(Ordering::Acquire)
            && self
                .absence
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .none_streaming_since
                .is_some()
    }

    /// One more acknowledgement waits for the standbys, until the guard is
    /// dropped.
    pub fn wait(log: &Arc<CommitLog>) -> WaitGuard {
        log.lsn.waiting.fetch_add(1, Ordering::AcqRel);
        WaitGuard(Arc::clone(log))
    }

    fn record(&self, insert: u64, flush: Option<u64>) {
        self.record_at(insert, flush, Instant::now());
    }

    fn record_at(&self, insert: u64, flush: Option<u64>, now: Instant) {
        {
            let mut absence = self.absence.lock().unwrap_or_else(PoisonError::into_inner);
            absence.latest_round_at = Some(now);
            absence.none_streaming_since = match flush {
                Some(_) => None,
                None => absence.none_streaming_since.or(Some(now)),
            };
        }
        let round = self.completed.load(Ordering::Acquire) + 1;
        {
            let mut inserts = self.inserts.lock().unwrap_or_else(PoisonError::into_inner);
            if inserts.len() == HISTORY {
                inserts.pop_front();
            }
            inserts.push_back((round, insert));
        }
        self.standby_flush
            .store(flush.unwrap_or(0), Ordering::Release);
        self.completed.store(round, Ordering::Release);
    }
}

/// An acknowledgement waiting for the standbys (see [`LsnTracker::wait`]).
pub struct WaitGuard(Arc<CommitLog>);

impl WaitGuard {
    /// The log whose sampler the acknowledgement waits on.
    pub fn log(&self) -> &CommitLog {
        &self.0
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.lsn.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Samples the current primary for as long as the proxy runs, purging the
/// log after every round.
pub fn spawn(log: Arc<CommitLog>, config: Arc<Config>, topology: TopologyRx) {
    log.lsn
        .standbys_listed
        .store(config.servers.len() > 1, Ordering::Release);
    tokio::spawn(async move {
        let mut topology = topology;
        let mut client: Option<Sampler> = None;
        let mut idle_rounds: u32 = 0;
        loop {
            tokio::time::sleep(INTERVAL).await;
            if log.is_empty() && log.lsn.waiting.load(Ordering::Acquire) == 0 {
                // Nothing waits for the standbys: no query on the primary
                // (while none streams, one every `ABSENT_EVERY` rounds, to
                // notice one back). A commit acknowledged meanwhile gets an
                // older round, which only makes its bound later, never too
                // early.
                idle_rounds = idle_rounds.wrapping_add(1);
                if !log.lsn.none_streaming() || !idle_rounds.is_multiple_of(ABSENT_EVERY) {
                    continue;
                }
            }
            let Some(primary) =
                topology::wait_for_primary(&mut topology, Duration::from_secs(3600)).await
            else {
                continue;
            };
            let stale = client.as_ref().is_none_or(|s| {
                s.host != primary.host || s.port != primary.port || s.client.is_closed()
            });
            if stale {
                client = Sampler::connect(&config, &primary.host, primary.port).await;
            }
            let Some(sampler) = client.as_ref() else {
                continue;
            };
            let row = sampler.client.query_one(&sampler.sample, &[]).await;
            match row {
                Ok(row) => {
                    let insert: f64 = row.try_get(0).unwrap_or(0.0);
                    let flush: Option<f64> = row.try_get(1).ok().flatten();
                    log.lsn.record(insert as u64, flush.map(|f| f as u64));
                    log.purge();
                }
                Err(e) => {
                    tracing::debug!(error = %e, "WAL position sample failed");
                    client = None;
                }
            }
        }
    });
}

/// The sampling connection to one primary, with its query prepared: each round is then
/// one round trip (Bind, Execute, Sync), not two.
struct Sampler {
    host: String,
    port: u16,
    client: tokio_postgres::Client,
    sample: tokio_postgres::Statement,
}

impl Sampler {
    async fn connect(config: &Config, host: &str, port: u16) -> Option<Sampler> {
        let timeout = config.backend.connect_timeout();
        let client =
            crate::control::connect(config, host, port, "postgres", "understudy-lsn", timeout)
                .await
                .ok()?;
        let sample = client
            .prepare(
                "SELECT (pg_current_wal_insert_lsn() - '0/0')::float8, \
                 (SELECT min(flush_lsn) - '0/0' FROM pg_stat_replication)::float8",
            )
            .await
            .inspect_err(|e| tracing::debug!(error = %e, "cannot prepare the WAL position sample"))
            .ok()?;
        Some(Sampler {
            host: host.to_owned(),
            port,
            client,
            sample,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_safe_two_rounds_after_their_acknowledgement() {
        let lsn = LsnTracker::default();
        lsn.standbys_listed.store(true, Ordering::Release);
        assert_eq!(lsn.safe_round(), None, "no round completed yet");
        lsn.record(100, Some(50));
        lsn.record(200, Some(100));
        lsn.record(300, Some(250));
        // Round 2 (insert 200) is flushed: commits acknowledged in round 0
        // (before round 1 completed) are safe, not those of round 1.
        assert_eq!(lsn.safe_round(), Some(1));
    }

    #[test]
    fn a_round_without_a_streaming_standby_makes_nothing_safe() {
        let lsn = LsnTracker::default();
        lsn.standbys_listed.store(true, Ordering::Release);
        lsn.record(100, Some(100));
        lsn.record(200, Some(200));
        lsn.record(300, Some(300));
        assert_eq!(lsn.safe_round(), Some(2));
        // The primary died: its WAL senders are gone before its last
        // sampled round.
        lsn.record(400, None);
        assert_eq!(lsn.safe_round(), None);
    }

    #[test]
    fn the_standbys_count_as_absent_from_the_first_round_without_one() {
        let lsn = LsnTracker::default();
        lsn.standbys_listed.store(true, Ordering::Release);
        let start = Instant::now();
        assert_eq!(lsn.absent_for_at(start), None, "nothing sampled yet");
        lsn.record_at(100, Some(100), start);
        assert_eq!(lsn.absent_for_at(start), None, "a standby streams");
        let gone = start + Duration::from_millis(20);
        lsn.record_at(200, None, gone);
        lsn.record_at(300, None, gone + Duration::from_millis(500));
        assert_eq!(
            lsn.absent_for_at(gone + Duration::from_millis(600)),
            Some(Duration::from_millis(600)),
            "absent since the first round that found none"
        );
        assert!(lsn.none_streaming(), "the sampler keeps sampling");
        assert_eq!(
            lsn.absent_for_at(gone + Duration::from_secs(3)),
            None,
            "the latest round is too old to tell"
        );
        lsn.record_at(400, Some(350), gone + Duration::from_secs(3));
        assert_eq!(
            lsn.absent_for_at(gone + Duration::from_secs(3)),
            None,
            "back"
        );
        assert!(!lsn.none_streaming());
    }

    #[test]
    fn without_any_standby_configured_none_is_absent() {
        let lsn = LsnTracker::default();
        lsn.record(100, None);
        assert_eq!(lsn.standbys_absent_for(), None);
        assert!(!lsn.none_streaming(), "the sampler rests");
    }

    #[test]
    fn without_any_standby_configured_everything_is_safe() {
        let lsn = LsnTracker::default();
        lsn.record(100, None);
        assert_eq!(lsn.safe_round(), Some(u64::MAX));
    }
}
