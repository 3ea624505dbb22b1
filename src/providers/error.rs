//! [`ProviderError`]: every failure at a provider, classified at the adapter edge so that the
//! outbox and the services decide on the class, never on a provider's own codes.

use std::time::Duration;

use crate::error::AppError;

/// How a provider call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// Too many requests; `retry_after` when the provider said.
    RateLimited {
        /// When a retry may succeed.
        retry_after: Option<Duration>,
    },
    /// Unreachable, timing out, 5xx, or the circuit breaker is open: try again later.
    Unavailable(String),
    /// The thing does not exist at the provider.
    NotFound,
    /// The provider refused the request (4xx other than 404/429): retrying will not help.
    Rejected {
        /// HTTP status.
        status: u16,
        /// What the provider said (never user content).
        message: String,
    },
}

impl ProviderError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }

    /// The wait the provider asked for before a retry, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The class name, for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::NotFound => "not_found",
            Self::Rejected { .. } => "rejected",
        }
    }

    /// The error a client sees when a provider call fails during a request.
    pub fn into_app(self, provider: &'static str) -> AppError {
        match self {
            Self::NotFound => AppError::NotFound("chat channel"),
            other => AppError::ProviderUnavailable {
                provider,
                cause: format!("{other:?}"),
            },
        }
    }
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RateLimited { retry_after } => {
                write!(f, "rate limited (retry after {retry_after:?})")
            }
            Self::Unavailable(why) => write!(f, "unavailable: {why}"),
            Self::NotFound => f.write_str("not found"),
            Self::Rejected { status, message } => write!(f, "rejected with {status}: {message}"),
        }
    }
}

impl std::error::Error for ProviderError {}
