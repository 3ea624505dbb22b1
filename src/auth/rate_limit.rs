//! Keyed rate limits (GCRA via `governor`), reported as `RATE_LIMITED` with `retryAfterSeconds`.

use std::{hash::Hash, num::NonZeroU32};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};

use crate::error::{AppError, AppResult};

/// A limit of `n` events per minute for each key, with a burst of `n`.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// Allows `per_minute` events per key per minute (at least one).
    pub fn per_minute(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one event for `key`, or fails with `RATE_LIMITED`.
    pub fn check(&self, key: &K) -> AppResult<()> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            AppError::RateLimited {
                retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Forgets keys whose limits have fully recovered (bounded memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_applies_per_key_and_says_when_to_retry() {
        let limit = KeyedLimit::per_minute(2);
        assert!(limit.check(&"a").is_ok());
        assert!(limit.check(&"a").is_ok());
        match limit.check(&"a") {
            Err(AppError::RateLimited {
                retry_after_seconds,
            }) => {
                assert!((1..=60).contains(&retry_after_seconds));
            }
            other => panic!("expected RATE_LIMITED, got {other:?}"),
        }
        assert!(limit.check(&"b").is_ok());
    }
}
