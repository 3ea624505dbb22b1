//! One resilient HTTP client for every provider adapter: a per-call timeout, retries by the
//! shared [`Backoff`] policy on 429, 5xx and timeouts (honouring `Retry-After`,
//! `X-RateLimit-Reset` and `X-RateLimit-RetryAfter`), no retry on other 4xx, a circuit breaker
//! so that an outage fails fast, and a tracing span per call with provider, operation and
//! status. Adapters classify failures here, at their edge.
//!
//! A caller with its own retry schedule (the outbox) runs its calls inside [`single_attempt`]:
//! each call is then tried once and its failure, with the provider's asked wait, returned at
//! once, so retries never nest.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{RequestBuilder, Response, StatusCode, header::HeaderMap};
use tracing::Instrument;

use super::error::ProviderError;
use crate::{
    backoff::Backoff,
    telemetry::metrics::{BreakerState, Metrics},
};

/// Retry and breaker settings.
#[derive(Clone, Debug)]
pub struct Resilience {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// Consecutive failed calls that open the breaker.
    pub breaker_threshold: u32,
    /// The longest an open breaker refuses calls before letting one through: the first
    /// cooldown of an outage is [`FIRST_COOLDOWN`] (or this, when shorter), doubling after each
    /// failed probe up to this.
    pub breaker_cooldown: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(15),
        }
    }
}

tokio::task_local! {
    /// Present while the caller owns the retry schedule (see [`single_attempt`]).
    static SINGLE_ATTEMPT: ();
}

/// Runs `work` with each provider call in it tried once, whatever its [`Resilience`] says: for
/// a caller that retries by itself (the outbox), so that retries never nest. The circuit breaker
/// still counts every call.
pub async fn single_attempt<F: Future>(work: F) -> F::Output {
    SINGLE_ATTEMPT.scope((), work).await
}

/// The first cooldown of an outage: a provider back after a blip is tried again at once.
pub const FIRST_COOLDOWN: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// The cooldown now in force (grows while the provider stays down).
    cooldown: Duration,
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
    /// Whether this call is the half-open probe.
    fn is_probe(&self) -> bool {
        self.0.is_some()
    }

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
    metrics: Option<Arc<Metrics>>,
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
            metrics: None,
        }
    }

    /// The client, counting its calls and showing its breaker's state in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.breaker(self.provider, BreakerState::Closed);
        self.metrics = Some(metrics);
        self
    }

    /// Shows the breaker's new state.
    fn show(&self, state: BreakerState) {
        if let Some(m) = &self.metrics {
            m.breaker(self.provider, state);
        }
    }

    /// Counts a finished call.
    fn count(&self, operation: &'static str, outcome: &'static str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.provider_call(self.provider, operation, outcome, started.elapsed());
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
                self.show(BreakerState::HalfOpen);
                Some(ProbeSlot(Some(self.breaker.clone())))
            }
            None => Some(ProbeSlot(None)),
        }
    }

    /// Counts a call's outcome; `probe` says whether it was the half-open probe. Each change of
    /// state is logged once: a call admitted before the breaker opened and failing after (a
    /// burst in flight at the start of an outage) neither logs again nor extends the cooldown.
    fn record(&self, transient_failure: bool, probe: bool) {
        let mut b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if probe {
            b.probing = false;
        }
        if transient_failure {
            if b.open_until.is_some() && !probe {
                return;
            }
            b.failures += 1;
            if b.failures >= self.settings.breaker_threshold {
                let longest = self.settings.breaker_cooldown;
                let cooldown = if probe {
                    (b.cooldown * 2).clamp(FIRST_COOLDOWN.min(longest), longest)
                } else {
                    FIRST_COOLDOWN.min(longest)
                };
                b.cooldown = cooldown;
                b.open_until = Some(Instant::now() + cooldown);
                self.show(BreakerState::Open);
                if probe {
                    tracing::warn!(
                        provider = self.provider,
                        ?cooldown,
                        "circuit breaker stays open: the probe failed"
                    );
                } else {
                    tracing::warn!(
                        provider = self.provider,
                        ?cooldown,
                        "circuit breaker opened"
                    );
                }
            }
        } else {
            b.failures = 0;
            if b.open_until.take().is_some() {
                self.show(BreakerState::Closed);
                tracing::info!(provider = self.provider, "circuit breaker closed");
            }
        }
    }

    /// Sends the request `build` makes, retrying transient failures; a 2xx response is returned
    /// for the adapter to read.
    pub async fn send(
        &self,
        operation: &'static str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, ProviderError> {
        // Exported as a trace span when tracing is on; no log line formats it.
        let span = tracing::debug_span!(
            target: crate::telemetry::otel::TARGET,
            "provider.call",
            otel.name = format_args!("{} {operation}", self.provider),
            otel.kind = "client",
            provider = self.provider,
            operation,
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let started = Instant::now();
        async {
            let Some(probe) = self.admit() else {
                tracing::Span::current().record("status", "breaker_open");
                self.count(operation, "breaker_open", started);
                return Err(ProviderError::Unavailable("circuit breaker open".into()));
            };
            let attempts = if SINGLE_ATTEMPT.try_with(|()| ()).is_ok() {
                1
            } else {
                self.settings.attempts
            };
            // The provider span's W3C trace context (empty when tracing is off).
            let trace_context = crate::telemetry::otel::outgoing_headers();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let result = match build(&self.client)
                    .headers(trace_context.clone())
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
                        self.count(operation, "ok", started);
                        self.record(false, probe.is_probe());
                        probe.answered();
                        return Ok(response);
                    }
                    Err(e) if e.is_transient() && attempt < attempts => {
                        let wait = self.settings.backoff.wait(attempt - 1, e.retry_after());
                        tracing::debug!(provider = self.provider, operation, error = %e, ?wait, "retrying provider call");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        span.record("status", e.class());
                        span.record("otel.status_code", "ERROR");
                        self.count(operation, e.class(), started);
                        self.record(e.is_transient(), probe.is_probe());
                        probe.answered();
                        if e.is_transient() {
                            tracing::warn!(provider = self.provider, operation, error = %e, "provider call failed");
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
        http.record(true, false);
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
        http.record(false, true);
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

    /// A client whose breaker opens after `threshold` failures, for `cooldown`.
    fn breaker(threshold: u32, cooldown: Duration) -> ProviderHttp {
        ProviderHttp::new(
            "test",
            reqwest::Client::new(),
            Resilience {
                attempts: 1,
                breaker_threshold: threshold,
                breaker_cooldown: cooldown,
                ..Resilience::default()
            },
        )
    }

    /// The captured lines that contain `text`.
    fn count(lines: &[String], text: &str) -> usize {
        lines.iter().filter(|l| l.contains(text)).count()
    }

    /// The cooldown now in force.
    fn cooldown(http: &ProviderHttp) -> Duration {
        http.breaker.lock().expect("lock").cooldown
    }

    #[test]
    fn the_cooldown_starts_short_doubles_while_probes_fail_and_starts_short_again_after_recovery() {
        let http = breaker(1, Duration::from_secs(15));
        http.record(true, false);
        assert_eq!(cooldown(&http), FIRST_COOLDOWN, "short first");
        let mut seen = Vec::new();
        for _ in 0..8 {
            http.record(true, true); // a failed probe
            seen.push(cooldown(&http));
        }
        assert_eq!(
            seen,
            [1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000, 15_000]
                .map(Duration::from_millis)
                .to_vec(),
            "doubling, up to the configured longest"
        );
        http.record(false, true); // the first good probe closes it
        assert!(http.admit().is_some(), "closed");
        http.record(true, false);
        assert_eq!(cooldown(&http), FIRST_COOLDOWN, "a new outage starts short");
    }

    #[test]
    fn calls_in_flight_failing_after_the_breaker_opened_log_no_second_opening() {
        let http = breaker(3, Duration::from_secs(60));
        // Ten calls admitted while the provider seemed up, all failing once it is down.
        let admitted: Vec<ProbeSlot> = (0..10).filter_map(|_| http.admit()).collect();
        assert_eq!(admitted.len(), 10);
        let ((), lines) = crate::telemetry::capture::logged(|| {
            for slot in admitted {
                http.record(true, slot.is_probe());
                slot.answered();
            }
        });
        assert_eq!(count(&lines, "circuit breaker opened"), 1, "{lines:?}");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(http.admit().is_none(), "the breaker is open");
    }

    #[test]
    fn the_breaker_gauge_follows_closed_open_half_open_and_closed_again() {
        let metrics = Metrics::new(prometheus_client::metrics::counter::Counter::default());
        let http = breaker(1, Duration::ZERO).with_metrics(metrics.clone());
        let state = || {
            metrics
                .breaker_state
                .get_or_create(&crate::telemetry::metrics::ProviderLabel { provider: "test" })
                .get()
        };
        assert_eq!(state(), 0, "closed");
        let call = http.admit().expect("closed");
        http.record(true, call.is_probe());
        call.answered();
        assert_eq!(state(), 1, "open");
        let probe = http.admit().expect("half-open");
        assert_eq!(state(), 2, "half-open");
        http.record(false, probe.is_probe());
        probe.answered();
        assert_eq!(state(), 0, "closed again");
    }

    #[test]
    fn each_change_of_the_breakers_state_is_logged_once() {
        let http = breaker(1, Duration::ZERO);
        let ((), lines) = crate::telemetry::capture::logged(|| {
            // Closed to open.
            let call = http.admit().expect("closed");
            http.record(true, call.is_probe());
            call.answered();
            // The probe fails: open again.
            let probe = http.admit().expect("half-open");
            assert!(probe.is_probe());
            http.record(true, probe.is_probe());
            probe.answered();
            // The next probe answers: closed.
            let probe = http.admit().expect("half-open");
            http.record(false, probe.is_probe());
            probe.answered();
            // Successes while closed change nothing.
            for _ in 0..3 {
                let call = http.admit().expect("closed");
                assert!(!call.is_probe());
                http.record(false, call.is_probe());
                call.answered();
            }
        });
        assert_eq!(count(&lines, "circuit breaker opened"), 1, "{lines:?}");
        assert_eq!(count(&lines, "the probe failed"), 1, "{lines:?}");
        assert_eq!(count(&lines, "circuit breaker closed"), 1, "{lines:?}");
        assert_eq!(lines.len(), 3, "{lines:?}");
    }
}
