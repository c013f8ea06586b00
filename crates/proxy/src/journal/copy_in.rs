//! COPY from the client — its rows kept as one request — and the messages
//! the server ignores: while a `COPY … FROM STDIN` takes rows it reads only
//! COPY messages and ignores Flush and Sync; outside one it ignores COPY
//! messages, and a Flush with nothing to send does nothing. Such messages
//! get no reply, and between units they are no part of any.

use understudy_protocol::frontend;

use std::ops::Range;

use super::Journal;

impl Journal {
    /// Folds a CopyData message into the CopyData request just before it, so
    /// a COPY of a million rows is one request, not a million: the bytes are
    /// contiguous in the arena, and CopyData gets no reply to match. True
    /// when folded.
    pub(super) fn extend_copy_data(&mut self, frame: Option<Range<usize>>) -> bool {
        let Some(last) = self.requests.last_mut() else {
            return false;
        };
        if last.tag != frontend::tag::COPY_DATA || last.injected {
            return false;
        }
        match (&mut last.frame, frame) {
            (Some(previous), Some(next)) if previous.end == next.start => {
                previous.end = next.end;
                true
            }
            // Neither kept (too large): the unit is not replayable anyway.
            (None, None) => true,
            _ => false,
        }
    }

    /// An Execute (request `i`) started a `COPY … FROM STDIN`. Until the
    /// client's CopyDone or CopyFail the server reads only COPY messages and
    /// ignores Flush and Sync, which a driver may send right behind the
    /// Execute (tokio-postgres sends Bind/Execute/Sync, the rows, then
    /// CopyDone and a second Sync): those get no reply.
    pub(super) fn copy_in_started(&mut self, i: usize) {
        self.copying_in = true;
        for later in &mut self.requests[i + 1..] {
            match later.tag {
                frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL => {
                    self.copying_in = false;
                    break;
                }
                frontend::tag::SYNC | frontend::tag::FLUSH => later.reply.done = true,
                _ => {}
            }
        }
    }
}

/// True for a client message that does nothing outside a unit: a Flush
/// with no reply pending, and the COPY messages PostgreSQL ignores when it
/// is not copying (the rows a client still sends after its COPY failed).
/// A driver may send a Flush after a batch's Sync (psycopg does after a
/// pipeline); kept, it would leave the session looking busy — not parked
/// for a switchover, its next simple-Query write sent without a stamp.
pub(super) fn does_nothing_between_units(tag: u8) -> bool {
    matches!(
        tag,
        frontend::tag::FLUSH
            | frontend::tag::COPY_DATA
            | frontend::tag::COPY_DONE
            | frontend::tag::COPY_FAIL
    )
}
