//! The [`Authenticator`] seam: what the server asks of whoever checks tokens, and
//! [`NoAuth`], which accepts everyone. Lives in `auth` (re-exported as
//! `sluice::server::Authenticator`) so that token checks never depend on the server.
//! Pure: no IO.

use super::claims::Claims;

/// Verifies the token a client presents at the handshake. A backend can plug in its own
/// (sessions, API keys, another token format); the claims it returns become the rules'
/// `:auth.*` parameters.
///
/// Called once per connection attempt, inside the async handshake: it should not block,
/// since a slow check (a database lookup) stalls a runtime worker while it runs.
pub trait Authenticator: Send + Sync {
    /// The verified claims, or `Err(reason)`: the connection is refused with that reason
    /// (code `Unauthenticated`).
    fn authenticate(&self, token: Option<&str>) -> Result<Claims, String>;
}

/// Accepts every client (`--no-auth`), with empty claims.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAuth;

impl Authenticator for NoAuth {
    /// Always `Ok` with [`Claims::default`]; the token, if any, is ignored.
    fn authenticate(&self, _token: Option<&str>) -> Result<Claims, String> {
        Ok(Claims::default())
    }
}
