//! HS256 JSON Web Tokens: signing (for development, `sluice token`) and verification at
//! the handshake ([`JwtAuthenticator`]).
//!
//! Only `alg: HS256` is accepted (never `none`, never another algorithm named by the
//! token). A token must carry a string `sub` and a numeric `exp`; `nbf`, when present,
//! is honoured. Signatures are compared in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value as Json};
use sha2::Sha256;

use super::authenticator::Authenticator;
use super::claims::Claims;

/// How long a token made by `sluice token` (or [`JwtAuthenticator::sign`] without an
/// `exp`) stays valid: 24 hours.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Clock skew tolerated when checking `exp` and `nbf`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// Longest token accepted, in bytes (a bound on work done for unauthenticated input).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. The message is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("a token is required (this server has authentication enabled)")]
    /// No token was presented.
    Missing,
    #[error("malformed token: {0}")]
    /// Not a JWT: three base64url parts, a JSON header and payload (the detail says
    /// what is wrong).
    Malformed(String),
    #[error("token algorithm `{0}` is not accepted (only HS256)")]
    /// Signed with an algorithm other than HS256.
    Algorithm(String),
    #[error("invalid token signature")]
    /// The signature does not match the secret.
    BadSignature,
    #[error("token expired {0} s ago")]
    /// `exp` is in the past; the value is how many seconds ago.
    Expired(u64),
    #[error("token not valid before {0}")]
    /// `nbf` is in the future; the value is that time (Unix seconds).
    NotYetValid(u64),
    #[error("token lacks the `{0}` claim")]
    /// A required claim (`sub` or `exp`) is missing or not of the right type.
    MissingClaim(&'static str),
}

/// Verifies (and, for development, signs) HS256 tokens with one shared secret.
#[derive(Clone)]
pub struct JwtAuthenticator {
    secret: Vec<u8>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuthenticator { secret: <hidden> }")
    }
}

impl JwtAuthenticator {
    /// An authenticator that signs and verifies with `secret`. Cheap: keeps the bytes.
    pub fn new(secret: impl AsRef<[u8]>) -> JwtAuthenticator {
        JwtAuthenticator {
            secret: secret.as_ref().to_vec(),
        }
    }

    /// A signed token for `claims`; without `exp` it expires after [`DEFAULT_TOKEN_TTL`].
    pub fn sign(&self, claims: &Claims) -> String {
        let now = unix_now();
        let mut payload = Map::new();
        for (name, value) in &claims.extra {
            payload.insert(name.clone(), value.clone());
        }
        if let Some(sub) = &claims.sub {
            payload.insert("sub".into(), json!(sub));
        }
        let exp = claims.exp.unwrap_or(now + DEFAULT_TOKEN_TTL.as_secs());
        payload.insert("exp".into(), json!(exp));
        payload.insert("iat".into(), json!(now));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(Json::Object(payload).to_string());
        let signing_input = format!("{header}.{body}");
        let signature =
            URL_SAFE_NO_PAD.encode(self.mac(signing_input.as_bytes()).finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies `token` at the current time (reads the system clock; one HMAC over the
    /// token). Errors: the [`TokenError`] that says why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as of `now` (seconds since the UNIX epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut parts = token.trim().split('.');
        let (Some(header), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let header = decode_json(header, "header")?;
        match header.get("alg").and_then(Json::as_str) {
            Some("HS256") => {}
            Some(other) => return Err(TokenError::Algorithm(other.to_string())),
            None => return Err(TokenError::Malformed("header has no `alg`".into())),
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
        let signed_len = header_len(token);
        self.mac(&token.trim().as_bytes()[..signed_len])
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let Json::Object(mut payload) = decode_json(body, "payload")? else {
            return Err(TokenError::Malformed("payload is not a JSON object".into()));
        };
        let sub = match payload.remove("sub") {
            Some(Json::String(s)) => s,
            _ => return Err(TokenError::MissingClaim("sub")),
        };
        let exp = match payload.remove("exp").as_ref().and_then(Json::as_f64) {
            Some(e) if e >= 0.0 => e as u64,
            _ => return Err(TokenError::MissingClaim("exp")),
        };
        let leeway = CLOCK_LEEWAY.as_secs();
        if now > exp.saturating_add(leeway) {
            return Err(TokenError::Expired(now - exp));
        }
        if let Some(nbf) = payload.remove("nbf").as_ref().and_then(Json::as_f64) {
            let nbf = nbf.max(0.0) as u64;
            if now.saturating_add(leeway) < nbf {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        payload.remove("iat");
        Ok(Claims {
            sub: Some(sub),
            exp: Some(exp),
            extra: payload.into_iter().collect(),
        })
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(data);
        mac
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, token: Option<&str>) -> Result<Claims, String> {
        let token = token
            .ok_or(TokenError::Missing)
            .map_err(|e| e.to_string())?;
        self.verify(token).map_err(|e| e.to_string())
    }
}

/// Bytes of `header.payload` (what the signature covers).
fn header_len(token: &str) -> usize {
    token.trim().rfind('.').unwrap_or(0)
}

fn decode_json(part: &str, what: &str) -> Result<Json, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Malformed(format!("{what} is not JSON: {e}")))
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> JwtAuthenticator {
        JwtAuthenticator::new("s3cret")
    }

    #[test]
    fn signed_tokens_verify_with_their_claims() {
        let claims = Claims::for_user("alice")
            .with("teams", json!(["T1", "T2"]))
            .unwrap();
        let token = auth().sign(&claims);
        let verified = auth().verify(&token).unwrap();
        assert_eq!(verified.sub.as_deref(), Some("alice"));
        assert_eq!(verified.extra["teams"], json!(["T1", "T2"]));
        let exp = verified.exp.unwrap();
        assert!(exp >= unix_now() + DEFAULT_TOKEN_TTL.as_secs() - 5);
    }

    #[test]
    fn known_hs256_vector_verifies() {
        // The widely published HS256 example token, signed with "your-256-bit-secret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
            SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        // The vector has no exp: it must be refused for that reason, after the signature
        // checked out.
        assert_eq!(
            JwtAuthenticator::new("your-256-bit-secret").verify(token),
            Err(TokenError::MissingClaim("exp"))
        );
        assert_eq!(
            JwtAuthenticator::new("other").verify(token),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let now = unix_now();
        let claims = Claims {
            exp: Some(now - 3600),
            ..Claims::for_user("bob")
        };
        let expired = auth().sign(&claims);
        assert!(matches!(auth().verify(&expired), Err(TokenError::Expired(s)) if s >= 3600));
        let good = auth().sign(&Claims::for_user("bob"));
        assert_eq!(
            JwtAuthenticator::new("wrong").verify(&good),
            Err(TokenError::BadSignature)
        );
        // Tamper with the payload, keep the signature.
        let parts: Vec<&str> = good.split('.').collect();
        let forged_body = URL_SAFE_NO_PAD
            .encode(json!({"sub": "admin", "exp": now + 999, "teams": ["T9"]}).to_string());
        let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(auth().verify(&forged), Err(TokenError::BadSignature));
        // alg: none with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            forged_body
        );
        assert_eq!(
            auth().verify(&none),
            Err(TokenError::Algorithm("none".into()))
        );
        assert!(matches!(
            auth().verify("abc"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            auth().verify("a.b.c.d"),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            auth().authenticate(None),
            Err(TokenError::Missing.to_string())
        );
    }

    #[test]
    fn not_before_is_honoured() {
        let now = unix_now();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let body = URL_SAFE_NO_PAD
            .encode(json!({"sub": "x", "exp": now + 7200, "nbf": now + 3600}).to_string());
        let input = format!("{header}.{body}");
        let sig = URL_SAFE_NO_PAD.encode(auth().mac(input.as_bytes()).finalize().into_bytes());
        let token = format!("{input}.{sig}");
        assert_eq!(
            auth().verify(&token),
            Err(TokenError::NotYetValid(now + 3600))
        );
        assert!(auth().verify_at(&token, now + 3601).is_ok());
    }
}
