//! One request of the open unit ([`Request`]) and the digest of the
//! server's reply to it ([`Reply`]): byte count and an xxh3 hash, with the
//! few facts about the reply the journal acts on.

use std::ops::Range;

use xxhash_rust::xxh3::Xxh3;

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
