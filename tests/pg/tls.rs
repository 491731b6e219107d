//! Certificates for a test cluster that speaks TLS: a CA of its own and a server
//! certificate it issues for `localhost` only (so a connection to `127.0.0.1` fails the
//! host name check), written as PostgreSQL wants them.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The CA the cluster's certificate comes from.
pub struct TestCa {
    /// The CA certificate, PEM: what `sslrootcert` names.
    pub pem: PathBuf,
    /// Signs client certificates ([`issue_client`]).
    pub issuer: Issuer<'static, KeyPair>,
}

/// A client certificate for the PostgreSQL role `user` (its common name) signed by
/// `issuer`, and its key (mode 0600, as libpq wants it), written into `dir` as
/// `NAME.crt` and `NAME.key`; returns both paths.
pub fn issue_client(
    issuer: &Issuer<'_, KeyPair>,
    user: &str,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let key = KeyPair::generate().expect("client key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user);
    let cert = params.signed_by(&key, issuer).expect("client certificate");
    let (crt, keyfile) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, cert.pem()).expect("write client certificate");
    std::fs::write(&keyfile, key.serialize_pem()).expect("write client key");
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (crt, keyfile)
}

/// A self-signed CA certificate (PEM) and the issuer that signs with its key.
pub fn new_ca() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: a certificate from another test CA is then an unknown issuer,
    // not a bad signature under a shared name.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("sluice test CA {} {n}", std::process::id());
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// Writes `server.crt` and `server.key` (mode 0600) into the data folder `data`, for
/// `localhost`, issued by a new CA whose certificate goes to `ca_dir`; the files are
/// given to `owner` when set (the server refuses a key it does not own).
pub fn write_server_files(data: &Path, ca_dir: &Path, owner: Option<&str>) -> TestCa {
    use std::os::unix::fs::PermissionsExt;
    let (ca_pem, issuer) = new_ca();
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let (crt, keyfile) = (data.join("server.crt"), data.join("server.key"));
    std::fs::write(&crt, cert.pem()).expect("write server.crt");
    std::fs::write(&keyfile, key.serialize_pem()).expect("write server.key");
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if let Some(owner) = owner {
        for file in [&crt, &keyfile] {
            let status = std::process::Command::new("chown")
                .arg(owner)
                .arg(file)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {}", file.display());
        }
    }
    let pem = ca_dir.join("ca.pem");
    std::fs::write(&pem, ca_pem).expect("write ca.pem");
    TestCa { pem, issuer }
}

/// `pg_hba.conf` lines: local sockets trusted, TCP only over TLS (trusted then), plain TCP
/// rejected with PostgreSQL's own message.
pub const HBA_TLS_ONLY: &str = "local all all trust\n\
    hostssl all all 127.0.0.1/32 trust\n\
    hostssl replication all 127.0.0.1/32 trust\n\
    hostnossl all all 0.0.0.0/0 reject\n\
    hostnossl replication all 0.0.0.0/0 reject\n";

/// `postgresql.conf` lines that turn TLS on with the files of [`write_server_files`].
pub const SSL_CONF: &str = "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
