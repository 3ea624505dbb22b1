//! Hardening limits: query cost, connections, token clock leeway, webhook age, login lockout
//! and the operational endpoints. Each variable is listed in the README's "Security" section.

use std::time::Duration;

use anyhow::bail;

use super::Vars;

/// Limits that keep one client from stalling the server or another user.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// `CAREGRAPH_MAX_SELECTIONS` (default 5000): selections a document may expand to, fragments
    /// counted once each.
    pub max_selections: usize,
    /// `CAREGRAPH_MAX_DIRECTIVES` (default 500): directives a document may expand to.
    pub max_directives: usize,
    /// `CAREGRAPH_MAX_TEXT_BYTES` (default 65536): the longest text argument or variable.
    pub max_text_bytes: usize,
    /// `CAREGRAPH_HEADER_READ_TIMEOUT_SECONDS` (default 10): time for a request's headers.
    pub header_read_timeout: Duration,
    /// `CAREGRAPH_HTTP_IDLE_TIMEOUT_SECONDS` (default 60): an idle keep-alive connection closes.
    pub http_idle_timeout: Duration,
    /// `CAREGRAPH_REQUEST_TIMEOUT_SECONDS` (default 45): a request's whole time.
    pub request_timeout: Duration,
    /// `CAREGRAPH_MAX_CONNECTIONS` (default 512): concurrent connections.
    pub max_connections: usize,
    /// `CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS` (default 128): concurrent connections of one address
    /// (a reverse proxy, or a load test of 64 connections plus its probes, is one address).
    pub max_connections_per_address: usize,
    /// `CAREGRAPH_JWT_LEEWAY_SECONDS` (default 30): clock skew allowed on `exp`, `nbf` and `iat`.
    pub jwt_leeway: Duration,
    /// `CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS` (default 3600): older deliveries are refused.
    pub webhook_max_age: Duration,
    /// `CAREGRAPH_LOGIN_PER_PAIR_PER_MINUTE` (default 5): attempts per email from one address.
    pub login_per_pair_per_minute: u32,
    /// `CAREGRAPH_METRICS` (default on): `false` removes `/metrics`.
    pub metrics: bool,
    /// `CAREGRAPH_GRAPHIQL` (default on): `false` removes `/graphiql`.
    pub graphiql: bool,
}

impl SecurityConfig {
    /// Reads the section.
    pub(super) fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let config = Self {
            max_selections: vars.parse("CAREGRAPH_MAX_SELECTIONS", 5_000)?,
            max_directives: vars.parse("CAREGRAPH_MAX_DIRECTIVES", 500)?,
            max_text_bytes: vars.parse("CAREGRAPH_MAX_TEXT_BYTES", 65_536)?,
            header_read_timeout: vars.seconds("CAREGRAPH_HEADER_READ_TIMEOUT_SECONDS", 10)?,
            http_idle_timeout: vars.seconds("CAREGRAPH_HTTP_IDLE_TIMEOUT_SECONDS", 60)?,
            request_timeout: vars.seconds("CAREGRAPH_REQUEST_TIMEOUT_SECONDS", 45)?,
            max_connections: vars.parse("CAREGRAPH_MAX_CONNECTIONS", 512)?,
            max_connections_per_address: vars
                .parse("CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS", 128)?,
            jwt_leeway: vars.seconds("CAREGRAPH_JWT_LEEWAY_SECONDS", 30)?,
            webhook_max_age: vars.seconds("CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS", 3600)?,
            login_per_pair_per_minute: vars.parse("CAREGRAPH_LOGIN_PER_PAIR_PER_MINUTE", 5)?,
            metrics: vars.flag("CAREGRAPH_METRICS")?.unwrap_or(true),
            graphiql: vars.flag("CAREGRAPH_GRAPHIQL")?.unwrap_or(true),
        };
        if config.max_selections == 0 || config.max_directives == 0 || config.max_text_bytes == 0 {
            bail!("CAREGRAPH_MAX_SELECTIONS, _DIRECTIVES, _TEXT_BYTES: must be at least 1");
        }
        if config.max_connections == 0 || config.max_connections_per_address == 0 {
            bail!("CAREGRAPH_MAX_CONNECTIONS(_PER_ADDRESS): must be at least 1");
        }
        if config.header_read_timeout.is_zero()
            || config.http_idle_timeout.is_zero()
            || config.request_timeout.is_zero()
        {
            bail!("CAREGRAPH_*_TIMEOUT_SECONDS: must be at least 1");
        }
        if config.login_per_pair_per_minute == 0 {
            bail!("CAREGRAPH_LOGIN_PER_PAIR_PER_MINUTE: must be at least 1");
        }
        Ok(config)
    }
}

/// The longest single backoff of the provider client between two attempts
/// (`providers::http::Resilience::max_backoff`).
const PROVIDER_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Refuses a request timeout that a provider call's retries could outlast: every attempt's
/// timeout plus the longest backoff between attempts must fit inside it, so a request that waits
/// on a provider ends with the provider's answer, not the request timeout.
pub(super) fn check_retry_budget(
    security: &SecurityConfig,
    provider_timeout: Duration,
    retries: u32,
) -> anyhow::Result<()> {
    let budget = provider_timeout
        .saturating_mul(retries.saturating_add(1))
        .saturating_add(PROVIDER_MAX_BACKOFF.saturating_mul(retries));
    if security.request_timeout <= budget {
        bail!(
            "CAREGRAPH_REQUEST_TIMEOUT_SECONDS ({}s) must be longer than the provider retry budget of {}s (CAREGRAPH_PROVIDER_TIMEOUT_SECONDS x (CAREGRAPH_PROVIDER_RETRIES + 1) + 5 s per retry)",
            security.request_timeout.as_secs(),
            budget.as_secs()
        );
    }
    Ok(())
}

/// Whether a secret is too predictable for production: fewer than 10 distinct characters, or
/// under 100 bits by its character frequencies (Shannon entropy per character times length).
/// A repeated letter, `abababab…` or a short dictionary phrase fail; 32 random hex digits
/// (about 115 bits by this estimate) pass.
pub fn low_entropy(secret: &str) -> bool {
    let mut counts = std::collections::HashMap::new();
    let mut len = 0usize;
    for c in secret.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        len += 1;
    }
    if counts.len() < 10 {
        return true;
    }
    let n = len as f64;
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    per_char * n < 100.0
}

#[cfg(test)]
mod tests {
    use super::low_entropy;

    #[test]
    fn repeated_and_few_character_secrets_are_low_entropy() {
        assert!(low_entropy(&"a".repeat(64)));
        assert!(low_entropy(&"ab".repeat(32)));
        assert!(low_entropy("0123456789"));
        assert!(!low_entropy("9f86d081884c7d659a2feaa0c55ad015"));
        assert!(!low_entropy(
            "3c9b1e0f6a7d4258b0e1f2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
        ));
    }
}
