//! Authentication and authorization: verified token claims ([`Claims`]), HS256 tokens
//! ([`token`]), the permission rules file ([`rules`]) and the per-session policy bound
//! from both ([`policy`]).
//!
//! Pure: no IO except [`Rules::load`], which reads the rules file. The server calls into
//! this module at the handshake (claims), on every subscribe and fetch (read rules) and
//! inside the store's write transaction (write rules, through
//! [`crate::store::WriteGuard`]).

mod claims;
pub mod policy;
pub mod rules;
pub mod token;

pub use claims::{Claims, ClaimsError, RESERVED_CLAIMS};
pub use policy::{Denied, Effective, Policy, ReadAccess, SubscribeError};
pub use rules::{Rules, RulesError};
pub use token::{JwtAuthenticator, TokenError, DEFAULT_TOKEN_TTL};
