//! Certificates for TLS tests: a private authority and a certificate it
//! signed for `localhost` and `127.0.0.1`, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// PEM files of one authority and one server certificate.
pub struct Certs {
    /// The authority's certificate (for `sslrootcert` / `tls_ca_file`).
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

impl Certs {
    /// Makes a new authority and certificate named `name` in `dir`.
    pub fn make(dir: &Path, name: &str) -> Certs {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test authority"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let key = KeyPair::generate().expect("key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = server.signed_by(&key, &ca_cert, &ca_key).expect("cert");
        let certs = Certs {
            ca: dir.join(format!("{name}-ca.crt")),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&certs.ca, ca_cert.pem()).expect("write ca");
        std::fs::write(&certs.cert, cert.pem()).expect("write cert");
        std::fs::write(&certs.key, key.serialize_pem()).expect("write key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&certs.key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
        certs
    }

    /// Copies the certificate and key over `other`'s files (a renewal).
    pub fn install_over(&self, other: &Certs) {
        std::fs::copy(&self.cert, &other.cert).expect("copy cert");
        std::fs::copy(&self.key, &other.key).expect("copy key");
    }
}
