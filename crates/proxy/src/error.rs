//! Errors of one client session. Each says which side caused it, because
//! that decides what happens next: a client's fault ends its own session; a
//! server's fault is what failover acts on.

use std::fmt;
use std::io;

use thiserror::Error;
use understudy_protocol::backend::ErrorFields;
use understudy_protocol::ProtocolError;

/// The peer an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The application's connection.
    Client,
    /// The PostgreSQL server's connection.
    Server,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// Why a session ended before its client said goodbye.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The peer closed its socket.
    #[error("{0} closed the connection")]
    Closed(Side),
    /// Reading or writing a socket failed.
    #[error("{side} connection failed: {source}")]
    Io {
        /// Which socket.
        side: Side,
        /// The OS error.
        source: io::Error,
    },
    /// The peer sent bytes that are not valid protocol.
    #[error("{side} sent an invalid message: {source}")]
    Protocol {
        /// Who sent it.
        side: Side,
        /// What is wrong with it.
        source: ProtocolError,
    },
    /// The client failed to authenticate (already told so).
    #[error("authentication failed for user \"{user}\": {reason}")]
    AuthFailed {
        /// The role the client asked for.
        user: String,
        /// Why, for the log.
        reason: String,
    },
    /// The server refused the session; its error was relayed to the client.
    #[error("server refused the session: {0}")]
    ServerRefused(ErrorFields),
    /// The client was refused by the proxy itself (already told so).
    #[error("{0}")]
    Refused(ErrorFields),
    /// The client's TLS handshake failed.
    #[error("TLS handshake with the client failed: {0}")]
    TlsHandshake(String),
    /// A deadline passed.
    #[error("timed out while {0}")]
    Timeout(&'static str),
    /// A login step sent to the blocking pool did not finish there.
    #[error("{what} did not finish: {reason}")]
    Offloaded {
        /// The step.
        what: &'static str,
        /// Why (the runtime is shutting down).
        reason: String,
    },
}

impl SessionError {
    /// An I/O error on the client socket.
    pub fn client_io(source: io::Error) -> Self {
        SessionError::Io {
            side: Side::Client,
            source,
        }
    }

    /// An I/O error on the server socket.
    pub fn server_io(source: io::Error) -> Self {
        SessionError::Io {
            side: Side::Server,
            source,
        }
    }

    /// The side the error came from, when it is about one side.
    pub fn side(&self) -> Option<Side> {
        match self {
            SessionError::Closed(side) => Some(*side),
            SessionError::Io { side, .. } | SessionError::Protocol { side, .. } => Some(*side),
            _ => None,
        }
    }

    /// True when the error is a normal way for a client to go away (a
    /// client that closes during authentication to prompt for a password,
    /// for example) and is not worth a warning in the log.
    pub fn is_quiet(&self) -> bool {
        matches!(self, SessionError::Closed(Side::Client))
    }
}
