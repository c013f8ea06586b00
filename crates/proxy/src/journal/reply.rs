//! One request of the open unit ([`Request`]) and the digest of the
//! server's reply to it ([`Reply`]): byte count and an xxh3 hash, a second
//! digest that does not depend on the order of the rows, and the few facts
//! about the reply the journal acts on.
//!
//! Both digests are built from the hash of each message (taken once, by the
//! journal), chained in order: a reply holds no streaming hasher (xxh3's is
//! over 500 bytes, which every request of every unit would carry, set up and
//! move), and a small message is hashed once, not twice. The same bytes
//! always split into the same messages, so the chain tells the same bytes
//! apart as a hash of the byte stream would.

use std::ops::Range;

use understudy_protocol::backend::tag::DATA_ROW;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::request::Expect;

/// The digest of a reply: how many bytes, and their hash.
#[derive(Clone, Default)]
pub struct Reply {
    /// Bytes of the reply's messages seen so far.
    pub bytes: u64,
    /// The hashes of the complete messages, chained in order.
    ordered: u64,
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
    /// A function or an extension was created or altered in this reply: the
    /// database's functions a `SELECT` may write through may have changed.
    pub defined_functions: bool,
    /// The complete messages that are not DataRows, each hashed, combined
    /// in order.
    framing: u64,
    /// The sum of the complete DataRows' hashes: the same for the same rows
    /// in any order.
    rows: u64,
    /// A message of the reply is only partly absorbed: the hash of its
    /// bytes so far.
    partial: Option<u64>,
}

impl Reply {
    /// The hash of the bytes seen so far.
    pub fn digest(&self) -> u64 {
        match self.partial {
            Some(partial) => chain(self.ordered, partial),
            None => self.ordered,
        }
    }

    /// The first `len` bytes of a message whose bytes so far hash to
    /// `hash_so_far` (the message goes on).
    pub(super) fn absorb_part(&mut self, len: usize, hash_so_far: u64) {
        self.bytes += len as u64;
        self.partial = Some(hash_so_far);
    }

    /// A message of the reply, of type `tag`, is complete: its last `len`
    /// bytes came, and all of it hashes to `message_hash`.
    pub(super) fn message_done(&mut self, tag: u8, len: usize, message_hash: u64) {
        self.bytes += len as u64;
        self.partial = None;
        self.ordered = chain(self.ordered, message_hash);
        if tag == DATA_ROW {
            self.rows = self.rows.wrapping_add(message_hash);
        } else {
            self.framing = chain(self.framing, message_hash);
        }
    }

    /// A digest of the reply that does not depend on the order of its rows:
    /// the same rows in another order are the same result (without `ORDER
    /// BY`, or between ties, PostgreSQL may return them in any order, and a
    /// replay on another server often does). None while a message is only
    /// partly absorbed.
    pub fn rows_digest(&self) -> Option<u64> {
        self.partial
            .is_none()
            .then(|| xxh3_64_with_seed(&self.rows.to_le_bytes(), self.framing))
    }

    /// True when `self` and `other` are the same result: the same bytes, or
    /// the same messages with the rows in another order.
    pub fn same_result(&self, other: &Reply) -> bool {
        self.bytes == other.bytes
            && (self.digest() == other.digest()
                || (self.rows_digest().is_some() && self.rows_digest() == other.rows_digest()))
    }
}

/// `hash` appended to the chain `so_far`: the folded 128-bit product of the
/// two, each first mixed with a constant (wyhash's `mum`). Every message of
/// every reply is chained twice, so this is a multiply, not a hash call. The
/// message hashes it combines are xxh3's; the different constants and the
/// fold make the chain depend on their order.
pub(super) fn chain(so_far: u64, hash: u64) -> u64 {
    const SECRET: [u64; 2] = [0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db];
    let product = u128::from(so_far ^ SECRET[0]) * u128::from(hash ^ SECRET[1]);
    (product as u64) ^ ((product >> 64) as u64)
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
