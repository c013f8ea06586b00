//! Exactly-once autocommit writes (docs/decisions/0007): the [`SyncHold`]
//! of an autocommit extended batch, and the stamp that goes in front of its
//! Sync once the batch is answered.

use bytes::BytesMut;
use understudy_protocol::frontend::{
    encode_bind, encode_close_statement, encode_execute, encode_parse,
};

use super::{Pipe, RelayState};
use crate::journal::Journal;
use crate::ledger;

/// The Sync of an autocommit extended batch that may write is held until
/// the server has answered the batch (a Flush is sent in its place), then
/// goes with the commit stamp in front of it: the client has every reply
/// but the final ReadyForQuery before the transaction can commit, so a
/// failover in between is resolved exactly by the ledger.
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
            SyncHold::Waiting | SyncHold::Off => return,
            SyncHold::Ready | SyncHold::Pass => {}
        }
        if !self.client_terminated {
            to_server.resume_reading();
        }
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
