//! One request of the open unit ([`Request`]) and the digest of the
//! server's reply to it ([`Reply`]): byte count and an xxh3 hash, a second
//! digest that does not depend on the order of the rows, and the few facts
//! about the reply the journal acts on.

use std::ops::Range;

use understudy_protocol::backend::tag::DATA_ROW;
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use super::request::Expect;

/// The digest of a reply: how many bytes, and their hash.
#[derive(Clone)]
pub struct Reply {
    /// Bytes of the reply's messages seen so far.
    pub bytes: u64,
    hash: Xxh3,
    /// The reply is complete.
    pub done: bool,
    /// The reply contained an ErrorResponse.
    pub failed: bool,
    /// Session-changing commands completed in this reply.
    pub session_commands: u32,
    /// Of the session commands, `PREPARE` and `DEALLOCATE`: unlike settings
    /// and LISTENs, they outlive a rollback.
    pub prepares: u32,
    /// Other commands completed in this reply (transaction control excluded).
    pub other_commands: u32,
    /// A `DISCARD` completed in this reply.
    pub discarded: bool,
    /// The last command completed was a `ROLLBACK`.
    pub rolled_back: bool,
    /// A `COMMIT` completed (and committed) in this reply.
    pub committed: bool,
    /// The complete messages that are not DataRows, each hashed, combined
    /// in order.
    framing: u64,
    /// The sum of the complete DataRows' hashes: the same for the same rows
    /// in any order.
    rows: u64,
    /// A message of the reply is only partly absorbed.
    partial: bool,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            bytes: 0,
            hash: Xxh3::new(),
            done: false,
            failed: false,
            session_commands: 0,
            prepares: 0,
            other_commands: 0,
            discarded: false,
            rolled_back: false,
            committed: false,
            framing: 0,
            rows: 0,
            partial: false,
        }
    }
}

impl Reply {
    /// The hash of the bytes seen so far.
    pub fn digest(&self) -> u64 {
        self.hash.digest()
    }

    pub(super) fn absorb(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        self.hash.update(bytes);
        self.partial = true;
    }

    /// A message of the reply, of type `tag` and hashed `message_hash`, is
    /// complete.
    pub(super) fn message_done(&mut self, tag: u8, message_hash: u64) {
        self.partial = false;
        if tag == DATA_ROW {
            self.rows = self.rows.wrapping_add(message_hash);
        } else {
            self.framing = xxh3_64_with_seed(&message_hash.to_le_bytes(), self.framing);
        }
    }

    /// A digest of the reply that does not depend on the order of its rows:
    /// the same rows in another order are the same result (without `ORDER
    /// BY`, or between ties, PostgreSQL may return them in any order, and a
    /// replay on another server often does). None while a message is only
    /// partly absorbed.
    pub fn rows_digest(&self) -> Option<u64> {
        (!self.partial).then(|| xxh3_64_with_seed(&self.rows.to_le_bytes(), self.framing))
    }

    /// True when `self` and `other` are the same result: the same bytes, or
    /// the same messages with the rows in another order.
    pub fn same_result(&self, other: &Reply) -> bool {
        self.bytes == other.bytes
            && (self.digest() == other.digest()
                || (self.rows_digest().is_some() && self.rows_digest() == other.rows_digest()))
    }
}

/// One client message of the unit, and the server's reply to it.
#[derive(Clone)]
pub struct Request {
    /// The message type.
    pub tag: u8,
    /// What completes its reply.
    pub expect: Expect,
    /// Where the whole message is in the unit's arena; `None` when it was
    /// too large to keep.
    pub(super) frame: Option<Range<usize>>,
    /// The reply so far.
    pub reply: Reply,
    /// Sent by the proxy itself (the commit stamp); its reply is not the
    /// client's.
    pub injected: bool,
    /// Sent by the proxy in place of a client's simple Query (its Parse,
    /// Bind, Describe and Execute): the reply is the client's, except the
    /// acknowledgements the simple protocol does not send (ParseComplete,
    /// BindComplete, NoData).
    pub translated: bool,
}
