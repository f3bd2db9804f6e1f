// Memory and cost of a route's rate limiter at 100,000 keys (the default `max_keys`): resident
// memory before and after filling it, bytes per key, and the time of one check at that size
// against the cost of an empty check. Part of the `decision` bench binary; Linux only (reads
// /proc/self/statm); prints its figures, asserts nothing.

use std::sync::Arc;
use std::time::Instant;

use jwtgate::config::{RateLimitConfig, RateLimitKey};
use jwtgate::rate_limit::RateLimiter;

use super::replay_memory::rss_bytes;

/// Fills a limiter and prints what it cost.
pub fn report() {
    let full = std::env::args().any(|a| a == "--bench");
    let keys = if full { 100_000 } else { 5_000 };
    let cfg = RateLimitConfig { key: RateLimitKey::Sub, requests_per_second: 10.0, burst: 20, max_keys: keys };
    let subjects: Vec<String> = (0..keys).map(|i| format!("user-{i:08}@example.org")).collect();
    let Some(before) = rss_bytes() else {
        println!("rate_limit_memory: /proc/self/statm unreadable; nothing measured");
        return;
    };
    let limiter = RateLimiter::new(&cfg, Arc::new(jwtgate::clock::SystemClock));
    let empty = rss_bytes().unwrap_or(before);
    let started = Instant::now();
    for s in &subjects {
        limiter.check(s.as_bytes());
    }
    let fill = started.elapsed();
    let after = rss_bytes().unwrap_or(before);
    // The same keys again (the steady state: every caller known).
    let started = Instant::now();
    for s in &subjects {
        std::hint::black_box(limiter.check(s.as_bytes()));
    }
    let known = started.elapsed();
    println!(
        "rate_limit_memory: {keys} keys: RSS +{} KiB empty, +{} KiB full ({} bytes a key); first check {:.0} ns, known key {:.0} ns a check",
        empty.saturating_sub(before) / 1024,
        (after.saturating_sub(before)) / 1024,
        after.saturating_sub(before) / keys,
        fill.as_nanos() as f64 / keys as f64,
        known.as_nanos() as f64 / keys as f64,
    );
}
