//! Authentication and authorization: the [`Authenticator`] the server asks at the
//! handshake (with [`NoAuth`] and the HS256 [`JwtAuthenticator`] of [`token`]), verified
//! token claims ([`Claims`]), the permission rules file ([`rules`]) and the per-session
//! policy bound from both ([`policy`]).
//!
//! Depends on `query` (rules are subscription predicates), `schema` and the store's
//! [`crate::store::WriteGuard`] seam; never on the server, which calls into this module at
//! the handshake (claims), on every subscribe and fetch (read rules) and inside the
//! store's write transaction (write rules, through the guard). No IO except
//! [`Rules::load`], which reads the rules file; token checks read the system clock
//! (expiry), and [`JwtAuthenticator::verify_at`] takes the time instead for tests.

mod authenticator;
mod claims;
pub mod policy;
pub mod rules;
pub mod token;

pub use authenticator::{Authenticator, NoAuth};
pub use claims::{Claims, ClaimsError, RESERVED_CLAIMS};
pub use policy::{Denied, Effective, Policy, ReadAccess, SubscribeError};
pub use rules::{Rules, RulesError};
pub use token::{JwtAuthenticator, TokenError, DEFAULT_TOKEN_TTL};
