//! Authentication: JWT verification (HS256, RS256/ES256 via JWKS), the [`Viewer`] every request
//! carries, password hashing for built-in accounts, and rate limits.

pub mod jwt;
pub mod passwords;
pub mod rate_limit;
pub mod viewer;

pub use jwt::{Authenticator, Claims};
pub use viewer::Viewer;

/// A key for one purpose, derived from the JWT secret (HMAC-SHA256 of the purpose), so that no
/// two features share key material and none of them can forge access tokens.
pub fn derive_key(secret: &secrecy::SecretString, purpose: &str) -> secrecy::SecretString {
    use secrecy::ExposeSecret;
    let key = crate::crypto::hmac_hex(secret.expose_secret().as_bytes(), purpose.as_bytes());
    secrecy::SecretString::from(key)
}
