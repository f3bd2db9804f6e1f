//! The time source for every claim check. Injected (like rustls's `TimeProvider`) so that
//! `exp`/`nbf`/leeway, `validate --at` and key staleness are testable without sleeping.
//! It must never go to the network or block.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as the token claims count them.
pub trait Clock: Send + Sync + 'static {
    /// The current time in whole seconds since the Unix epoch.
    fn now_unix(&self) -> i64;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            // A clock set before 1970 is broken; treating it as the epoch makes every token
            // look like it is from the future, which fails closed.
            Err(_) => 0,
        }
    }
}

/// A clock that only moves when told to: `validate --at` and tests.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock stopped at `unix` seconds.
    pub fn new(unix: i64) -> Self {
        FixedClock(AtomicI64::new(unix))
    }

    /// Moves the clock to `unix` seconds.
    pub fn set(&self, unix: i64) {
        self.0.store(unix, Ordering::Relaxed);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
