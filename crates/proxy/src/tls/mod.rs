//! TLS on both sides of the proxy, with rustls: the proxy's own certificate
//! for clients ([`ClientTls`], reloadable while sessions run) and the policy
//! towards servers ([`ServerTls`], `backend.tls_mode` with libpq's `sslmode`
//! meanings), plus the adapter that gives the proxy's control connections
//! (tokio-postgres) the same policy.

mod acceptor;
mod connector;
pub mod control;
mod verify;

use std::path::PathBuf;

use thiserror::Error;

pub use acceptor::ClientTls;
pub use connector::ServerTls;

/// A TLS setting that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{key} = {path:?}: {problem}")]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificate and key.
    #[error("tls.cert_file and tls.key_file cannot be used together: {0} (is the key the one of the certificate?)")]
    Rejected(#[source] rustls::Error),
}

/// The crypto provider every TLS configuration of the proxy uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
