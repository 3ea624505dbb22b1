//! The SMS gateway behind one object-safe trait, [`SmsGateway`], with two adapters: `local`
//! (records each message in caregraph's database, the default: no account needed) and Twilio's
//! Messages REST API.

pub mod local;
pub mod twilio;

use std::sync::Arc;

use async_trait::async_trait;

pub use super::error::ProviderError;

/// One SMS to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundSms {
    /// The recipient's E.164 number.
    pub to: String,
    /// The text.
    pub body: String,
    /// caregraph's id of the recipient (an external member), kept by gateways that record.
    pub reference: String,
}

/// Sends SMS.
#[async_trait]
pub trait SmsGateway: Send + Sync + 'static {
    /// `local` or `twilio`.
    fn name(&self) -> &'static str;

    /// Sends one message; the gateway's id of it (Twilio's `SM…` sid). A failure is classified
    /// at the adapter's edge and never carries the number or the text.
    async fn send(&self, sms: &OutboundSms) -> Result<String, ProviderError>;
}

/// Builds the gateway `CAREGRAPH_SMS_PROVIDER` names.
pub fn build(
    config: &crate::config::Config,
    db: crate::db::Db,
    client: reqwest::Client,
    metrics: &Arc<crate::telemetry::metrics::Metrics>,
) -> Arc<dyn SmsGateway> {
    use super::http::{ProviderHttp, Resilience};
    use crate::config::SmsConfig;
    match &config.sms {
        SmsConfig::Local { from } => Arc::new(local::LocalSms::new(db, from.clone())),
        SmsConfig::Twilio(twilio) => {
            let resilience = Resilience {
                timeout: config.chat.timeout,
                attempts: config.chat.retries + 1,
                breaker_threshold: config.chat.breaker_threshold.max(1),
                breaker_cooldown: config.chat.breaker_cooldown,
                ..Resilience::default()
            };
            Arc::new(twilio::Twilio::new(
                twilio,
                ProviderHttp::new("twilio", client, resilience).with_metrics(metrics.clone()),
            ))
        }
    }
}
