//! Errors raised while decoding protocol messages.

use thiserror::Error;

/// A message could not be decoded. Always caused by the peer that sent it;
/// the connection it came from cannot continue, but nothing else is affected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The length field of a message is smaller than the length field itself.
    #[error("invalid message length {len} for message type {tag:?}: lengths include themselves and are at least 4")]
    LengthTooSmall { tag: char, len: i64 },
    /// The length field of a message exceeds the configured maximum.
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { tag: char, len: usize, max: usize },
    /// A startup packet has a length outside 8..=max.
    #[error("invalid startup packet length {len}: expected 8 to {max} bytes")]
    BadStartupLength { len: i64, max: usize },
    /// A body ended before a field it must contain.
    #[error("malformed {message}: {what}")]
    Malformed {
        message: &'static str,
        what: &'static str,
    },
    /// A body has bytes left over after its last field.
    #[error("malformed {message}: {extra} unexpected trailing bytes")]
    TrailingBytes { message: &'static str, extra: usize },
    /// A string field is not valid UTF-8 where UTF-8 is required.
    #[error("malformed {message}: {field} is not valid UTF-8")]
    NotUtf8 {
        message: &'static str,
        field: &'static str,
    },
    /// A client message type that does not exist (PostgreSQL's wording).
    #[error("invalid frontend message type {tag}")]
    UnknownFrontendType { tag: u8 },
    /// A message that is valid but not the one this state accepts.
    #[error("unexpected message type {tag:?} while waiting for {expected}")]
    Unexpected { tag: char, expected: &'static str },
}

impl ProtocolError {
    /// Builds [`ProtocolError::Malformed`].
    pub fn malformed(message: &'static str, what: &'static str) -> Self {
        ProtocolError::Malformed { message, what }
    }
}
