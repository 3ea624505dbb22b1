//! One resilient HTTP client for every provider adapter: a per-call timeout, retries with
//! exponential backoff and jitter on 429, 5xx and timeouts (honouring `Retry-After`,
//! `X-RateLimit-Reset` and `X-RateLimit-RetryAfter`), no retry on other 4xx, a circuit breaker
//! so that an outage fails fast, and a tracing span per call with provider, operation and
//! status. Adapters classify failures here, at their edge.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::Rng;
use reqwest::{RequestBuilder, Response, StatusCode, header::HeaderMap};
use tracing::Instrument;

use super::error::ProviderError;

/// Retry and breaker settings.
#[derive(Clone, Debug)]
pub struct Resilience {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubles per attempt, with full jitter.
    pub base_backoff: Duration,
    /// Longest single wait (also caps a provider's `Retry-After`).
    pub max_backoff: Duration,
    /// Consecutive failed calls that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before letting one through.
    pub breaker_cooldown: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open probe is under way: other calls still fail fast until it answers.
    probing: bool,
}

/// The half-open probe's slot: dropping it before the probe answered (a client disconnect, a
/// request timeout, an outbox lease running out) lets the next call probe, so the breaker
/// cannot stay open until restart.
struct ProbeSlot(Option<Arc<Mutex<Breaker>>>);

impl Drop for ProbeSlot {
    fn drop(&mut self) {
        if let Some(breaker) = self.0.take() {
            breaker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .probing = false;
        }
    }
}

impl ProbeSlot {
    /// The probe answered ([`ProviderHttp::record`] has released the slot).
    fn answered(mut self) {
        self.0 = None;
    }
}

/// A provider's HTTP client.
#[derive(Clone, Debug)]
pub struct ProviderHttp {
    provider: &'static str,
    client: reqwest::Client,
    settings: Resilience,
    breaker: Arc<Mutex<Breaker>>,
}

/// The wait a provider asked for: `Retry-After` (seconds), `X-RateLimit-RetryAfter`
/// (milliseconds when large, else seconds) or `X-RateLimit-Reset` (Unix seconds).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = get("retry-after") {
        if let Ok(secs) = value.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs));
        }
        // The HTTP-date form, e.g. `Wed, 21 Oct 2026 07:28:00 GMT`.
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(value) {
            let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
            return Some(wait.to_std().unwrap_or_default());
        }
    }
    if let Some(v) = get("x-ratelimit-retryafter").and_then(|v| v.parse::<u64>().ok()) {
        return Some(if v > 1000 {
            Duration::from_millis(v)
        } else {
            Duration::from_secs(v)
        });
    }
    if let Some(reset) = get("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()) {
        let now = chrono::Utc::now().timestamp();
        return Some(Duration::from_secs(u64::try_from(reset - now).unwrap_or(0)));
    }
    None
}

/// Classifies a non-success response (its body is read for the message only).
pub async fn classify(response: Response) -> ProviderError {
    let status = response.status();
    let wait = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .or_else(|| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.chars().take(200).collect());
    match status {
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited { retry_after: wait },
        StatusCode::NOT_FOUND => ProviderError::NotFound,
        StatusCode::REQUEST_TIMEOUT => ProviderError::Unavailable(format!("{status}: {message}")),
        s if s.is_server_error() => ProviderError::Unavailable(format!("{status}: {message}")),
        s => ProviderError::Rejected {
            status: s.as_u16(),
            message,
        },
    }
}

impl ProviderHttp {
    /// A client for `provider` sharing the process's connection pool.
    pub fn new(provider: &'static str, client: reqwest::Client, settings: Resilience) -> Self {
        Self {
            provider,
            client,
            settings,
            breaker: Arc::default(),
        }
    }

    /// The underlying client, to build requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Admits a call, or `None` while the breaker is open; the half-open probe's slot is held
    /// by the returned guard until the call answers or its future is dropped.
    fn admit(&self) -> Option<ProbeSlot> {
        let mut b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match b.open_until {
            Some(until) if Instant::now() < until => None,
            Some(_) if b.probing => None,
            Some(_) => {
                // Half-open: this one call probes; its failure re-opens the breaker at once.
                b.probing = true;
                b.failures = self.settings.breaker_threshold.saturating_sub(1);
                Some(ProbeSlot(Some(self.breaker.clone())))
            }
            None => Some(ProbeSlot(None)),
        }
    }

    fn record(&self, transient_failure: bool) {
        let mut b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.probing = false;
        if transient_failure {
            b.failures += 1;
            if b.failures >= self.settings.breaker_threshold {
                b.open_until = Some(Instant::now() + self.settings.breaker_cooldown);
                tracing::warn!(provider = self.provider, "circuit breaker opened");
            }
        } else {
            b.failures = 0;
            b.open_until = None;
        }
    }

    fn backoff(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        if let Some(wait) = asked {
            return wait.min(self.settings.max_backoff);
        }
        let exp = self
            .settings
            .base_backoff
            .saturating_mul(1 << attempt.min(16));
        let cap = exp.min(self.settings.max_backoff);
        let jitter = rand::rng().random_range(0..=cap.as_millis().max(1) as u64);
        Duration::from_millis(jitter)
    }

    /// Sends the request `build` makes, retrying transient failures; a 2xx response is returned
    /// for the adapter to read.
    pub async fn send(
        &self,
        operation: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ProviderError> {
        let span = tracing::info_span!(
            "provider_call",
            provider = self.provider,
            operation,
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        async {
            let Some(probe) = self.admit() else {
                tracing::Span::current().record("status", "breaker_open");
                crate::telemetry::metrics::provider_call(self.provider, operation, "breaker_open");
                return Err(ProviderError::Unavailable("circuit breaker open".into()));
            };
            let mut attempt = 0;
            loop {
                attempt += 1;
                let result = match build(&self.client)
                    .timeout(self.settings.timeout)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => Ok(r),
                    Ok(r) => Err(classify(r).await),
                    Err(e) if e.is_timeout() => Err(ProviderError::Unavailable("timed out".into())),
                    Err(e) => Err(ProviderError::Unavailable(format!(
                        "request failed: {}",
                        e.without_url()
                    ))),
                };
                let span = tracing::Span::current();
                span.record("attempts", attempt);
                match result {
                    Ok(response) => {
                        span.record("status", response.status().as_u16());
                        crate::telemetry::metrics::provider_call(self.provider, operation, "ok");
                        self.record(false);
                        probe.answered();
                        return Ok(response);
                    }
                    Err(e) if e.is_transient() && attempt < self.settings.attempts => {
                        let wait = self.backoff(
                            attempt - 1,
                            match &e {
                                ProviderError::RateLimited { retry_after } => *retry_after,
                                _ => None,
                            },
                        );
                        tracing::debug!(error = %e, ?wait, "retrying provider call");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        span.record("status", e.class());
                        crate::telemetry::metrics::provider_call(
                            self.provider,
                            operation,
                            e.class(),
                        );
                        self.record(e.is_transient());
                        probe.answered();
                        if e.is_transient() {
                            tracing::warn!(error = %e, "provider call failed");
                        }
                        return Err(e);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn retry_after_reads_seconds_fractions_and_http_dates() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7".into())])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5".into())])),
            Some(Duration::from_millis(1500))
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .to_rfc2822()
            .replace("+0000", "GMT");
        let wait = retry_after(&headers(&[("retry-after", later)])).expect("a wait");
        assert!((25..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-retryafter", "2500".into())])),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    /// A client whose breaker has just opened and is half-open at once (no cooldown).
    fn half_open() -> ProviderHttp {
        let http = ProviderHttp::new(
            "test",
            reqwest::Client::new(),
            Resilience {
                timeout: Duration::from_secs(30),
                attempts: 1,
                breaker_threshold: 1,
                breaker_cooldown: Duration::from_millis(0),
                ..Resilience::default()
            },
        );
        http.record(true);
        http
    }

    #[test]
    fn a_half_open_breaker_lets_one_probe_through() {
        let http = half_open();
        let probe = http.admit();
        assert!(
            probe.is_some(),
            "the first caller after the cooldown probes"
        );
        assert!(
            http.admit().is_none(),
            "others fail fast while the probe is out"
        );
        http.record(false);
        if let Some(probe) = probe {
            probe.answered();
        }
        assert!(http.admit().is_some(), "a good probe closes the breaker");
    }

    #[test]
    fn a_dropped_probe_does_not_leave_the_breaker_open() {
        let http = half_open();
        let probe = http.admit().expect("the first caller probes");
        assert!(http.admit().is_none(), "the probe is out");
        drop(probe); // the probing call's future is dropped before it answers
        assert!(
            http.admit().is_some(),
            "the next call probes instead of failing fast forever"
        );
    }

    #[tokio::test]
    async fn a_probe_whose_call_is_dropped_mid_flight_releases_the_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A provider that accepts and never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let http = half_open();
        let call = http.send("probe", |c| c.get(format!("http://{addr}/")));
        let outcome = tokio::time::timeout(Duration::from_millis(300), call).await;
        assert!(outcome.is_err(), "the probe was still waiting when dropped");
        assert!(http.admit().is_some(), "the breaker lets the next probe in");
    }
}
