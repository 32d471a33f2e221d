//! A throw-away PKI for mTLS tests: one CA, a server certificate for Envoy and client
//! certificates whose URI SAN is a SPIFFE ID, all made at run time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

/// A client certificate and key.
pub struct ClientIdentity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl ClientIdentity {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// Paths of the files Envoy's TLS listener needs.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

fn err(e: rcgen::Error) -> io::Error {
    io::Error::other(e)
}

impl TestCa {
    pub fn new(name: &str) -> io::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA plus Envoy's server files in a fresh directory under the system temp dir.
    pub fn with_server_files() -> io::Result<(TestCa, ServerFiles)> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("kavach-pki-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let ca = TestCa::new("kavach test ca")?;
        let files = ca.server_files(&dir)?;
        Ok((ca, files))
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add(self.cert_der.clone());
        roots
    }

    /// Writes the CA and a server certificate for `kavach.test` into `dir`.
    pub fn server_files(&self, dir: &Path) -> io::Result<ServerFiles> {
        let mut params = CertificateParams::new(vec!["kavach.test".to_string()]).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kavach.test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        let files = ServerFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: dir.join("ca.pem"),
        };
        fs::write(&files.cert, cert.pem())?;
        fs::write(&files.key, key.serialize_pem())?;
        fs::write(&files.ca, &self.cert_pem)?;
        Ok(files)
    }

    /// A client certificate whose only URI SAN is `spiffe_id`.
    pub fn client(&self, spiffe_id: &str) -> io::Result<ClientIdentity> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "workload");
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().map_err(err)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(ClientIdentity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        })
    }
}
