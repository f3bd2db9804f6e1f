//! Warnings that a failure can repeat thousands of times a second (the upstream down, accept
//! failing, the connection limit reached) are written at most once a second, each carrying how
//! many were held back since the previous one: the log says what happened and how often
//! without becoming the bottleneck. The metrics count every one.
#![allow(clippy::disallowed_methods)] // a log line's allowance is about real time, whatever clock decisions run on

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One kind of warning's allowance: a line a second.
pub struct EverySecond {
    since: Instant,
    /// Milliseconds after `since` from which the next line may be written.
    next_ms: AtomicU64,
    /// Lines held back since the last one written.
    held: AtomicU64,
}

impl EverySecond {
    /// An allowance whose first line may be written at once.
    pub fn new() -> EverySecond {
        EverySecond { since: Instant::now(), next_ms: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// `Some(n)` when a line may be written now (`n` were held back before it); `None` when
    /// this one is held back.
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(1000), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::Relaxed));
        }
        self.held.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for EverySecond {
    fn default() -> Self {
        EverySecond::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_count_of_those_held_back() {
        let limit = EverySecond::new();
        assert_eq!(limit.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(limit.admit(), None);
        }
        limit.next_ms.store(0, Ordering::Relaxed); // as if a second had passed
        assert_eq!(limit.admit(), Some(5));
        assert_eq!(limit.admit(), None);
    }
}
