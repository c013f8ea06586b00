//! The error type of the authentication layer.
//!
//! [`AuthError`] covers both directions: a client talking to the proxy's
//! [`ScramServer`](crate::ScramServer) and a PostgreSQL server answering the proxy's
//! [`ScramClient`](crate::ScramClient). Protocol messages name the SCRAM message that was
//! wrong (`client-first-message`, `server-final-message`, …), which tells the reader which
//! side misbehaved.

/// Why an authentication exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The client proved knowledge of a different password, or the role is unknown or has
    /// no usable secret. The two cases are deliberately indistinguishable.
    #[error("password authentication failed: wrong password, or the role does not exist or has no usable password")]
    WrongPassword,

    /// A SCRAM message was malformed or arrived out of order; the text says which message
    /// and what is wrong with it.
    #[error("SCRAM protocol violation: {0}")]
    Protocol(String),

    /// The client asked for a SASL mechanism other than `SCRAM-SHA-256`.
    #[error(
        "unsupported SASL mechanism {0:?}: only SCRAM-SHA-256 (without channel binding) is offered"
    )]
    UnsupportedMechanism(String),

    /// The server ended the exchange with `e=<reason>` in its server-final-message.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerError(String),

    /// The server's signature does not match: it does not hold the secret for this
    /// password, so it may not be the server it claims to be.
    #[error("server signature mismatch: the server could not prove it knows the password secret; not trusting this server")]
    ServerSignatureMismatch,

    /// A stored password secret (`SCRAM-SHA-256$…`) could not be parsed.
    #[error("invalid SCRAM-SHA-256 secret: {0}; expected SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>")]
    InvalidSecret(String),
}

impl AuthError {
    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        AuthError::Protocol(message.into())
    }
}
