// Memory and cost of the DPoP replay cache at its default size (1,000,000 proofs in their
// window): resident memory before and after filling it, bytes per entry, and the time of one
// check at that size. Part of the `decision` bench binary (one fat-LTO link in CI, not two);
// Linux only (reads /proc/self/statm); prints its figures, asserts nothing.

use std::time::Instant;

use jwtgate::auth::dpop::{FirstUse, ReplayCache, DEFAULT_REPLAY_CAPACITY};

/// Resident memory of this process (Linux).
pub fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Fills a replay cache and prints what it cost.
pub fn report() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then a small run.
    let full = std::env::args().any(|a| a == "--bench");
    let entries = if full { DEFAULT_REPLAY_CAPACITY } else { 10_000 };
    let jtis: Vec<String> = (0..entries + 1000).map(|i| format!("{i:032x}")).collect();
    let now = 1_800_000_000i64;
    let cache = ReplayCache::with_capacity(entries);
    let Some(before) = rss_bytes() else {
        println!("replay_memory: /proc/self/statm unreadable; nothing measured");
        return;
    };
    let started = Instant::now();
    for (i, jti) in jtis[..entries].iter().enumerate() {
        // Proofs issued over the last minute, each remembered for the default 181 s window.
        let iat = now - (i as i64 % 60);
        assert_eq!(cache.first_use(jti, now, iat + 181), FirstUse::Yes);
    }
    let fill = started.elapsed();
    let after = rss_bytes().unwrap_or(before);
    let started = Instant::now();
    let mut refused = 0;
    for jti in &jtis[entries..] {
        refused += usize::from(cache.first_use(jti, now, now + 181) == FirstUse::Full);
    }
    let full_check = started.elapsed();
    println!(
        "replay_memory: {entries} proofs: RSS +{:.1} MiB = {} bytes/entry; insert {:.0} ns; check when full {:.0} ns ({refused} refused)",
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) / entries,
        fill.as_nanos() as f64 / entries as f64,
        full_check.as_nanos() as f64 / 1000.0,
    );
}
