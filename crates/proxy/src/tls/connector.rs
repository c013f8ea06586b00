//! [`ServerTls`]: TLS towards the servers, per `backend.tls_mode`. The
//! proxy asks with SSLRequest like libpq; `prefer` falls back to plaintext
//! when the server declines, `require` and `verify-full` refuse to.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use understudy_config::{BackendConfig, BackendTlsMode};
use understudy_protocol::backend::{sqlstate, ErrorFields, Severity};

use super::acceptor::read_certs;
use super::verify::EncryptOnly;
use super::{provider, TlsError};
use crate::error::SessionError;
use crate::stream::Stream;

/// The SSLRequest packet: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How the proxy secures its connections to servers.
pub struct ServerTls {
    mode: BackendTlsMode,
    connector: Option<TlsConnector>,
}

impl ServerTls {
    /// The policy of `[backend]`; reads `tls_ca_file` (or the system's
    /// roots) for `verify-full`.
    pub fn new(backend: &BackendConfig) -> Result<Self, TlsError> {
        let mode = backend.tls_mode;
        let connector = match mode {
            BackendTlsMode::Disable => None,
            BackendTlsMode::Prefer | BackendTlsMode::Require => {
                let provider = provider();
                let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .map_err(TlsError::Rejected)?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
            BackendTlsMode::VerifyFull => {
                let roots = roots(&backend.tls_ca_file)?;
                let config = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(TlsError::Rejected)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
        };
        Ok(ServerTls { mode, connector })
    }

    /// Plaintext only (`disable`).
    pub fn disabled() -> Self {
        ServerTls {
            mode: BackendTlsMode::Disable,
            connector: None,
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> BackendTlsMode {
        self.mode
    }

    /// The rustls connector, unless the mode is `disable`.
    pub fn connector(&self) -> Option<&TlsConnector> {
        self.connector.as_ref()
    }

    /// Asks the server at `host` for TLS on a fresh connection, as the mode
    /// says, and returns the stream to start the session on.
    pub async fn negotiate(&self, mut tcp: TcpStream, host: &str) -> Result<Stream, SessionError> {
        let Some(connector) = &self.connector else {
            return Ok(Stream::Plain(tcp));
        };
        tcp.write_all(&SSL_REQUEST)
            .await
            .map_err(SessionError::server_io)?;
        let answer = tcp.read_u8().await.map_err(SessionError::server_io)?;
        match answer {
            b'S' => {}
            b'N' if self.mode == BackendTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
            b'N' => {
                return Err(refused(format!(
                    "server {host} does not accept TLS connections, but backend.tls_mode = {}; \
                     enable ssl on the server or set backend.tls_mode = prefer",
                    self.mode.as_str()
                )))
            }
            other => {
                return Err(refused(format!(
                    "server {host} answered the TLS request with {:?} instead of S or N",
                    char::from(other)
                )))
            }
        }
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            refused(format!(
                "{host:?} is not a valid host name for a TLS connection"
            ))
        })?;
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            refused(format!(
                "TLS handshake with server {host} failed (backend.tls_mode = {}): {e}",
                self.mode.as_str()
            ))
        })?;
        Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(tls))))
    }
}

fn roots(ca_file: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if ca_file.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(TlsError::File {
                key: "backend.tls_ca_file",
                path: "".into(),
                problem: "empty, and the system has no root certificates; give the PEM file of \
                          the authority that signed the servers' certificates"
                    .to_owned(),
            });
        }
        return Ok(roots);
    }
    for cert in read_certs("backend.tls_ca_file", Path::new(ca_file))? {
        roots.add(cert).map_err(|e| TlsError::File {
            key: "backend.tls_ca_file",
            path: ca_file.into(),
            problem: format!("not a usable certificate authority: {e}"),
        })?;
    }
    Ok(roots)
}

fn refused(message: String) -> SessionError {
    SessionError::ServerRefused(ErrorFields::new(
        Severity::Fatal,
        sqlstate::UNABLE_TO_CONNECT,
        message,
    ))
}
