//! Exactly-once autocommit writes (docs/decisions/0007): the [`SyncHold`]
//! of an autocommit extended batch, and the stamp that goes in front of its
//! Sync. Normally the batch goes with a Flush, the stamp and its Sync in one
//! write; while a cancel of the session is in flight the Sync is held and
//! goes with the stamp once the cancels end.
//!
//! A simple Query that writes gets the same treatment by going through the
//! extended protocol instead (`relay::translate`): its end is then a Sync of
//! the proxy's own.

use bytes::BytesMut;
use understudy_protocol::frontend::{
    encode_bind, encode_close_statement, encode_execute, encode_flush, encode_parse, encode_sync,
    tag,
};

use super::{translate, Pipe, RelayState};
use crate::journal::Journal;
use crate::ledger;

/// Where the Sync of an autocommit extended batch that may write stands.
/// Normally it goes at once behind a Flush and the stamp ([`Self::Sent`]).
/// While a cancel of the session is in flight it is held until the server
/// has answered the batch and the cancels have ended ([`Self::Waiting`],
/// [`Self::Ready`]), then goes with the stamp: a failover meanwhile is
/// resolved exactly by the ledger either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncHold {
    /// No Sync held.
    Off,
    /// A Sync waits, unread, for the replies of its batch.
    Waiting,
    /// The replies are in: stamp (unless the batch failed) and send it.
    Ready,
    /// Send the held Sync as it is.
    Pass,
    /// The batch went with its stamp and Sync: the client is read again once
    /// the batch's ReadyForQuery is in.
    Sent,
    /// A `COPY … FROM STDIN` sent as a simple Query runs through the
    /// extended protocol and the server takes the client's rows: the stamp
    /// and the proxy's Sync follow the client's CopyDone
    /// ([`RelayState::end_copy_in`]), or the Sync alone its CopyFail or the
    /// server's error.
    CopyIn,
}

impl RelayState {
    /// After the session moved: a Sync held for its stamp goes on once the
    /// replies it waited for are in (the replay brought them back), or at
    /// once when the move abandoned the batch.
    pub fn settle_sync_hold(&mut self, to_server: &mut Pipe) {
        match self.sync_hold {
            SyncHold::Waiting if self.journal.is_idle() => self.sync_hold = SyncHold::Pass,
            SyncHold::Waiting if self.journal.outstanding() == 0 => {
                self.sync_hold = SyncHold::Ready
            }
            // The move ended the COPY (its transaction failed, or its outcome
            // is unknown): the client's next rows go nowhere.
            SyncHold::CopyIn if self.journal.is_idle() => {
                self.sync_hold = SyncHold::Off;
                return;
            }
            SyncHold::Waiting | SyncHold::Off | SyncHold::Sent | SyncHold::CopyIn => return,
            SyncHold::Ready | SyncHold::Pass => {}
        }
        // The proxy's own Sync is sent by the relay, not read from the client.
        if !self.client_terminated && !self.held_sync_is_proxys {
            to_server.resume_reading();
        }
    }

    /// True when a released Sync gets the implicit stamp: the ledger is on,
    /// the batch is still an implicit transaction and did not fail.
    pub(super) fn stamps_implicit(&self) -> bool {
        self.ledger
            && self.journal.commit_token.is_none()
            && self.journal.tx_status == understudy_protocol::backend::TransactionStatus::Idle
            && !self.journal.skipping_to_sync()
    }

    /// The client ended the rows of a translated `COPY … FROM STDIN` with
    /// CopyDone (`complete`) or CopyFail, appended to `out`: the proxy's
    /// Sync follows, behind the stamp when the rows are complete, so that
    /// the COPY and its stamp commit together; the client is read again
    /// once the ReadyForQuery is in. While a cancel is in flight the Sync
    /// waits for the COPY's answer and the cancels' end
    /// ([`Self::release_proxys_sync`]).
    pub(super) fn end_copy_in(&mut self, complete: bool, out: &mut BytesMut) {
        if complete {
            // As for any autocommit write: the COPY's answer is on its way
            // before the stamp commits (docs/decisions/0007).
            let start = out.len();
            encode_flush(out);
            self.journal.injected_request(&out[start..]);
            if self.cancel_settling {
                self.sync_hold = SyncHold::Waiting;
                self.held_sync_is_proxys = true;
                return;
            }
        }
        let stamped = complete && self.stamps_implicit();
        if stamped {
            inject_implicit_stamp(out, &mut self.journal);
        }
        let start = out.len();
        encode_sync(out);
        self.journal.client_message(tag::SYNC, Some(&out[start..]));
        self.sync_hold = SyncHold::Sent;
        if stamped {
            self.hold_replies_of_batch();
        }
    }

    /// The server refused a translated `COPY … FROM STDIN` while its rows
    /// came in, and skips to a Sync: the proxy's goes at once, without a
    /// stamp, since the client, told of the error, may wait for its
    /// ReadyForQuery without ending the rows.
    pub(super) fn copy_in_refused(&mut self) {
        if self.sync_hold == SyncHold::CopyIn && self.journal.skipping_to_sync() {
            self.sync_hold = SyncHold::Pass;
            self.held_sync_is_proxys = true;
        }
    }

    /// Sends the proxy's own Sync of a translated Query once its hold is
    /// released — behind the stamp and the Query's COMMIT, if it has one,
    /// when [`Self::stamps_implicit`] — and reads the client again. False
    /// while there is nothing to send yet, or while earlier bytes for the
    /// server are still being written.
    pub(super) fn release_proxys_sync(&mut self, to_server: &mut Pipe) -> bool {
        let released = matches!(self.sync_hold, SyncHold::Ready | SyncHold::Pass);
        if !self.held_sync_is_proxys || !released || !to_server.out.is_empty() {
            return false;
        }
        if self.sync_hold == SyncHold::Ready && self.cancel_settling && self.stamps_implicit() {
            // Sent once the session's cancels in flight end.
            return false;
        }
        let mut out = BytesMut::new();
        let commit = self.pending_commit.take();
        if self.sync_hold == SyncHold::Ready && self.stamps_implicit() {
            inject_implicit_stamp(&mut out, &mut self.journal);
            if let Some(commit) = commit {
                translate::encode_statement(&commit, &mut out, &mut self.journal);
            }
        }
        let start = out.len();
        encode_sync(&mut out);
        // Its ReadyForQuery ends the client's Query: the Sync stands for it.
        self.journal.client_message(tag::SYNC, Some(&out[start..]));
        to_server.out = out.freeze();
        self.sync_hold = SyncHold::Off;
        self.held_sync_is_proxys = false;
        if !self.client_terminated {
            to_server.resume_reading();
        }
        true
    }
}

/// Name of the prepared statement of an implicit stamp (closed first, so
/// a leftover from an aborted batch never collides).
const STAMP_STATEMENT: &str = "understudy_stamp";

/// Appends the stamp of an implicit transaction to `out` and journals it:
/// a named statement (the client's unnamed statement stays untouched) run
/// through the unnamed portal, which the client's Sync ends anyway.
pub(super) fn inject_implicit_stamp(out: &mut BytesMut, journal: &mut Journal) {
    let token = ledger::new_token();
    let mut start = out.len();
    encode_close_statement(STAMP_STATEMENT, out);
    journal.injected_request(&out[start..]);
    start = out.len();
    encode_parse(STAMP_STATEMENT, &ledger::stamp_sql(token), out);
    journal.injected_request(&out[start..]);
    start = out.len();
    encode_bind("", STAMP_STATEMENT, out);
    journal.injected_request(&out[start..]);
    start = out.len();
    encode_execute("", out);
    journal.injected_message(&out[start..], token);
    journal.mark_stamp_implicit();
}
