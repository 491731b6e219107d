//! The admin listener: Prometheus metrics at `/metrics`, the inspector page at `/`, and
//! the JSON the page reads (`/api/state`, `/api/check?sql=...`). Plain HTTP/1.1 on its own
//! TCP address, never the QUIC port; off unless [`super::ServerBuilder::admin`] is set.
//!
//! Protection: bound to loopback it may run without a token; bound elsewhere it needs one
//! ([`AdminError::TokenRequired`]), which every request then carries as
//! `Authorization: Bearer TOKEN` or `?token=TOKEN`. Only `GET` is served. Connections are
//! bounded ([`MAX_ADMIN_CONNECTIONS`]) and a client gets [`ADMIN_HEADER_TIMEOUT`] to send
//! its request headers.
//!
//! Server-internal: reads the server's shared state (sessions, registry, metrics) and
//! compiles subscriptions with [`crate::query::check`]; it writes nothing.

mod state;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::Shared;

/// Admin connections served at once; more wait to be accepted.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
/// How long an admin client has to send its request headers.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The inspector page: one file, no build step, no external assets.
const INSPECTOR_HTML: &str = include_str!("inspector.html");

/// Where the admin listener listens and what it requires.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The TCP address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The token every request must carry; required unless `addr` is loopback.
    pub token: Option<String>,
}

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The address is not loopback and no token was given.
    #[error("the admin listener on {0} is not on loopback: give it an admin token")]
    TokenRequired(SocketAddr),
    /// The address could not be bound.
    #[error("cannot bind the admin listener on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the admin listener; returns it with the address actually bound.
pub(super) async fn bind(config: &AdminConfig) -> Result<(TcpListener, SocketAddr), AdminError> {
    if !config.addr.ip().is_loopback() && config.token.as_deref().is_none_or(str::is_empty) {
        return Err(AdminError::TokenRequired(config.addr));
    }
    let bind = |source| AdminError::Bind {
        addr: config.addr,
        source,
    };
    let listener = TcpListener::bind(config.addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    Ok((listener, addr))
}

/// Serves admin requests until the task is aborted.
pub(super) async fn serve(shared: Arc<Shared>, listener: TcpListener, token: Option<String>) {
    let token: Option<Arc<str>> = token.filter(|t| !t.is_empty()).map(Arc::from);
    let places = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "admin listener serving metrics and the inspector");
    }
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, token) = (shared.clone(), token.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = route(&shared, token.as_deref(), &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(error = %e, "admin connection ended");
            }
            drop(place);
        });
    }
}

fn answer(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(hyper::header::CONTENT_TYPE, value);
    }
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn route<B>(shared: &Shared, token: Option<&str>, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    let query = request.uri().query().unwrap_or("");
    if let Some(token) = token {
        if !authorized(token, request, query) {
            return answer(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "admin token required\n".into(),
            );
        }
    }
    match request.uri().path() {
        "/" => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            INSPECTOR_HTML.into(),
        ),
        "/metrics" => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(shared),
        ),
        "/api/state" => answer(
            StatusCode::OK,
            "application/json",
            state::state(shared).to_string(),
        ),
        "/api/check" => {
            let sql = param(query, "sql").unwrap_or_default();
            answer(
                StatusCode::OK,
                "application/json",
                state::check(shared, &sql).to_string(),
            )
        }
        _ => answer(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Whether the request carries `token`, as a bearer header or a `token` parameter.
fn authorized<B>(token: &str, request: &Request<B>, query: &str) -> bool {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = header.map(str::to_string).or_else(|| param(query, "token"));
    given.is_some_and(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decoded value of parameter `name` in a query string (`+` is a space, `%XX` a
/// byte; invalid UTF-8 is replaced).
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

fn decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, other) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let q = "sql=SELECT+*+FROM+t+WHERE+a+%3D+%27x%27&token=s%20t";
        assert_eq!(param(q, "sql").unwrap(), "SELECT * FROM t WHERE a = 'x'");
        assert_eq!(param(q, "token").unwrap(), "s t");
        assert_eq!(param(q, "nope"), None);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
