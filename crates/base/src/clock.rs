//! The one time source of the gateway. Injected (like rustls's `TimeProvider`) and used for
//! every decision that depends on time: claim checks (`exp`/`nbf`/`iat` with leeway, DPoP
//! proof age), key-set staleness, the refresh schedule and its backoff, the unknown-`kid`
//! rate limit, discovery/JWKS fetch timeouts, introspection calls and their cached answers, the
//! shared store's command timeout, rate limits, the key-manager sync's schedule, timestamps and
//! APIM token lifetime, the upstream pool's idle reaper, connect and TLS handshake timeouts, the
//! wait for a free upstream connection and the upstream response timeout, the listeners'
//! header-read, idle and TLS handshake timeouts, the accept backoff, the shutdown delay and the
//! drain. The system clock's [`Sleep`] is tokio's timer held inline, so a per-request timeout on
//! the clock allocates nothing. Tests drive it with
//! [`ManualClock`] and run in milliseconds instead of sleeping; `validate --at` uses
//! [`FixedClock`]. A clock never goes to the network or blocks.
//!
//! Clippy enforces it (`clippy.toml`: `Instant::now`, `SystemTime::now`, tokio's `sleep`,
//! `sleep_until`, `timeout` and `interval` are refused). The exceptions carry an `allow` saying
//! why: latency metrics (real time by definition), the body-stall and tunnel timers (tokio's
//! `Sleep::reset` each chunk or frame, which a clock's sleep cannot do), the log allowance, and
//! the fake servers.
#![allow(clippy::disallowed_methods)] // the one place that reads the system's clocks

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

pin_project_lite::pin_project! {
    /// A sleep on some clock: tokio's timer, held inline (the system clock's sleeps allocate
    /// nothing, so a per-request timeout can run on the clock), or a test clock's future.
    #[project = SleepProjection]
    #[allow(missing_docs)] // the macro carries no field docs; the variants say what they hold
    pub enum Sleep {
        /// The system's time, on tokio's timer wheel.
        Timer { #[pin] sleep: tokio::time::Sleep },
        /// A test clock's sleep: completes when that clock has been moved far enough.
        Driven { future: Pin<Box<dyn Future<Output = ()> + Send + 'static>> },
    }
}

impl Sleep {
    /// A sleep of `d` on tokio's timer.
    pub fn timer(d: Duration) -> Sleep {
        Sleep::Timer { sleep: tokio::time::sleep(d) }
    }

    /// A test clock's sleep.
    pub fn driven(future: impl Future<Output = ()> + Send + 'static) -> Sleep {
        Sleep::Driven { future: Box::pin(future) }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.project() {
            SleepProjection::Timer { sleep } => sleep.poll(cx),
            SleepProjection::Driven { future } => future.as_mut().poll(cx),
        }
    }
}

/// Wall time for claims, monotonic time for intervals, and sleeping.
pub trait Clock: Send + Sync + 'static {
    /// The current time in whole seconds since the Unix epoch (token claims count in these).
    fn now_unix(&self) -> i64;

    /// Time since the clock's origin; never goes back. Staleness, schedules and rate limits
    /// are measured in it.
    fn monotonic(&self) -> Duration;

    /// Completes once `d` of this clock's monotonic time has passed.
    fn sleep(&self, d: Duration) -> Sleep;

    /// The wall time as a `SystemTime`, whole seconds (timestamps shown in `/status`).
    fn wall_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.now_unix().max(0) as u64)
    }
}

/// Runs `fut` for at most `d` of `clock`'s time; `None` when the time ran out first.
pub async fn timeout<F: Future>(clock: &dyn Clock, d: Duration, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        out = fut => Some(out),
        _ = clock.sleep(d) => None,
    }
}

/// The process's monotonic origin.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn system_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        // A clock set before 1970 is broken; treating it as the epoch makes every token
        // look like it is from the future, which fails closed.
        Err(_) => 0,
    }
}

/// The real clocks: the system's wall clock and monotonic clock, tokio's timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        system_unix()
    }

    fn monotonic(&self) -> Duration {
        origin().elapsed()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Sleep::timer(d)
    }
}

/// A wall clock that only moves when told to (`validate --at`); intervals and sleeps are real.
#[derive(Debug, Default)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock stopped at `unix` seconds.
    pub fn new(unix: i64) -> Self {
        FixedClock(AtomicI64::new(unix))
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    fn monotonic(&self) -> Duration {
        origin().elapsed()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        Sleep::timer(d)
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves wall and monotonic time
/// together and wakes every sleep that has come due: what tests drive the schedules with.
#[derive(Debug)]
pub struct ManualClock {
    start_unix: i64,
    elapsed: watch::Sender<Duration>,
}

impl ManualClock {
    /// A clock at `start_unix` (usually the real now, so that freshly minted tokens are valid).
    pub fn new(start_unix: i64) -> ManualClock {
        ManualClock { start_unix, elapsed: watch::Sender::new(Duration::ZERO) }
    }

    /// A clock at the real current time.
    pub fn at_system_now() -> ManualClock {
        ManualClock::new(system_unix())
    }

    /// Moves time forward by `d`, waking the sleeps that are now due.
    pub fn advance(&self, d: Duration) {
        self.elapsed.send_modify(|e| *e += d);
    }

    /// How many sleeps on this clock are waiting now (a task backing off, a schedule).
    pub fn sleepers(&self) -> usize {
        self.elapsed.receiver_count()
    }
}

impl Clock for ManualClock {
    fn now_unix(&self) -> i64 {
        self.start_unix + self.elapsed.borrow().as_secs() as i64
    }

    fn monotonic(&self) -> Duration {
        *self.elapsed.borrow()
    }

    fn sleep(&self, d: Duration) -> Sleep {
        let deadline = self.monotonic() + d;
        let mut rx = self.elapsed.subscribe();
        Sleep::driven(async move {
            while *rx.borrow_and_update() < deadline {
                if rx.changed().await.is_err() {
                    // The clock is gone: time will never come.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_at_most_a_fifth_more_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        for base in [1, 2, 4, 5, 5] {
            let d = b.next_delay();
            let base = Duration::from_secs(base);
            assert!(d >= base && d <= base + base / 5, "{d:?} for {base:?}");
        }
        b.reset();
        assert_eq!(b.peek(), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_is_advanced_past_it() {
        let clock = ManualClock::new(1_000);
        let mut sleep = std::pin::pin!(clock.sleep(Duration::from_secs(2)));
        let poll = |s: Pin<&mut Sleep>| {
            let waker = futures_util::task::noop_waker();
            s.poll(&mut std::task::Context::from_waker(&waker)).is_ready()
        };
        assert!(!poll(sleep.as_mut()));
        clock.advance(Duration::from_millis(1999));
        assert!(!poll(sleep.as_mut()));
        clock.advance(Duration::from_millis(1));
        assert!(poll(sleep.as_mut()));
        assert_eq!(clock.now_unix(), 1_002);
        assert_eq!(clock.monotonic(), Duration::from_secs(2));
        assert!(poll(std::pin::pin!(clock.sleep(Duration::ZERO))));
    }

    #[tokio::test]
    async fn timeout_on_a_manual_clock() {
        let clock = ManualClock::new(0);
        let never = std::future::pending::<()>();
        let t = timeout(&clock, Duration::from_secs(1), never);
        tokio::pin!(t);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(t.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.as_mut().poll(&mut cx), std::task::Poll::Ready(None));
    }
}

/// `base` and up to `jitter` more, at random: replicas retrying the same IdP or APIM, or
/// running the same schedule, do not do it in step.
pub fn jittered(base: Duration, jitter: Duration) -> Duration {
    use rand::Rng;
    let extra = if jitter.is_zero() { 0 } else { rand::rng().random_range(0..=jitter.as_millis() as u64) };
    base + Duration::from_millis(extra)
}

/// Retry delays: `first`, doubling up to `cap`, each with up to a fifth more at random. The one
/// backoff of key refreshes, the key-manager sync and `km-sync --once`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first` (never above `cap`).
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff { first, cap, next: first.min(cap) }
    }

    /// The un-jittered delay the next failure waits (for a deadline check).
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay to wait after a failure (jittered); the one after it doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        jittered(base, base / 5)
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first.min(self.cap);
    }
}
