//! Certificates and rustls configurations.
//!
//! Every configuration is built with an explicit `ring` [`CryptoProvider`], so the
//! transport works whatever (if any) process-wide default provider is installed. QUIC
//! requires TLS 1.3, which is the only version offered.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    RootCertStore,
};
use sha2::{Digest, Sha256};

use super::{error::TransportError, ALPN, SELF_SIGNED_NAMES};

/// Common name of generated certificates, followed by a tag derived from the key.
const SELF_SIGNED_SUBJECT: &str = "sluice self-signed";

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then any intermediates.
    pub cert_pem: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_pem: PathBuf,
}

/// A certificate chain with its key, ready for a server configuration (or a client's, to
/// prove who it is: PostgreSQL's client certificates).
pub(crate) struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads the chain and key named by `files`.
    pub fn load(files: &TlsFiles) -> Result<Self, TransportError> {
        let chain = load_certs(&files.cert_pem)?;
        let bytes = read(&files.key_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| TransportError::Pem {
            path: files.key_pem.clone(),
            detail: format!("no usable private key: {err}"),
        })?;
        Ok(Self { chain, key })
    }

    /// Generates a self-signed certificate for [`SELF_SIGNED_NAMES`] and, if `write_to` is
    /// given, writes the certificate (not the key) there as PEM so clients can use it as
    /// their CA file.
    pub fn self_signed(write_to: Option<&Path>) -> Result<Self, TransportError> {
        let names: Vec<String> = SELF_SIGNED_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect();
        let key_pair = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names)?;
        // A subject unique to this key: a client trusting another generated certificate
        // then reports an unknown issuer, not a confusing signature failure between two
        // certificates that share a name.
        let fingerprint = Sha256::digest(key_pair.public_key_raw());
        let tag: String = fingerprint[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{SELF_SIGNED_SUBJECT} {tag}"),
        );
        let cert = params.self_signed(&key_pair)?;
        if let Some(path) = write_to {
            std::fs::write(path, cert.pem()).map_err(|source| TransportError::WriteFile {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
        Ok(Self {
            chain: vec![cert.der().clone()],
            key: key.into(),
        })
    }
}

/// The crypto provider every configuration is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A QUIC server crypto configuration presenting `identity`, speaking [`ALPN`].
pub(super) fn server_crypto(identity: Identity) -> Result<QuicServerConfig, TransportError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    QuicServerConfig::try_from(config)
        .map_err(|err| TransportError::Tls(rustls::Error::General(err.to_string())))
}

/// A QUIC client crypto configuration trusting only the certificates in `ca_pem`.
pub(super) fn client_crypto(ca_pem: &Path) -> Result<QuicClientConfig, TransportError> {
    let roots = root_store(ca_pem)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    QuicClientConfig::try_from(config)
        .map_err(|err| TransportError::Tls(rustls::Error::General(err.to_string())))
}

/// A root store of the certificates in the PEM file `ca_pem`; an error naming the file
/// if it holds none or one that is unusable as a CA.
pub(crate) fn root_store(ca_pem: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_pem)? {
        roots.add(cert).map_err(|err| TransportError::Pem {
            path: ca_pem.to_path_buf(),
            detail: format!("unusable CA certificate: {err}"),
        })?;
    }
    Ok(roots)
}

/// All certificates in a PEM file; an error naming the file if there are none.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read(path)?;
    let pem_error = |detail: String| TransportError::Pem {
        path: path.to_path_buf(),
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(format!("malformed PEM: {err}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            "no certificate found (expected PEM `CERTIFICATE` blocks)".into(),
        ));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_written_as_pem_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.cert.pem");
        let identity = Identity::self_signed(Some(&path)).unwrap();
        let loaded = load_certs(&path).unwrap();
        assert_eq!(loaded, identity.chain);
        assert!(server_crypto(identity).is_ok());
        assert!(client_crypto(&path).is_ok());
    }

    #[test]
    fn missing_file_error_names_the_file() {
        let err = client_crypto(Path::new("does/not/exist.pem"))
            .err()
            .unwrap();
        assert!(matches!(err, TransportError::ReadFile { .. }));
        assert!(err.to_string().contains("does/not/exist.pem"), "{err}");
    }

    #[test]
    fn file_without_certificates_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_crypto(&path).err().unwrap();
        assert!(matches!(err, TransportError::Pem { .. }));
        assert!(err.to_string().contains("empty.pem"), "{err}");
        assert!(err.to_string().contains("no certificate"), "{err}");
    }

    #[test]
    fn key_file_without_a_key_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        Identity::self_signed(Some(&cert)).unwrap();
        // The certificate file is not a key file.
        let files = TlsFiles {
            cert_pem: cert.clone(),
            key_pem: cert,
        };
        let err = Identity::load(&files).err().unwrap();
        assert!(matches!(err, TransportError::Pem { .. }));
        assert!(
            err.to_string().contains("cert.pem: no usable private key"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_key_is_a_tls_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("a.cert.pem"), dir.path().join("b.key.pem"));
        Identity::self_signed(Some(&cert)).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let identity = Identity::load(&TlsFiles {
            cert_pem: cert,
            key_pem: key,
        })
        .unwrap();
        assert!(matches!(
            server_crypto(identity),
            Err(TransportError::Tls(_))
        ));
    }
}
