//! argon2id password hashing for built-in accounts, off the async runtime.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::error::{AppError, AppResult};

/// A syntactically valid hash of a random password, verified when the email is unknown so that
/// a missing account takes as long to reject as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Qm5rZ2dZb2x3c1N4Q2x3Z2dvZ2x3c1N4Q2x3Z2dvZ2w";

/// Checks a new password's strength (length only: long passphrases beat rules).
pub fn validate_new(password: &str, field: &str) -> AppResult<()> {
    let len = password.chars().count();
    if len < 10 {
        return Err(AppError::bad_input(
            field,
            "a password needs at least 10 characters",
        ));
    }
    if len > 256 {
        return Err(AppError::bad_input(
            field,
            "a password may have at most 256 characters",
        ));
    }
    Ok(())
}

/// Hashes a password with argon2id and a random salt.
pub async fn hash(password: String) -> AppResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing failed: {e}")))
    })
    .await
    .map_err(AppError::internal)?
}

/// Verifies a password against a stored hash; `None` (no account or no password) still spends
/// the time of one verification and fails.
pub async fn verify(password: String, stored: Option<String>) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        let (hash_text, real) = match &stored {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let parsed = PasswordHash::new(hash_text)
            .map_err(|e| AppError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await
    .map_err(AppError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = hash("correct horse battery".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !verify("wrong horse battery".into(), Some(h))
                .await
                .expect("verify")
        );
        assert!(!verify("anything at all".into(), None).await.expect("dummy"));
    }
}
