//! Outgoing mail: the [`Mailer`] port, its default adapter [`LocalOutbox`] (mails stay in the
//! `outbound_mails` table for the operator to read), the SMTP adapter ([`smtp::SmtpMailer`],
//! when `CAREGRAPH_SMTP_URL` is set), and [`MailQueue`]: the table as a queue with a worker.
//!
//! A mail is written in the transaction of the change it belongs to (an invitation and its mail
//! commit together), then a worker hands it to the mailer, retrying with the outbox's backoff
//! until it is sent or dead after `CAREGRAPH_OUTBOX_MAX_ATTEMPTS`; an SMTP outage delays mail,
//! never loses it. A claim is a lease, so a crashed process's mail is sent by another (at least
//! once). A body is kept only while it is needed: it is cleared once the mail left, and when
//! its invitation is accepted or revoked. Mail addresses, bodies and URLs are never logged.

pub mod smtp;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{backoff::Backoff, clock::SharedClock, db::entities::outbound_mail};

/// One mail: plain text to one address.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// The recipient's address.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &"<redacted>")
            .field("subject", &self.subject)
            .field("body", &"<redacted>")
            .finish()
    }
}

/// What a mailer did with a mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Handed to a mail server: the stored body is cleared.
    Sent,
    /// Kept in the local outbox for the operator: the stored body stays until the invitation
    /// is accepted or revoked.
    Kept,
}

/// Why a mail was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailError {
    /// Worth retrying (connection refused, timeout, a 4xx reply).
    Transient(String),
    /// Retrying cannot help (a 5xx reply, e.g. an unknown recipient or refused credentials).
    Permanent(String),
}

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(m) => write!(f, "transient: {m}"),
            Self::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

/// The port through which caregraph sends mail.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    /// The adapter's name, for logs.
    fn name(&self) -> &'static str;

    /// Sends one mail (tried once: the queue owns the retries).
    async fn send(&self, mail: &Mail) -> Result<Delivered, MailError>;
}

/// The default mailer: sends nothing; each mail stays readable in `outbound_mails` (status
/// `kept`) until its invitation is accepted or revoked. The invitation's URL is also returned
/// to the staff member who invited, so no mail service is needed.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOutbox;

#[async_trait::async_trait]
impl Mailer for LocalOutbox {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn send(&self, _mail: &Mail) -> Result<Delivered, MailError> {
        Ok(Delivered::Kept)
    }
}

/// Row states of `outbound_mails`.
pub mod status {
    /// Waiting for the mailer.
    pub const PENDING: &str = "pending";
    /// Handed to the mail server (body cleared).
    pub const SENT: &str = "sent";
    /// Kept in the local outbox for the operator.
    pub const KEPT: &str = "kept";
    /// Given up on (attempts used up, or refused for good).
    pub const DEAD: &str = "dead";
    /// No longer needed before it was sent (its invitation was accepted or revoked).
    pub const WITHDRAWN: &str = "withdrawn";
}

/// A mail to queue, on behalf of an organisation and an invitation.
#[derive(Clone, Debug)]
pub struct NewMail {
    /// The mail.
    pub mail: Mail,
    /// The organisation it is sent for.
    pub org_id: Option<String>,
    /// The invitation it carries.
    pub invitation_id: Option<String>,
}

/// A stored mail, as the operator and tests read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMail {
    /// The row's id.
    pub id: String,
    /// The invitation it carries.
    pub invitation_id: Option<String>,
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The body, while it is kept.
    pub body: Option<String>,
    /// `pending`, `sent`, `kept`, `dead` or `withdrawn`.
    pub status: String,
    /// Deliveries tried.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Queued.
    pub created_at: DateTime<Utc>,
}

fn stored(m: outbound_mail::Model) -> StoredMail {
    StoredMail {
        id: m.id,
        invitation_id: m.invitation_id,
        to: m.to_address,
        subject: m.subject,
        body: m.body,
        status: m.status,
        attempts: m.attempts,
        last_error: m.last_error,
        created_at: m.created_at,
    }
}

/// Settings of the mail worker.
#[derive(Clone, Copy, Debug)]
pub struct MailSettings {
    /// Attempts before a mail is dead.
    pub max_attempts: i32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// How often the worker looks when nobody wakes it.
    pub poll: Duration,
}

/// How long one send may take before it counts as failed.
const SEND_BUDGET: Duration = Duration::from_secs(60);
/// How long a claim holds: longer than a send may take, so two workers never send one mail at
/// once unless the first one died.
const LEASE: Duration = Duration::from_secs(120);
/// Mails claimed per round.
const BATCH: u64 = 16;

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
}

/// The `outbound_mails` queue and its worker.
#[derive(Clone)]
pub struct MailQueue {
    db: crate::db::Db,
    mailer: Arc<dyn Mailer>,
    clock: SharedClock,
    settings: MailSettings,
    wake: Arc<Notify>,
}

/// Writes a mail in the caller's transaction; the caller wakes the queue after commit.
pub async fn enqueue(
    db: &impl crate::db::Source,
    new: NewMail,
    now: DateTime<Utc>,
) -> Result<String, sea_orm::DbErr> {
    let id = uuid::Uuid::now_v7().to_string();
    let row = outbound_mail::ActiveModel {
        id: Set(id.clone()),
        org_id: Set(new.org_id),
        invitation_id: Set(new.invitation_id),
        to_address: Set(new.mail.to),
        subject: Set(new.mail.subject),
        body: Set(Some(new.mail.body)),
        status: Set(status::PENDING.into()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        locked_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        sent_at: Set(None),
    };
    outbound_mail::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(id)
}

/// Clears the body of every mail of an invitation, in the caller's transaction; one not yet
/// sent is withdrawn (its link no longer works, so it is not sent).
pub async fn withdraw_for_invitation(
    db: &impl crate::db::Source,
    invitation_id: &str,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    outbound_mail::Entity::update_many()
        .col_expr(
            outbound_mail::Column::Status,
            Expr::value(status::WITHDRAWN),
        )
        .col_expr(outbound_mail::Column::UpdatedAt, Expr::value(now))
        .filter(outbound_mail::Column::InvitationId.eq(invitation_id))
        .filter(outbound_mail::Column::Status.eq(status::PENDING))
        .exec(db)
        .await?;
    outbound_mail::Entity::update_many()
        .col_expr(
            outbound_mail::Column::Body,
            Expr::value(Option::<String>::None),
        )
        .col_expr(outbound_mail::Column::UpdatedAt, Expr::value(now))
        .filter(outbound_mail::Column::InvitationId.eq(invitation_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The most recent mails, newest first (at most `limit`): what the operator reads when no SMTP
/// server is configured (`caregraph mails`).
pub async fn recent(
    db: &impl crate::db::Source,
    limit: u64,
) -> Result<Vec<StoredMail>, sea_orm::DbErr> {
    Ok(outbound_mail::Entity::find()
        .order_by_desc(outbound_mail::Column::CreatedAt)
        .order_by_desc(outbound_mail::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(stored)
        .collect())
}

/// A mail that may be claimed at `now`: pending, due, and not leased.
fn claimable(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(outbound_mail::Column::Status.eq(status::PENDING))
        .add(outbound_mail::Column::NextAttemptAt.lte(now))
        .add(
            Condition::any()
                .add(outbound_mail::Column::LockedUntil.is_null())
                .add(outbound_mail::Column::LockedUntil.lt(now)),
        )
}

impl MailQueue {
    /// A queue that hands its mails to `mailer`.
    pub fn new(
        db: crate::db::Db,
        mailer: Arc<dyn Mailer>,
        clock: SharedClock,
        settings: MailSettings,
    ) -> Self {
        Self {
            db,
            mailer,
            clock,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The mailer's name.
    pub fn mailer_name(&self) -> &'static str {
        self.mailer.name()
    }

    /// Tells the worker that a mail was committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the worker until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(mailer = self.mailer.name(), "mail worker started");
        loop {
            match self.round().await {
                Ok(n) if n > 0 && !stop.is_cancelled() => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "mail round failed"),
            }
            let due = self.next_due().await.ok().flatten();
            if !crate::backoff::rest(&stop, &self.wake, due, self.clock.now(), self.settings.poll)
                .await
            {
                break;
            }
        }
        tracing::info!("mail worker stopped");
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
        Ok(outbound_mail::Entity::find()
            .filter(outbound_mail::Column::Status.eq(status::PENDING))
            .order_by_asc(outbound_mail::Column::NextAttemptAt)
            .one(&self.db)
            .await?
            .map(|m| {
                m.next_attempt_at
                    .max(m.locked_until.unwrap_or(m.next_attempt_at))
            }))
    }

    /// Claims up to a batch of due mails and tries each once; how many finished (sent, kept or
    /// dead).
    pub async fn round(&self) -> Result<usize, sea_orm::DbErr> {
        let now = self.clock.now();
        let due = outbound_mail::Entity::find()
            .filter(claimable(now))
            .order_by_asc(outbound_mail::Column::NextAttemptAt)
            .limit(BATCH)
            .all(&self.db)
            .await?;
        let mut finished = 0;
        for row in due {
            let lease = crate::domain::care::stored_precision(now + chrono(LEASE));
            let claimed = outbound_mail::Entity::update_many()
                .col_expr(outbound_mail::Column::LockedUntil, Expr::value(lease))
                .filter(outbound_mail::Column::Id.eq(row.id.as_str()))
                .filter(claimable(now))
                .exec(&self.db)
                .await?;
            if claimed.rows_affected == 1 {
                finished += usize::from(self.deliver(row, lease).await?);
            }
        }
        Ok(finished)
    }

    /// Tries one claimed mail; writes the outcome only while the lease is still this worker's.
    async fn deliver(
        &self,
        row: outbound_mail::Model,
        lease: DateTime<Utc>,
    ) -> Result<bool, sea_orm::DbErr> {
        let Some(body) = row.body.clone() else {
            // Nothing left to send (cleared meanwhile).
            return Ok(false);
        };
        let mail = Mail {
            to: row.to_address.clone(),
            subject: row.subject.clone(),
            body,
        };
        let result = tokio::time::timeout(SEND_BUDGET, self.mailer.send(&mail))
            .await
            .unwrap_or_else(|_| Err(MailError::Transient("the send took too long".into())));
        let now = self.clock.now();
        let attempts = row.attempts + 1;
        let mut update = outbound_mail::Entity::update_many()
            .col_expr(outbound_mail::Column::Attempts, Expr::value(attempts))
            .col_expr(
                outbound_mail::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(outbound_mail::Column::UpdatedAt, Expr::value(now))
            .filter(outbound_mail::Column::Id.eq(row.id.as_str()))
            .filter(outbound_mail::Column::LockedUntil.eq(lease));
        let finished = match result {
            Ok(Delivered::Sent) => {
                tracing::info!(mail = %row.id, mailer = self.mailer.name(), "mail sent");
                update = update
                    .col_expr(outbound_mail::Column::Status, Expr::value(status::SENT))
                    .col_expr(outbound_mail::Column::SentAt, Expr::value(now))
                    .col_expr(
                        outbound_mail::Column::Body,
                        Expr::value(Option::<String>::None),
                    );
                true
            }
            Ok(Delivered::Kept) => {
                tracing::info!(mail = %row.id, "mail kept in the local outbox (no SMTP configured)");
                update = update.col_expr(outbound_mail::Column::Status, Expr::value(status::KEPT));
                true
            }
            Err(e) => {
                let dead =
                    matches!(e, MailError::Permanent(_)) || attempts >= self.settings.max_attempts;
                let message: String = e.to_string().chars().take(1000).collect();
                update = update.col_expr(outbound_mail::Column::LastError, Expr::value(message));
                if dead {
                    tracing::error!(mail = %row.id, attempts, error = %e, "mail is dead");
                    update =
                        update.col_expr(outbound_mail::Column::Status, Expr::value(status::DEAD));
                } else {
                    let wait = self
                        .settings
                        .backoff
                        .wait(u32::try_from(attempts).unwrap_or(0), None);
                    tracing::warn!(mail = %row.id, attempts, ?wait, error = %e, "sending a mail failed; will retry");
                    update = update.col_expr(
                        outbound_mail::Column::NextAttemptAt,
                        Expr::value(now + chrono(wait)),
                    );
                }
                dead
            }
        };
        if update.exec(&self.db).await?.rows_affected == 0 {
            tracing::warn!(mail = %row.id, "mail lease was lost; another worker owns the row");
            return Ok(false);
        }
        Ok(finished)
    }

    /// The most recent mails, newest first (at most `limit`).
    pub async fn recent(&self, limit: u64) -> Result<Vec<StoredMail>, sea_orm::DbErr> {
        recent(&self.db, limit).await
    }

    /// The mails of one invitation, oldest first.
    pub async fn of_invitation(
        &self,
        invitation_id: &str,
    ) -> Result<Vec<StoredMail>, sea_orm::DbErr> {
        Ok(outbound_mail::Entity::find()
            .filter(outbound_mail::Column::InvitationId.eq(invitation_id))
            .order_by_asc(outbound_mail::Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(stored)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::Mail;

    #[test]
    fn a_mails_debug_output_leaves_out_the_address_and_the_body() {
        let mail = Mail {
            to: "planted@example.org".into(),
            subject: "Invitation to a clinic".into(),
            body: "https://care.example.org/accept-invitation#token=planted-token".into(),
        };
        let debug = format!("{mail:?}");
        assert!(!debug.contains("planted"), "{debug}");
        assert!(debug.contains("Invitation to a clinic"));
    }
}
