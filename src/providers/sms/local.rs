//! The local SMS gateway: each message is recorded in caregraph's database (shown through the
//! API for demos and tests) and nothing is sent.

use async_trait::async_trait;

use super::{OutboundSms, ProviderError, SmsGateway};
use crate::{db::sms::record_local, domain::sms::RecordedSms as Record};

/// Records messages instead of sending them.
#[derive(Clone)]
pub struct LocalSms {
    db: crate::db::Db,
    from: String,
}

impl LocalSms {
    /// Records into `db`, as sent from `from`.
    pub fn new(db: crate::db::Db, from: String) -> Self {
        Self { db, from }
    }
}

#[async_trait]
impl SmsGateway for LocalSms {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError> {
        let id = format!("LOCAL{}", uuid::Uuid::now_v7().simple());
        record_local(
            &self.db,
            &Record {
                id: id.clone(),
                reference: sms.reference.clone(),
                to: sms.to.clone(),
                from: self.from.clone(),
                body: sms.body.clone(),
                created_at: crate::domain::care::stored_precision(chrono::Utc::now()),
            },
        )
        .await
        .map_err(|_| ProviderError::Unavailable("the local SMS store failed".into()))?;
        Ok(id)
    }
}
