//! The one backoff policy: exponential waits with jitter, capped, and a provider's own asked wait
//! (`Retry-After`) taking precedence. Provider calls within a request
//! ([`crate::providers::http`]) and outbox deliveries ([`crate::outbox`]) both wait by it.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff from `base`, doubling per retry, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry (before jitter).
    pub base: Duration,
    /// The longest single wait; also caps a provider's asked wait.
    pub max: Duration,
}

impl Backoff {
    /// A policy from `base` doubling up to `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The wait before retry number `retry` (0 for the first): the provider's `asked` wait when
    /// it gave one, else a random wait between half and all of `base · 2^retry`; both capped at
    /// `max`. The floor keeps a retry from following at once; the jitter spreads retries apart.
    pub fn wait(&self, retry: u32, asked: Option<Duration>) -> Duration {
        if let Some(wait) = asked {
            return wait.min(self.max);
        }
        let exp = self.base.saturating_mul(1 << retry.min(16)).min(self.max);
        let half = exp.as_millis() as u64 / 2;
        Duration::from_millis(half + rand::rng().random_range(0..=half.max(1)))
    }
}

/// A worker's rest between rounds: until the earliest `due` row (at most `poll`), a `wake`, or
/// `stop`; false when stopped. The outbox and the mail queue rest by it.
pub async fn rest(
    stop: &tokio_util::sync::CancellationToken,
    wake: &tokio::sync::Notify,
    due: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
    poll: Duration,
) -> bool {
    let nap = due.map_or(poll, |due| {
        (due - now).to_std().unwrap_or_default().min(poll)
    });
    tokio::select! {
        () = stop.cancelled() => false,
        () = wake.notified() => true,
        () = tokio::time::sleep(nap) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_jitter_and_stop_at_the_cap() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..50 {
            let first = policy.wait(0, None);
            assert!((50..=101).contains(&first.as_millis()), "{first:?}");
            let third = policy.wait(2, None);
            assert!((200..=401).contains(&third.as_millis()), "{third:?}");
            let late = policy.wait(40, None);
            assert!((500..=1001).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn a_providers_asked_wait_wins_up_to_the_cap() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let asked = Some(Duration::from_secs(2));
        assert_eq!(policy.wait(0, asked), Duration::from_secs(2));
        assert_eq!(
            policy.wait(0, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }
}
