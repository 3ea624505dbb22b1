//! Access-token verification and minting.
//!
//! caregraph's own tokens are HS256 with `CAREGRAPH_JWT_SECRET`. An identity provider's RS256 or
//! ES256 tokens are verified against `CAREGRAPH_JWKS_URL`; the key set is cached and fetched
//! again when a token names an unknown `kid` (at most once every few seconds). The algorithm a
//! token may use is decided by the key, never by the token alone: an HS256 token is only checked
//! with the shared secret, an RS/ES token only with a JWKS key of the same algorithm, so `alg:
//! none` and algorithm confusion fail.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use super::Viewer;
use crate::{
    config::AuthConfig,
    db,
    domain::User,
    error::{AppError, AppResult},
};

/// The claims caregraph reads from (and writes into) an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, or the user's `externalId` when an identity provider owns the id.
    pub sub: String,
    /// Expiry (seconds since the epoch); required.
    pub exp: i64,
    /// Issued at; a time further ahead than the leeway is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before; checked with the leeway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issuer, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, when configured: one string or an array (as several identity providers send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// A token's `aud`: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "caregraph"`.
    One(String),
    /// `"aud": ["caregraph", "other"]`.
    Many(Vec<String>),
}

/// The clock skew allowed on `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The only error message a rejected token gets: no oracle about why.
fn rejected(detail: &str) -> AppError {
    tracing::debug!(detail, "access token rejected");
    AppError::Unauthenticated("invalid or expired access token".into())
}

struct CachedKeys {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    fetched_at: Option<Instant>,
}

/// A JWKS key set, cached and refreshed on an unknown `kid`.
struct JwksCache {
    url: String,
    http: reqwest::Client,
    ttl: Duration,
    cached: RwLock<CachedKeys>,
    refreshing: Mutex<Option<Instant>>,
}

/// The least time between two fetches of the key set caused by unknown `kid`s.
const MIN_REFETCH: Duration = Duration::from_secs(5);

impl JwksCache {
    async fn key(&self, kid: &str) -> AppResult<Option<(Algorithm, DecodingKey)>> {
        {
            let cached = self.cached.read().await;
            let fresh = cached.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
            if fresh && let Some(k) = cached.keys.get(kid) {
                return Ok(Some(k.clone()));
            }
        }
        // Unknown kid or stale set: fetch again, but not more often than MIN_REFETCH.
        let mut last = self.refreshing.lock().await;
        if last.is_none_or(|t| t.elapsed() >= MIN_REFETCH) {
            *last = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    *self.cached.write().await = CachedKeys {
                        keys,
                        fetched_at: Some(Instant::now()),
                    };
                }
                Err(e) => tracing::warn!(error = %e, "fetching the JWKS failed"),
            }
        }
        drop(last);
        Ok(self.cached.read().await.keys.get(kid).cloned())
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, (Algorithm, DecodingKey)>> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue, // keys for other algorithms are not trusted
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        tracing::info!(count = keys.len(), "JWKS key set loaded");
        Ok(keys)
    }
}

/// Verifies access tokens and resolves them to a [`Viewer`]; mints caregraph's own tokens.
#[derive(Clone)]
pub struct Authenticator {
    config: Arc<AuthConfig>,
    hs_decoding: DecodingKey,
    hs_encoding: EncodingKey,
    jwks: Option<Arc<JwksCache>>,
    db: db::Db,
    leeway: Duration,
}

impl Authenticator {
    /// Builds the authenticator from configuration.
    pub fn new(config: &AuthConfig, db: db::Db, http: reqwest::Client) -> Self {
        let secret = config.jwt_secret.expose_secret().as_bytes();
        Self {
            hs_decoding: DecodingKey::from_secret(secret),
            hs_encoding: EncodingKey::from_secret(secret),
            jwks: config.jwks_url.clone().map(|url| {
                Arc::new(JwksCache {
                    url,
                    http,
                    ttl: config.jwks_cache_ttl,
                    cached: RwLock::new(CachedKeys {
                        keys: HashMap::new(),
                        fetched_at: None,
                    }),
                    refreshing: Mutex::new(None),
                })
            }),
            config: Arc::new(config.clone()),
            db,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The same authenticator with another clock-skew allowance (`CAREGRAPH_JWT_LEEWAY_SECONDS`).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if self.config.issuer.is_some() {
            required.push("iss");
        }
        if self.config.audience.is_some() {
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        match &self.config.issuer {
            Some(iss) => v.set_issuer(&[iss]),
            None => v.iss = None,
        }
        match &self.config.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        v
    }

    /// Verifies a token's signature and claims.
    pub async fn verify(&self, token: &str) -> AppResult<Claims> {
        let header = decode_header(token).map_err(|_| rejected("unreadable header"))?;
        let (alg, key) = match header.alg {
            Algorithm::HS256 => (Algorithm::HS256, self.hs_decoding.clone()),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or_else(|| rejected("no JWKS configured"))?;
                let kid = header.kid.as_deref().ok_or_else(|| rejected("no kid"))?;
                let (alg, key) = jwks
                    .key(kid)
                    .await?
                    .ok_or_else(|| rejected("unknown kid"))?;
                if alg != header.alg {
                    return Err(rejected("algorithm does not match the key"));
                }
                (alg, key)
            }
            _ => return Err(rejected("algorithm not accepted")),
        };
        let claims = decode::<Claims>(token, &key, &self.validation(alg))
            .map(|data| data.claims)
            .map_err(|e| rejected(&e.to_string()))?;
        let latest = Utc::now()
            .timestamp()
            .saturating_add_unsigned(self.leeway.as_secs());
        if claims.iat.is_some_and(|iat| iat > latest) {
            return Err(rejected("issued in the future"));
        }
        Ok(claims)
    }

    /// Resolves an `Authorization` header value (or a bare token) to a signed-in viewer.
    pub async fn viewer_from_token(
        &self,
        raw: &str,
        client_ip: Option<std::net::IpAddr>,
    ) -> AppResult<Viewer> {
        let raw = raw.trim();
        let token = match raw.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return Err(rejected("not a bearer token")),
            None => raw,
        };
        if token.is_empty() {
            return Err(rejected("empty token"));
        }
        let claims = self.verify(token).await?;
        let user = db::users::find_by_subject(&self.db, &claims.sub)
            .await?
            .ok_or_else(|| rejected("unknown subject"))?;
        let expires = Utc
            .timestamp_opt(claims.exp, 0)
            .single()
            .ok_or_else(|| rejected("exp out of range"))?;
        Ok(Viewer::signed_in(user, expires, client_ip))
    }

    /// Mints an HS256 access token for a user, valid for `ttl`.
    pub fn mint(&self, user: &User, ttl: Duration) -> AppResult<(String, DateTime<Utc>)> {
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(ttl)
                .map_err(|e| AppError::internal(anyhow::anyhow!("bad ttl: {e}")))?;
        let claims = Claims {
            sub: user.id.to_string(),
            exp: expires.timestamp(),
            iat: Some(now.timestamp()),
            nbf: None,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone().map(Audience::One),
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.hs_encoding)
            .map_err(|e| AppError::internal(anyhow::anyhow!("signing failed: {e}")))?;
        Ok((token, expires))
    }

    /// The lifetime of tokens issued by `login`.
    pub fn access_token_ttl(&self) -> Duration {
        self.config.access_token_ttl
    }
}
