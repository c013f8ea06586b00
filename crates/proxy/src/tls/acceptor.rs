//! [`ClientTls`]: the certificate the proxy shows clients that send
//! SSLRequest, reloaded from its files on demand (SIGHUP) without touching
//! open sessions: a handshake takes the configuration current at its start.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use understudy_config::TlsConfig;

use super::{provider, TlsError};

/// The proxy's TLS identity towards clients.
pub struct ClientTls {
    settings: TlsConfig,
    current: RwLock<Option<TlsAcceptor>>,
}

impl ClientTls {
    /// Loads the configured certificate; without one, clients asking for TLS
    /// are told there is none.
    pub fn load(settings: &TlsConfig) -> Result<Self, TlsError> {
        let current = if settings.enabled() {
            Some(acceptor(settings)?)
        } else {
            None
        };
        Ok(ClientTls {
            settings: settings.clone(),
            current: RwLock::new(current),
        })
    }

    /// Reads the certificate and key files again. On error the previous
    /// certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        if !self.settings.enabled() {
            return Ok(());
        }
        let next = acceptor(&self.settings)?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(next);
        }
        Ok(())
    }

    /// The acceptor for a new handshake, when TLS is configured.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Plaintext clients are refused.
    pub fn required(&self) -> bool {
        self.settings.require_tls
    }
}

fn acceptor(settings: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs("tls.cert_file", Path::new(&settings.cert_file))?;
    let key = read_key("tls.key_file", Path::new(&settings.key_file))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rejected)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate of a PEM file, at least one.
pub(super) fn read_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |problem: String| TlsError::File {
        key,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(pem_problem(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(pem_problem(e)))?;
    if certs.is_empty() {
        return Err(file_error(
            "no PEM certificate in the file (expected -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(certs)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.to_path_buf(),
        problem: pem_problem(e),
    })
}

fn pem_problem(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read it: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PEM private key in the file (expected -----BEGIN PRIVATE KEY-----)".to_owned()
        }
        other => format!("not a valid PEM file: {other}"),
    }
}
