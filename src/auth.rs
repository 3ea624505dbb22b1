//! Authentication: JWT verification (HS256, RS256/ES256 via JWKS), the [`Viewer`] every request
//! carries, password hashing for built-in accounts, and rate limits.

pub mod jwt;
pub mod passwords;
pub mod rate_limit;
pub mod viewer;

pub use jwt::{Authenticator, Claims};
pub use viewer::Viewer;
