//! A stamped transaction that committed, as the commit log keeps it: the
//! client messages to apply it again on a server that lost it, where its
//! stamp is, and the digest of its replies to compare a re-apply with.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::Request;

/// A transaction that committed with a ledger stamp: what it takes to apply
/// it again on a server that lost it, and the digest of its replies.
#[derive(Debug, Clone)]
pub struct CommittedUnit {
    /// Its ledger token.
    pub token: i64,
    /// The client messages of the unit, the stamp included.
    pub frames: Bytes,
    /// Where the stamp is in `frames`.
    pub stamp: Option<Range<usize>>,
    /// The stamp is in an implicit transaction (an autocommit write): the
    /// unit's Sync commits it, not a COMMIT.
    pub stamp_implicit: bool,
    /// Digest of all its replies.
    pub digest: u64,
}

impl CommittedUnit {
    pub(super) fn of(token: i64, stamp_implicit: bool, finished: &[Request], arena: &[u8]) -> Self {
        let mut frames = BytesMut::new();
        let mut stamp = None;
        let mut hash = Xxh3::new();
        for request in finished {
            // Rows in another order are the same result.
            let digest = request
                .reply
                .rows_digest()
                .unwrap_or_else(|| request.reply.digest());
            hash.update(&request.reply.bytes.to_le_bytes());
            hash.update(&digest.to_le_bytes());
            if let Some(range) = &request.frame {
                if request.injected {
                    stamp = Some(frames.len()..frames.len() + range.len());
                }
                frames.extend_from_slice(&arena[range.clone()]);
            }
        }
        CommittedUnit {
            token,
            frames: frames.freeze(),
            stamp,
            stamp_implicit,
            digest: hash.digest(),
        }
    }
}
