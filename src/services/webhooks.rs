//! Provider webhooks after verification: each delivery is recorded once (a retry is recognised
//! and changes nothing), answered at once, and processed in the background; a delivery whose
//! processing a crash interrupted is processed by the sweep, on start and every minute. A
//! delivery is claimed before it is applied, so two replicas never apply it both.

use std::time::Duration;

use serde_json::Value;

use super::chat::{ChatService, InboundSms};
use crate::{
    clock::SharedClock,
    db,
    error::AppResult,
    providers::webhooks::{ProviderEvent, parse_sendbird, parse_stream},
};

/// Which provider sent a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Stream Chat.
    Stream,
    /// Sendbird.
    Sendbird,
    /// Twilio (inbound SMS of external chat members; the body is the signed form).
    Twilio,
}

impl Source {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Sendbird => "sendbird",
            Self::Twilio => "twilio",
        }
    }

    fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "stream" => Some(Self::Stream),
            "sendbird" => Some(Self::Sendbird),
            "twilio" => Some(Self::Twilio),
            _ => None,
        }
    }

    fn parse(self, body: &Value) -> Vec<ProviderEvent> {
        match self {
            Self::Stream => parse_stream(body),
            Self::Sendbird => parse_sendbird(body),
            Self::Twilio => Vec::new(),
        }
    }
}

/// Webhook deliveries.
#[derive(Clone)]
pub struct WebhookService {
    db: db::Db,
    chat: ChatService,
    clock: SharedClock,
}

impl WebhookService {
    /// Builds the service.
    pub fn new(db: db::Db, chat: ChatService, clock: SharedClock) -> Self {
        Self { db, chat, clock }
    }

    /// Whether a delivery says it happened longer than `max_age` ago (a replay of a captured
    /// delivery, or one too late to apply); bodies without a time are not judged.
    pub fn is_stale(&self, event: &Value, max_age: Duration) -> bool {
        let Some(at) = crate::providers::webhooks::event_time(event) else {
            return false;
        };
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        self.clock.now() - at > max_age
    }

    /// Records a verified delivery; `false` for one already received (a retry).
    pub async fn record(&self, source: Source, delivery_id: &str, body: &str) -> AppResult<bool> {
        db::webhooks::record(
            &self.db,
            source.as_str(),
            delivery_id,
            body,
            self.clock.now(),
        )
        .await
    }

    /// Applies a recorded delivery and marks it processed, if no other processor holds it (a
    /// claim lasts a minute; one whose processor crashed is taken over after that).
    /// Returns whether this call applied it.
    pub async fn process(&self, source: Source, delivery_id: &str, body: &str) -> AppResult<bool> {
        let now = self.clock.now();
        let claimed = db::webhooks::claim(
            &self.db,
            source.as_str(),
            delivery_id,
            now,
            now + chrono::Duration::seconds(60),
        )
        .await?;
        if !claimed {
            return Ok(false);
        }
        if source == Source::Twilio {
            let form: Vec<(String, String)> = serde_urlencoded::from_str(body).unwrap_or_default();
            self.chat.sms_inbound(&InboundSms::from_form(&form)).await?;
            db::webhooks::processed(&self.db, source.as_str(), delivery_id, self.clock.now())
                .await?;
            return Ok(true);
        }
        let events = match serde_json::from_str::<Value>(body) {
            Ok(json) => source.parse(&json),
            Err(e) => {
                tracing::warn!(provider = source.as_str(), delivery_id, error = %e, "a stored webhook body is not JSON");
                Vec::new()
            }
        };
        for event in events {
            self.chat.provider_event(event).await?;
        }
        db::webhooks::processed(&self.db, source.as_str(), delivery_id, self.clock.now()).await?;
        Ok(true)
    }

    /// Processes deliveries older than `age` that are still unprocessed; returns how many.
    pub async fn sweep(&self, age: Duration) -> AppResult<usize> {
        let before = self.clock.now() - chrono::Duration::from_std(age).unwrap_or_default();
        let pending = db::webhooks::unprocessed(&self.db, before, 500).await?;
        let mut done = 0;
        for (provider, id, body) in pending {
            let Some(source) = Source::from_db(&provider) else {
                continue;
            };
            match self.process(source, &id, &body).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(e) => e.log_cause(),
            }
        }
        if done > 0 {
            tracing::info!(
                deliveries = done,
                "webhook deliveries processed by the sweep"
            );
        }
        Ok(done)
    }

    /// Sweeps on start and every minute until `stop`, and forgets processed deliveries after a
    /// week.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            if let Err(e) = self.sweep(Duration::from_secs(30)).await {
                e.log_cause();
            }
            let week_ago = self.clock.now() - chrono::Duration::days(7);
            if let Err(e) = db::webhooks::prune(&self.db, week_ago).await {
                e.log_cause();
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}
