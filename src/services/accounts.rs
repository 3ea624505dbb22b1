//! Built-in accounts: `login`, minting tokens for the CLI, and `bootstrap` (the first
//! organisation and its OWNER).
//!
//! Login limits cannot be turned against the victim: attempts are refused per client address
//! and per (email, address) pair, so an attacker's failures lock out only the attacker's own
//! address. Across addresses, an email over its per-minute ceiling is slowed, not locked: one
//! attempt at a time waits [`SLOW_DOWN`], the right password still signs in, and a wrong one
//! answers `RATE_LIMITED` with `retryAfterSeconds`.

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::organizations::create_with_owner;
use crate::{
    auth::{Authenticator, passwords, rate_limit::KeyedLimit},
    config::Config,
    db::{self, users::NewUser},
    domain::{Email, Organization, Slug, User, people::required_text},
    error::{AppError, AppResult},
};

/// A minted access token (its `Debug` leaves the token out).
#[derive(Clone)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Whose it is.
    pub user: User,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user", &self.user.id)
            .finish()
    }
}

/// Sign-in and tokens.
#[derive(Clone)]
pub struct AccountService {
    db: db::Db,
    auth: Authenticator,
    per_email: Arc<KeyedLimit<String>>,
    per_address: Arc<KeyedLimit<IpAddr>>,
    per_pair: Arc<KeyedLimit<(String, IpAddr)>>,
    slowed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// How long an attempt on an email over its ceiling waits before its password is checked.
pub const SLOW_DOWN: Duration = Duration::from_secs(1);

/// The slowed attempt in flight for one email; dropping it lets the next one in.
struct SlowLane {
    slowed: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    email: String,
}

impl Drop for SlowLane {
    fn drop(&mut self) {
        self.slowed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.email);
    }
}

impl AccountService {
    /// Builds the service.
    pub fn new(config: Arc<Config>, db: db::Db, auth: Authenticator) -> Self {
        Self {
            db,
            auth,
            per_email: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_email_per_minute,
            )),
            per_address: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_address_per_minute,
            )),
            per_pair: Arc::new(KeyedLimit::per_minute(
                config.security.login_per_pair_per_minute,
            )),
            slowed: Arc::default(),
        }
    }

    /// The authenticator (for the HTTP and WebSocket layers).
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Signs in with email and password. Every failure looks the same to the caller.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client_ip: Option<IpAddr>,
        audit: &crate::audit::AuditScope,
    ) -> AppResult<AccessToken> {
        // Forget recovered keys now and then, so the limiters' memory stays bounded.
        if rand::random::<u8>() == 0 {
            self.per_address.forget_idle();
            self.per_email.forget_idle();
            self.per_pair.forget_idle();
        }
        let normalised = email.trim().to_lowercase();
        if let Some(ip) = client_ip {
            self.per_address.check(&ip)?;
            self.per_pair.check(&(normalised.clone(), ip))?;
        }
        let slowed = match self.per_email.check(&normalised) {
            Ok(()) => None,
            Err(_) => Some(self.slow_lane(&normalised).await?),
        };
        let found = match Email::parse(&normalised, "email") {
            Ok(e) => db::users::find_by_email(&self.db, &e).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let ok = passwords::verify(password, hash).await?;
        // Sign-ins go on the system chain; a failed one never stores the email typed (no
        // entity id), only the user when the email named one.
        use crate::audit::{AuditAction, AuditActor, AuditEntity, AuditEntry};
        let (actor, action) = match &user {
            Some(u) if ok => (AuditActor::User(u.id), AuditAction::Login),
            Some(u) => (AuditActor::User(u.id), AuditAction::LoginFailed),
            None => (AuditActor::Anonymous, AuditAction::LoginFailed),
        };
        let mut entry = AuditEntry::new(action, AuditEntity::User, "");
        entry.entity_id = match (&user, ok) {
            (Some(u), true) => Some(u.id.into()),
            _ => None,
        };
        if action == AuditAction::LoginFailed {
            entry = entry.denied();
        }
        audit.with_actor(actor).record_in(&self.db, entry).await?;
        match user {
            Some(user) if ok => {
                tracing::info!(user = %user.id, "login succeeded");
                self.mint(user, self.auth.access_token_ttl())
            }
            _ if slowed.is_some() => {
                tracing::info!("login failed on an email over its ceiling");
                Err(AppError::RateLimited {
                    retry_after_seconds: SLOW_DOWN.as_secs().max(1),
                })
            }
            _ => {
                tracing::info!("login failed");
                Err(AppError::Unauthenticated("wrong email or password".into()))
            }
        }
    }

    /// Waits [`SLOW_DOWN`] holding the email's one slowed-attempt slot; `RATE_LIMITED` when
    /// another slowed attempt on this email is under way.
    async fn slow_lane(&self, email: &str) -> AppResult<SlowLane> {
        let inserted = self
            .slowed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(email.to_owned());
        if !inserted {
            return Err(AppError::RateLimited {
                retry_after_seconds: SLOW_DOWN.as_secs().max(1),
            });
        }
        let lane = SlowLane {
            slowed: self.slowed.clone(),
            email: email.to_owned(),
        };
        tokio::time::sleep(SLOW_DOWN).await;
        Ok(lane)
    }

    /// Mints a token for a user by email (the `token` command).
    pub async fn token_for_email(&self, email: &str, ttl: Duration) -> AppResult<AccessToken> {
        let email = Email::parse(email, "email")?;
        let (user, _) = db::users::find_by_email(&self.db, &email)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        self.mint(user, ttl)
    }

    /// Mints a token for a known user.
    pub fn mint(&self, user: User, ttl: Duration) -> AppResult<AccessToken> {
        let (token, expires_at) = self.auth.mint(&user, ttl)?;
        Ok(AccessToken {
            token,
            expires_at,
            user,
        })
    }

    /// Creates an organisation and makes the user (created when new, with this password) its
    /// OWNER. May be run again for further organisations.
    pub async fn bootstrap(
        &self,
        org_name: &str,
        email: &str,
        password: String,
        given_name: Option<&str>,
        family_name: Option<&str>,
    ) -> AppResult<(Organization, User)> {
        let org_name = required_text(org_name, "org", 200)?;
        let email = Email::parse(email, "email")?;
        let slug = Slug::parse(&slugify(&org_name), "org")?;
        passwords::validate_new(&password, "password")?;
        let hash = passwords::hash(password).await?;
        let user = match db::users::find_by_email(&self.db, &email).await? {
            Some((user, _)) => {
                db::users::set_password_hash(&self.db, user.id, hash).await?;
                user
            }
            None => {
                let local = email
                    .as_str()
                    .split('@')
                    .next()
                    .unwrap_or("owner")
                    .to_owned();
                db::users::insert(
                    &self.db,
                    NewUser {
                        email: email.clone(),
                        given_name: given_name.map_or(local, str::to_owned),
                        family_name: family_name.unwrap_or("").to_owned(),
                        password_hash: Some(hash),
                    },
                )
                .await?
            }
        };
        let org = create_with_owner(&self.db, org_name, &slug, &user).await?;
        Ok((org, user))
    }
}

/// Turns a name into a slug: lowercase ASCII letters and digits joined by single hyphens.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    slug.chars()
        .take(64)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::slugify;

    #[test]
    fn slugify_keeps_letters_and_digits() {
        assert_eq!(
            slugify("  Riverside Vets & Co. 24/7 "),
            "riverside-vets-co-24-7"
        );
        assert_eq!(slugify("Café"), "caf");
    }
}
