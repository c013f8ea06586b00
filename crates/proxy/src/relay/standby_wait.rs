//! The acknowledgement of a committed transaction too large for the journal,
//! kept from the client until the standbys have flushed it.
//!
//! A transaction whose messages the journal did not all keep
//! (`journal.max_transaction_bytes`, `journal.max_total_bytes`) cannot be
//! applied again from the commit log: part of a transaction must never be.
//! With asynchronous replication it would be lost if the primary died before
//! the standby received it, after the client heard it committed. So the
//! client hears it only once the WAL position sampler (`commit_log::lsn`)
//! shows the standbys past it — synchronous replication for these
//! transactions alone. Everything the server sends meanwhile waits behind
//! it, in order. If the primary dies first, the ledger token on the new
//! primary tells whether the standby had it (`failover::move_session`): the
//! kept replies are the client's, or the client gets `40001`. Past
//! `journal.large_commit_wait_ms` the replies go anyway, logged and counted.
//! When the sampler's rounds have found no standby streaming for at least
//! that long (a standby down, or being rebuilt after a failover), waiting
//! would only wait the limit out: the reply goes at once, logged and
//! counted the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Sleep};

use super::{Pipe, RelayState};
use crate::commit_log::lsn::{LsnTracker, WaitGuard};
use crate::commit_log::CommitLog;

/// How often the sampler's progress is looked at while a COMMIT waits (the
/// sampler itself runs every 20 ms).
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// A COMMIT acknowledgement waiting for the standbys.
pub struct StandbyWait {
    /// The transaction's ledger token.
    pub token: i64,
    /// The sampler round completed when it committed.
    round: u64,
    /// When the replies go even without the standbys.
    deadline: Instant,
    /// The server's bytes for the client since the COMMIT's reply, that
    /// reply included.
    pub held: BytesMut,
    timer: Pin<Box<Sleep>>,
    /// Keeps the WAL position sampler running while this waits.
    sampler: WaitGuard,
}

impl RelayState {
    /// Holds the client's replies from now on until the standbys have the
    /// transaction with `token` that just committed (see the module
    /// documentation); nothing is held when no wait is configured.
    pub(super) fn wait_for_standbys(&mut self, token: i64, log: &Arc<CommitLog>) {
        let Some(limit) = self.large_commit_wait else {
            return;
        };
        if !self.journal.is_idle() || self.standby_wait.is_some() {
            // Requests pipelined behind the COMMIT went to the server before
            // its reply came: their replies could not wait behind it and
            // still be replayed after a failover.
            log.large_unconfirmed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                token,
                "a committed transaction too large for the commit log is acknowledged before \
                 the standbys confirmed it, as requests were pipelined behind its COMMIT: it is \
                 lost if the primary dies before the standby receives it"
            );
            return;
        }
        if let Some(absent) = log.lsn.standbys_absent_for().filter(|a| *a >= limit) {
            log.large_unconfirmed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                token,
                absent_ms = absent.as_millis() as u64,
                "a committed transaction too large for the commit log is acknowledged at once: \
                 no standby has streamed for longer than journal.large_commit_wait_ms; it is \
                 lost if the primary dies before a standby receives it"
            );
            return;
        }
        self.standby_wait = Some(StandbyWait {
            token,
            round: log.lsn.round(),
            deadline: Instant::now() + limit,
            held: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep(CHECK_EVERY)),
            sampler: LsnTracker::wait(log),
        });
    }

    /// After a scan of the server's bytes: what is to go to the client
    /// waits behind a COMMIT that waits for the standbys.
    pub(super) fn hold_for_standbys(&mut self, to_client: &mut Pipe) {
        if let Some(wait) = &mut self.standby_wait {
            wait.held.extend_from_slice(&to_client.out);
            to_client.out = Bytes::new();
        }
    }

    /// Lets the held replies go once the standbys have flushed the
    /// transaction, or the wait is over; until then the task is woken every
    /// few milliseconds to look again.
    pub(super) fn poll_standby_wait(&mut self, cx: &mut Context<'_>, to_client: &mut Pipe) {
        let Some(wait) = &mut self.standby_wait else {
            return;
        };
        let log = wait.sampler.log();
        let safe = log.lsn.is_safe(wait.round);
        if !safe && Instant::now() >= wait.deadline {
            log.large_unconfirmed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                token = wait.token,
                "a committed transaction too large for the commit log is acknowledged before \
                 the standbys confirmed it (journal.large_commit_wait_ms passed): it is lost if \
                 the primary dies before the standby receives it"
            );
        } else if !safe {
            loop {
                if wait.timer.as_mut().poll(cx).is_pending() {
                    return;
                }
                wait.timer.as_mut().reset(Instant::now() + CHECK_EVERY);
            }
        }
        self.release_standby_wait(to_client);
    }

    /// Puts the replies held for the standbys, if any, in front of what goes
    /// to the client next.
    pub(super) fn release_standby_wait(&mut self, to_client: &mut Pipe) {
        if let Some(wait) = self.standby_wait.take() {
            to_client.put_in_front(wait.held);
        }
    }
}
