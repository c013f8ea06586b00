//! The replies of a stamped autocommit write, kept from the client until its
//! ReadyForQuery is in.
//!
//! The Flush in front of an autocommit write's stamp (docs/decisions/0007)
//! makes the server send the write's replies before it commits; without the
//! proxy it would have sent them with the ReadyForQuery, at the Sync. The
//! relay keeps them until then, so the client gets the batch as PostgreSQL
//! would have sent it, in one write. And a failover before the commit finds
//! the client without any of them: the write is run again on the new primary
//! and the client gets that run's replies, where values the first run made up
//! (a serial id, `now()`, a random value in `RETURNING`) would otherwise
//! differ from what the client already had and fail the write with `40001`.
//! If the ledger shows the write committed, the kept replies are the
//! client's.
//!
//! Replies are kept only for a batch that is the only unanswered unit, with
//! no Flush of the client's own (a client that asks for replies early gets
//! them), and not while rules track results (they follow what the client
//! sees); past [`MAX_HELD_BYTES`] they go to the client as they come.

use bytes::{Bytes, BytesMut};
use understudy_protocol::frontend;

use super::{Pipe, RelayState};
use crate::journal::request::Expect;
use crate::journal::Reply;

/// Room kept for a batch's replies at first: a write's replies and its
/// stamp's, in one allocation.
const HELD_BYTES_AT_FIRST: usize = 512;

/// Most bytes of replies kept for one batch: a write's row count or a few
/// `RETURNING` rows. A larger result streams to the client as it comes.
pub const MAX_HELD_BYTES: usize = 64 * 1024;

/// Replies kept from the client until the batch's ReadyForQuery.
pub struct HeldReplies {
    /// What the client had received of the unit when the batch was sent:
    /// the reference a replay is checked against if none of the kept
    /// replies reach it.
    pub delivered: Vec<Reply>,
    /// The server's replies since, not yet written to the client.
    pub bytes: BytesMut,
}

impl RelayState {
    /// Starts keeping replies for the stamped autocommit batch just sent,
    /// when it qualifies (see the module documentation).
    pub(super) fn hold_replies_of_batch(&mut self) {
        if self.rules.as_deref().is_some_and(|rules| rules.tracking()) {
            return;
        }
        let requests = self.journal.requests();
        let unanswered = || requests.iter().filter(|r| !r.reply.done);
        let ends = unanswered().filter(|r| r.expect == Expect::Ready).count();
        let clients_flush = unanswered().any(|r| r.tag == frontend::tag::FLUSH && !r.injected);
        if ends != 1 || clients_flush {
            return;
        }
        self.held_replies = Some(HeldReplies {
            delivered: requests.iter().map(|r| r.reply.clone()).collect(),
            bytes: BytesMut::with_capacity(HELD_BYTES_AT_FIRST),
        });
    }

    /// After a scan of the server's bytes: keeps what is to go to the client
    /// while replies are held, and lets everything go once the batch is
    /// answered (its ReadyForQuery is in) or too much is kept.
    pub(super) fn hold_or_release(&mut self, to_client: &mut Pipe) {
        let Some(held) = &mut self.held_replies else {
            return;
        };
        held.bytes.extend_from_slice(&to_client.out);
        to_client.out = Bytes::new();
        if self.journal.outstanding() == 0 || held.bytes.len() > MAX_HELD_BYTES {
            self.release_kept_replies(to_client);
        }
    }

    /// The session ends: everything kept from the client goes in front of
    /// what goes to it next — the replies of an autocommit write, and those
    /// waiting for the standbys (its primary is still up and has the
    /// transaction).
    pub fn release_held_replies(&mut self, to_client: &mut Pipe) {
        self.release_kept_replies(to_client);
        self.release_standby_wait(to_client);
    }

    /// Puts the replies kept for an autocommit write, if any, in front of
    /// what goes to the client next.
    fn release_kept_replies(&mut self, to_client: &mut Pipe) {
        if let Some(held) = self.held_replies.take() {
            to_client.put_in_front(held.bytes);
        }
    }
}
