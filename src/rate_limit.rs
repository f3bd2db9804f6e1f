//! Rate limits per caller (`[routes.rate_limit]`): a GCRA token bucket per key — `sub`,
//! `client_id`, the client's address or the token itself — checked after authentication.
//! Memory is bounded by `max_keys`: the least recently seen key is forgotten first, and a
//! forgotten key starts again with a full bucket (errs toward the caller). Keys are kept as
//! 64-bit keyed hashes (random key per process), so no token or subject is held in memory and
//! a caller cannot pick a key that collides with another's.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use crate::config::RateLimitConfig;
use jwtgate_base::clock::Clock;

/// Independent locks: two callers rarely wait for each other.
const SHARDS: usize = 16;

/// One route's limiter.
pub struct RateLimiter {
    /// Nanoseconds between two requests at the sustained rate (GCRA's emission interval).
    interval: u64,
    /// How far ahead of now the theoretical arrival time may run: `burst - 1` intervals.
    tolerance: u64,
    burst: u32,
    shards: Box<[Mutex<lru::LruCache<u64, u64>>]>,
    hash_keys: (u64, u64),
    clock: Arc<dyn Clock>,
    /// The bucket every replica shares (`[shared_state]`), under the route's name; this
    /// limiter's own buckets are the fallback while the store does not answer.
    shared: Option<(Arc<crate::shared_state::SharedStore>, Box<str>)>,
}

/// What the limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allowed,
    /// Over it: retry after this many seconds (at least 1).
    Limited {
        /// Seconds until one more request would be allowed.
        retry_after: u64,
    },
}

impl RateLimiter {
    /// A limiter for `cfg`, on `clock`'s monotonic time.
    pub fn new(cfg: &RateLimitConfig, clock: Arc<dyn Clock>) -> RateLimiter {
        let interval = (1e9 / cfg.requests_per_second).round().max(1.0) as u64;
        let per_shard = NonZeroUsize::new(cfg.max_keys.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(cfg.burst.saturating_sub(1))),
            burst: cfg.burst,
            shards: (0..SHARDS).map(|_| Mutex::new(lru::LruCache::new(per_shard))).collect(),
            hash_keys: (rand::random(), rand::random()),
            clock,
            shared: None,
        }
    }

    /// Counts requests in `store`'s buckets for `route`, shared by every replica (`None`: in
    /// this process only).
    pub fn shared_in(mut self, store: Option<Arc<crate::shared_state::SharedStore>>, route: &str) -> RateLimiter {
        self.shared = store.map(|s| (s, route.into()));
        self
    }

    /// True when the buckets are in the shared store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// [`RateLimiter::check`] against the shared bucket; while the store does not answer, this
    /// replica's own (fail open, as limits usually do: counted in
    /// `jwtgate_rate_limit_local_fallbacks_total`, the outage logged once by the store).
    pub async fn check_shared(&self, key: &[u8]) -> Verdict {
        let Some((store, route)) = &self.shared else { return self.check(key) };
        let interval = std::time::Duration::from_nanos(self.interval);
        let tolerance = std::time::Duration::from_nanos(self.tolerance);
        match store.rate_limit(route, key, interval, tolerance).await {
            Ok(None) => Verdict::Allowed,
            Ok(Some(wait)) => Verdict::Limited { retry_after: wait.as_secs_f64().ceil().max(1.0) as u64 },
            Err(_) => {
                store.count_rate_limit_fallback();
                self.check(key)
            }
        }
    }

    /// The bucket size (`RateLimit-Policy`'s quota).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Seconds for an empty bucket to fill again (`RateLimit-Policy`'s window).
    pub fn window_seconds(&self) -> u64 {
        (self.interval.saturating_mul(u64::from(self.burst))).div_ceil(1_000_000_000).max(1)
    }

    /// Counts one request of `key` and says whether it is within the limit.
    pub fn check(&self, key: &[u8]) -> Verdict {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        h.write(key);
        let hash = h.finish();
        let now = u64::try_from(self.clock.monotonic().as_nanos()).unwrap_or(u64::MAX);
        // A poisoned shard is only a counter map: its state is still usable.
        let mut shard = jwtgate_base::sync::lock(&self.shards[(hash as usize) % SHARDS]);
        let tat = shard.get(&hash).copied().unwrap_or(now).max(now);
        if tat - now > self.tolerance {
            let wait = tat - now - self.tolerance;
            return Verdict::Limited { retry_after: wait.div_ceil(1_000_000_000).max(1) };
        }
        shard.put(hash, tat.saturating_add(self.interval));
        Verdict::Allowed
    }

    /// How many keys are tracked now.
    pub fn keys(&self) -> usize {
        self.shards.iter().map(|s| jwtgate_base::sync::lock(s).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitKey;
    use jwtgate_base::clock::ManualClock;
    use std::time::Duration;

    fn limiter(rps: f64, burst: u32, max_keys: usize) -> (RateLimiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at_system_now());
        let cfg = RateLimitConfig { key: RateLimitKey::Sub, requests_per_second: rps, burst, max_keys };
        (RateLimiter::new(&cfg, clock.clone()), clock)
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let (l, clock) = limiter(2.0, 3, 100);
        for _ in 0..3 {
            assert_eq!(l.check(b"alice"), Verdict::Allowed);
        }
        assert_eq!(l.check(b"alice"), Verdict::Limited { retry_after: 1 });
        assert_eq!(l.check(b"bob"), Verdict::Allowed, "each key has its own bucket");
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check(b"alice"), Verdict::Allowed);
        assert!(matches!(l.check(b"alice"), Verdict::Limited { .. }));
        assert_eq!((l.burst(), l.window_seconds()), (3, 2));
    }

    #[test]
    fn memory_is_bounded_and_a_forgotten_key_starts_full() {
        let (l, _clock) = limiter(1.0, 1, 32);
        for i in 0..10_000u32 {
            l.check(&i.to_be_bytes());
        }
        assert!(l.keys() <= 32, "{}", l.keys());
        assert_eq!(l.check(&0u32.to_be_bytes()), Verdict::Allowed, "evicted long ago: a full bucket");
    }
}
