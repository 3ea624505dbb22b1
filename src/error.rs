//! [`AppError`]: the one error type services return, with a stable [`ErrorCode`].
//!
//! It is turned into a client-visible error in exactly two places: GraphQL `extensions.code`
//! (`graphql/errors.rs`) and HTTP responses (`http.rs`). Internal causes are logged there once
//! and never sent to the client.

use chrono::{DateTime, Utc};

/// The stable error codes, sent as `extensions.code` (clients match on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No valid credentials.
    Unauthenticated,
    /// Signed in, but not allowed to do this.
    Forbidden,
    /// Does not exist, or the caller may not learn that it exists.
    NotFound,
    /// The request itself is wrong; `extensions.field` names the argument at fault.
    BadUserInput,
    /// The change conflicts with the current state.
    Conflict,
    /// Another organisation's staff would be included without an active consent.
    ConsentRequired,
    /// The chat session is not open for this operation.
    ChatNotOpen,
    /// The meeting window is not open.
    MeetingNotOpen,
    /// Too many attempts; `extensions.retryAfterSeconds` says when to try again.
    RateLimited,
    /// A provider is unreachable or failing; try again later.
    ProviderUnavailable,
    /// Something went wrong inside caregraph; the cause is in the logs.
    Internal,
    /// A `documentId` or persisted-query hash that the server does not know.
    PersistedQueryNotFound,
    /// Only trusted documents run (`CAREGRAPH_TRUSTED_DOCUMENTS_ONLY`): the raw document sent is
    /// not one of them.
    TrustedDocumentRequired,
    /// The invitation was not accepted in time; staff can send a new one.
    InvitationExpired,
    /// The invitation was accepted already (sign in instead) or revoked.
    InvitationUsed,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::ConsentRequired => "CONSENT_REQUIRED",
            Self::ChatNotOpen => "CHAT_NOT_OPEN",
            Self::MeetingNotOpen => "MEETING_NOT_OPEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Self::Internal => "INTERNAL",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::TrustedDocumentRequired => "TRUSTED_DOCUMENT_REQUIRED",
            Self::InvitationExpired => "INVITATION_EXPIRED",
            Self::InvitationUsed => "INVITATION_USED",
        }
    }
}

/// The error every service returns.
///
/// It deliberately implements neither `Display` nor `std::error::Error`: async-graphql converts
/// any `Display` type into an error without a code, so a bare `?` in a resolver would lose the
/// code. Without `Display`, the compiler forces every conversion through `graphql/errors.rs`.
#[derive(Debug)]
pub enum AppError {
    /// The client sees `UNAUTHENTICATED` and this message.
    Unauthenticated(String),
    /// The client sees `FORBIDDEN` and this message.
    Forbidden(String),
    /// The client sees `NOT_FOUND` and "<what> not found".
    NotFound(&'static str),
    /// The client sees `BAD_USER_INPUT`, this message, and `extensions.field` when set.
    BadUserInput {
        /// What is wrong, in words a developer can act on.
        message: String,
        /// The argument or input field at fault.
        field: Option<String>,
    },
    /// The client sees `CONFLICT` and this message.
    Conflict(String),
    /// The client sees `CONFLICT`, this message and `extensions.field`.
    ConflictOn {
        /// What already exists, in words a developer can act on.
        message: String,
        /// The argument or input field that collides.
        field: String,
    },
    /// The client sees `CONSENT_REQUIRED` and this message.
    ConsentRequired(String),
    /// The client sees `CHAT_NOT_OPEN` and this message.
    ChatNotOpen(String),
    /// The client sees `MEETING_NOT_OPEN`, this message and `extensions.opensAt`.
    MeetingNotOpen {
        /// What the caller should know.
        message: String,
        /// When the meeting opens, if it has not yet.
        opens_at: Option<DateTime<Utc>>,
    },
    /// The client sees `RATE_LIMITED` and `extensions.retryAfterSeconds`.
    RateLimited {
        /// Whole seconds until a retry may succeed (at least 1).
        retry_after_seconds: u64,
    },
    /// The client sees `INVITATION_EXPIRED` and this message.
    InvitationExpired(String),
    /// The client sees `INVITATION_USED` and this message (accepted already, or revoked).
    InvitationUsed(String),
    /// The client sees `PROVIDER_UNAVAILABLE`; the cause is logged.
    ProviderUnavailable {
        /// Which provider.
        provider: &'static str,
        /// The cause, for the logs only.
        cause: String,
    },
    /// The client sees `INTERNAL` and "internal error"; the cause is logged once.
    Internal(anyhow::Error),
}

impl AppError {
    /// A `BAD_USER_INPUT` error naming the field at fault.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// An `INTERNAL` error from any cause.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The message the client sees.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m)
            | Self::Forbidden(m)
            | Self::Conflict(m)
            | Self::ConsentRequired(m)
            | Self::ChatNotOpen(m)
            | Self::InvitationExpired(m)
            | Self::InvitationUsed(m) => m.clone(),
            Self::NotFound(what) => format!("{what} not found"),
            Self::BadUserInput { message, .. }
            | Self::ConflictOn { message, .. }
            | Self::MeetingNotOpen { message, .. } => message.clone(),
            Self::RateLimited {
                retry_after_seconds,
            } => format!("too many attempts; retry in {retry_after_seconds} s"),
            Self::ProviderUnavailable { provider, .. } => {
                format!("the {provider} service is unavailable; try again later")
            }
            Self::Internal(_) => "internal error".into(),
        }
    }

    /// The code the client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::BadUserInput { .. } => ErrorCode::BadUserInput,
            Self::Conflict(_) | Self::ConflictOn { .. } => ErrorCode::Conflict,
            Self::ConsentRequired(_) => ErrorCode::ConsentRequired,
            Self::ChatNotOpen(_) => ErrorCode::ChatNotOpen,
            Self::MeetingNotOpen { .. } => ErrorCode::MeetingNotOpen,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::InvitationExpired(_) => ErrorCode::InvitationExpired,
            Self::InvitationUsed(_) => ErrorCode::InvitationUsed,
            Self::ProviderUnavailable { .. } => ErrorCode::ProviderUnavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Logs the hidden cause of an internal or provider error; called once where the error
    /// leaves caregraph.
    pub fn log_cause(&self) {
        match self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            Self::ProviderUnavailable { provider, cause } => {
                tracing::warn!(provider, cause = %cause, "provider unavailable");
            }
            _ => {}
        }
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        // A unique constraint that a concurrent request won is a conflict, not a crash.
        if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
            return Self::Conflict("this already exists".into());
        }
        Self::Internal(e.into())
    }
}

/// The result type of services.
pub type AppResult<T> = Result<T, AppError>;

/// For command-line tools: an `AppError` as an `anyhow::Error` ("CODE: message", or the internal
/// cause itself).
impl From<AppError> for anyhow::Error {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Internal(cause) => cause,
            other => anyhow::anyhow!("{}: {}", other.code().as_str(), other.message()),
        }
    }
}
