//! Built-in accounts: `login` (rate limited per email and per client address), minting tokens
//! for the CLI, and `bootstrap` (the first organisation and its OWNER).

use std::{net::IpAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

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
    db: DatabaseConnection,
    auth: Authenticator,
    per_email: Arc<KeyedLimit<String>>,
    per_address: Arc<KeyedLimit<IpAddr>>,
}

impl AccountService {
    /// Builds the service.
    pub fn new(config: Arc<Config>, db: DatabaseConnection, auth: Authenticator) -> Self {
        Self {
            db,
            auth,
            per_email: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_email_per_minute,
            )),
            per_address: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_address_per_minute,
            )),
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
    ) -> AppResult<AccessToken> {
        // Forget recovered keys now and then, so the limiters' memory stays bounded.
        if rand::random::<u8>() == 0 {
            self.per_address.forget_idle();
            self.per_email.forget_idle();
        }
        if let Some(ip) = client_ip {
            self.per_address.check(&ip)?;
        }
        let normalised = email.trim().to_lowercase();
        self.per_email.check(&normalised)?;
        let found = match Email::parse(&normalised, "email") {
            Ok(e) => db::users::find_by_email(&self.db, &e).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let ok = passwords::verify(password, hash).await?;
        match user {
            Some(user) if ok => {
                tracing::info!(user = %user.id, "login succeeded");
                self.mint(user, self.auth.access_token_ttl())
            }
            _ => {
                tracing::info!("login failed");
                Err(AppError::Unauthenticated("wrong email or password".into()))
            }
        }
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
