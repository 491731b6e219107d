//! TLS to PostgreSQL, as libpq spells it in the connection string: `sslmode`,
//! `sslrootcert`, and `sslcert` with `sslkey` for a client certificate (a server whose
//! `pg_hba.conf` says `cert` or `clientcert=verify-full`). With TLS on, every connection
//! (queries, writes and the replication stream) is encrypted and the server's
//! certificate is verified against the CA file and the host name, whatever the mode says
//! (`require` and `verify-ca` check no less than `verify-full`); without a CA file there
//! is nothing to verify against, so those modes are refused rather than run unverified.
//!
//! | `sslmode` | without `sslrootcert` | with `sslrootcert=FILE` |
//! |---|---|---|
//! | `disable` | plain TCP | refused (contradiction) |
//! | absent, `prefer` | plain TCP | TLS, verified |
//! | `require`, `verify-ca`, `verify-full` | refused | TLS, verified |
//!
//! A client certificate needs TLS on (`sslrootcert`), and both of its files; either alone
//! is refused, as is one whose files cannot be read.
//!
//! tokio-postgres knows none of `sslrootcert`, `sslcert`, `sslkey` and the `verify-*`
//! modes: they are taken out of the string before it parses the rest.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use super::PgError;

/// A parsed connection string: tokio-postgres's configuration and, when TLS is on, the
/// rustls configuration that verifies the server.
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("pg", &self.pg)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl PgConfig {
    /// Whether connections use TLS (and verify the server).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Parses a `postgres://` URL or a `key=value` connection string, with libpq's
/// `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (see the module docs). Fails with
/// [`PgError::Url`], or [`PgError::Tls`] when the CA file or the client certificate
/// cannot be used.
pub fn parse_url(url: &str) -> Result<PgConfig, PgError> {
    let TlsOptions {
        rest,
        mode,
        rootcert,
        cert,
        key,
    } = take_tls_options(url)?;
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(cert_pem), Some(key_pem)) => Some(crate::transport::TlsFiles { cert_pem, key_pem }),
        _ => {
            return Err(PgError::Url(
                "a client certificate needs both sslcert=FILE and sslkey=FILE".into(),
            ))
        }
    };
    if identity.is_some() && rootcert.is_none() {
        return Err(PgError::Url(
            "sslcert needs TLS on: set sslrootcert=FILE (the CA that verifies the server)".into(),
        ));
    }
    let verified = match (mode.as_deref(), rootcert) {
        (Some("disable"), Some(_)) => {
            return Err(PgError::Url(
                "sslrootcert names a CA file but sslmode=disable turns TLS off".into(),
            ))
        }
        (Some("disable") | Some("prefer") | None, None) => None,
        (Some(mode @ ("require" | "verify-ca" | "verify-full")), None) => {
            return Err(PgError::Url(format!(
                "sslmode={mode} needs sslrootcert=FILE: sluice verifies the server's \
                 certificate and host name against that CA"
            )))
        }
        (Some("prefer" | "require" | "verify-ca" | "verify-full") | None, Some(path)) => {
            Some(client_config(&path, identity.as_ref())?)
        }
        (Some(other), _) => {
            return Err(PgError::Url(format!(
                "invalid sslmode {other:?} (disable, prefer, require, verify-ca or verify-full)"
            )))
        }
    };
    pg.ssl_mode(if verified.is_some() {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    Ok(PgConfig { pg, tls: verified })
}

/// The rustls configuration trusting only the certificates in `ca`, presenting the
/// client certificate `identity` names when asked.
fn client_config(
    ca: &Path,
    identity: Option<&crate::transport::TlsFiles>,
) -> Result<Arc<rustls::ClientConfig>, PgError> {
    let tls = |e: &dyn std::fmt::Display| PgError::Tls(e.to_string());
    let roots = crate::transport::root_store(ca).map_err(|e| tls(&e))?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let identity = crate::transport::Identity::load(files).map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|e| {
                    tls(&format!(
                        "client certificate {}: {e}",
                        files.cert_pem.display()
                    ))
                })?
        }
    };
    Ok(Arc::new(config))
}

/// A connection string split into what tokio-postgres parses and the TLS keys sluice
/// handles itself.
#[derive(Debug, Default, PartialEq)]
struct TlsOptions {
    rest: String,
    mode: Option<String>,
    rootcert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Splits `sslmode`, `sslrootcert`, `sslcert` and `sslkey` off a connection string.
/// Only those keys are touched; the rest is kept as written.
fn take_tls_options(url: &str) -> Result<TlsOptions, PgError> {
    let mut options = TlsOptions::default();
    let mut take = |key: &str, value: String| {
        let slot = match key {
            "sslmode" => {
                options.mode = Some(value);
                return true;
            }
            "sslrootcert" => &mut options.rootcert,
            "sslcert" => &mut options.cert,
            "sslkey" => &mut options.key,
            _ => return false,
        };
        *slot = Some(PathBuf::from(value));
        true
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for param in query.split('&') {
                    let (key, value) = param.split_once('=').unwrap_or((param, ""));
                    if !take(key, percent_decode(value)?) {
                        kept.push(param);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (span, key, value) in key_values(url)? {
            if !take(key, value) {
                kept.push(&url[span]);
            }
        }
        kept.join(" ")
    };
    Ok(TlsOptions { rest, ..options })
}

/// `%XX` escapes of a URL parameter value, decoded.
fn percent_decode(value: &str) -> Result<String, PgError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PgError::Url(format!("bad percent escape in {value:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Url(format!("{value:?} is not UTF-8")))
}

/// One `key = value` pair of a libpq key/value string: its span, its key, its value.
type KeyValue<'a> = (std::ops::Range<usize>, &'a str, String);

/// The `key = value` pairs of a libpq key/value string: each pair's span in `s`, its key
/// and its unquoted value (`'...'` with `\'` and `\\` escapes, or a bare word).
fn key_values(s: &str) -> Result<Vec<KeyValue<'_>>, PgError> {
    let bytes = s.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i == bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            return Err(PgError::Url(format!("expected `=` after {key:?}")));
        }
        i = skip_space(i + 1);
        let mut value = Vec::new();
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            match bytes.get(i) {
                None if quoted => {
                    return Err(PgError::Url(format!("unterminated quote in {key:?}")))
                }
                None => break,
                Some(b'\'') if quoted => {
                    i += 1;
                    break;
                }
                Some(c) if !quoted && c.is_ascii_whitespace() => break,
                Some(b'\\') if i + 1 < bytes.len() => {
                    value.push(bytes[i + 1]);
                    i += 2;
                }
                Some(&c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        let value = String::from_utf8(value)
            .map_err(|_| PgError::Url(format!("the value of {key:?} is not UTF-8")))?;
        pairs.push((start..i, key, value));
    }
}

/// A stream after the TLS handshake, for tokio-postgres and the replication connection.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

/// Connects TLS over a socket for tokio-postgres (and [`super::replication`]).
#[derive(Clone)]
pub(crate) struct MakeRustls(pub Arc<rustls::ClientConfig>);

/// One handshake with a named server.
pub(crate) struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl MakeRustls {
    pub(crate) fn for_host(&self, host: &str) -> Result<RustlsConnect, PgError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| PgError::Tls(format!("host {host:?}: {e}")))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = PgError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, PgError> {
        self.for_host(domain)
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { Ok(RustlsStream(connector.connect(self.name, stream).await?)) })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<String>, Option<PathBuf>) {
        let options = take_tls_options(url).unwrap();
        assert_eq!((&options.cert, &options.key), (&None, &None));
        (options.rest, options.mode, options.rootcert)
    }

    #[test]
    fn url_parameters_lose_only_the_tls_keys() {
        assert_eq!(
            split("postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fca%20dir%2Fca.pem&connect_timeout=3"),
            (
                "postgres://u:p@h:5/db?application_name=x&connect_timeout=3".into(),
                Some("verify-full".into()),
                Some(PathBuf::from("/ca dir/ca.pem"))
            )
        );
        assert_eq!(
            split("postgresql://h/db?sslmode=disable"),
            ("postgresql://h/db".into(), Some("disable".into()), None)
        );
        assert_eq!(
            split("postgres://h/db"),
            ("postgres://h/db".into(), None, None)
        );
        assert!(take_tls_options("postgres://h/db?sslrootcert=%zz").is_err());
    }

    #[test]
    fn key_value_strings_lose_only_the_tls_keys() {
        let (rest, mode, ca) =
            split("host=h  port = 5 sslrootcert='/a b/it\\'s.pem' password='x y' sslmode=require");
        assert_eq!(rest, "host=h port = 5 password='x y'");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(ca, Some(PathBuf::from("/a b/it's.pem")));
        assert!(take_tls_options("host=h sslmode").is_err());
        assert!(take_tls_options("host='h").is_err());
    }

    #[test]
    fn modes_without_a_ca_stay_plain_or_are_refused() {
        let plain = parse_url("postgres://u@127.0.0.1:5/db").unwrap();
        assert!(!plain.uses_tls());
        assert!(!parse_url("postgres://u@h/db?sslmode=prefer")
            .unwrap()
            .uses_tls());
        for mode in ["require", "verify-ca", "verify-full"] {
            let err = parse_url(&format!("postgres://u@h/db?sslmode={mode}")).unwrap_err();
            assert!(err.to_string().contains("needs sslrootcert"), "{err}");
        }
        let err = parse_url("postgres://u@h/db?sslmode=sometimes").unwrap_err();
        assert!(err.to_string().contains("invalid sslmode"), "{err}");
    }

    #[test]
    fn a_ca_file_turns_tls_on_and_must_be_usable() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        let url = format!("postgres://u@h/db?sslrootcert={}", ca.display());
        let config = parse_url(&url).unwrap();
        assert!(config.uses_tls());
        assert_eq!(config.pg.get_ssl_mode(), SslMode::Require);
        let err = parse_url(&format!("{url}&sslmode=disable")).unwrap_err();
        assert!(err.to_string().contains("sslmode=disable"), "{err}");
        let missing = parse_url("postgres://u@h/db?sslrootcert=/no/such/ca.pem").unwrap_err();
        assert!(matches!(missing, PgError::Tls(_)), "{missing}");
        assert!(missing.to_string().contains("/no/such/ca.pem"), "{missing}");
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(matches!(parse_url(&url), Err(PgError::Tls(_))));
    }

    #[test]
    fn a_client_certificate_needs_both_files_and_tls() {
        let options = take_tls_options(
            "postgres://u@h/db?sslcert=%2Fc%20d%2Fme.crt&application_name=x&sslkey=/k/me.key",
        )
        .unwrap();
        assert_eq!(options.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(options.cert, Some(PathBuf::from("/c d/me.crt")));
        assert_eq!(options.key, Some(PathBuf::from("/k/me.key")));
        let options = take_tls_options("host=h sslkey='/k/me.key' sslcert=/c/me.crt").unwrap();
        assert_eq!(options.rest, "host=h");
        assert_eq!(options.cert, Some(PathBuf::from("/c/me.crt")));

        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = (
            dir.path().join("ca.pem"),
            dir.path().join("me.crt"),
            dir.path().join("me.key"),
        );
        let pair = rcgen::KeyPair::generate().unwrap();
        let issued = rcgen::CertificateParams::new(vec!["me".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        std::fs::write(&ca, issued.pem()).unwrap();
        std::fs::write(&cert, issued.pem()).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        let (ca, cert, key) = (ca.display(), cert.display(), key.display());
        let url = format!("postgres://u@h/db?sslrootcert={ca}&sslcert={cert}&sslkey={key}");
        assert!(parse_url(&url).unwrap().uses_tls());

        let only_cert = parse_url(&format!(
            "postgres://u@h/db?sslrootcert={ca}&sslcert={cert}"
        ));
        let err = only_cert.unwrap_err().to_string();
        assert!(err.contains("both sslcert=FILE and sslkey=FILE"), "{err}");
        let plain = parse_url(&format!("postgres://u@h/db?sslcert={cert}&sslkey={key}"));
        let err = plain.unwrap_err().to_string();
        assert!(err.contains("sslcert needs TLS on"), "{err}");
        let missing = parse_url(&format!(
            "postgres://u@h/db?sslrootcert={ca}&sslcert=/no/me.crt&sslkey={key}"
        ))
        .unwrap_err();
        assert!(matches!(missing, PgError::Tls(_)), "{missing}");
        assert!(missing.to_string().contains("/no/me.crt"), "{missing}");
        let swapped = parse_url(&format!(
            "postgres://u@h/db?sslrootcert={ca}&sslcert={key}&sslkey={cert}"
        ))
        .unwrap_err();
        assert!(matches!(swapped, PgError::Tls(_)), "{swapped}");
    }
}
