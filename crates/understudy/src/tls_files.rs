//! `DIR/tls/`: the certificate `understudy up` serves clients with. A
//! private certificate authority (`ca.crt`) signs the server certificate
//! (`server.crt`, for `localhost` and `127.0.0.1`), so that
//! `sslmode=verify-full sslrootcert=DIR/tls/ca.crt` works out of the box.
//! Made once and kept; delete the directory to make new ones.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Where the files are.
pub struct TlsFiles {
    /// The authority's certificate, for clients' `sslrootcert`.
    pub ca_cert: PathBuf,
    /// The proxy's certificate.
    pub cert: PathBuf,
    /// The proxy's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files under `dir/tls`.
    pub fn under(dir: &Path) -> Self {
        let tls = dir.join("tls");
        TlsFiles {
            ca_cert: tls.join("ca.crt"),
            cert: tls.join("server.crt"),
            key: tls.join("server.key"),
        }
    }

    /// Creates the authority, certificate and key unless they all exist.
    pub fn ensure(&self) -> Result<(), String> {
        if self.ca_cert.is_file() && self.cert.is_file() && self.key.is_file() {
            return Ok(());
        }
        let dir = self.cert.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let generated = generate().map_err(|e| format!("cannot make a certificate: {e}"))?;
        write(&self.ca_cert, &generated.ca_cert, 0o644)?;
        write(&self.key, &generated.key, 0o600)?;
        write(&self.cert, &generated.cert, 0o644)?;
        Ok(())
    }
}

struct Generated {
    ca_cert: String,
    cert: String,
    key: String,
}

fn generate() -> Result<Generated, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "understudy local certificate authority");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = server.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(Generated {
        ca_cert: ca_cert.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::TlsFiles;

    #[test]
    fn files_are_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TlsFiles::under(dir.path());
        files.ensure().expect("generate");
        let first = std::fs::read(&files.cert).expect("cert");
        files.ensure().expect("reuse");
        assert_eq!(std::fs::read(&files.cert).expect("cert"), first);
        let key_mode = std::fs::metadata(&files.key).expect("key").permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key_mode.mode() & 0o777, 0o600, "the key is private");
        let pem = String::from_utf8(first).expect("utf8");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
