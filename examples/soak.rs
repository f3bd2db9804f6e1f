//! Soak: `jwtgate serve` (the real binary, a child process) under mixed traffic for a while,
//! while an Asgardeo-like IdP rotates its keys every few seconds and goes down for a while
//! every minute. Every response is checked against the status it must have; at the end it
//! prints requests, wrong answers, RSS at the start and the end, and JWKS fetches, and exits
//! non-zero on any wrong answer, a crash, or RSS growth over 10 %. Loopback only, bounded in
//! time. Run through `benches/soak.sh SECONDS`.
#![allow(clippy::disallowed_methods)] // a load generator measures real time

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jwtgate::auth::alg::Alg;
use jwtgate::clock::{Clock, SystemClock};
use jwtgate_testkit::echo::EchoUpstream;
use jwtgate_testkit::issuer::FakeIssuer;
use jwtgate_testkit::mint::SigningKey;

const AUD: &str = "soak-client";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The request kinds, each with the status it must get.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Valid,
    Expired,
    Forged,
    UnknownKid,
    WrongScope,
    Anonymous,
    Body,
}

const KINDS: [Kind; 7] =
    [Kind::Valid, Kind::Expired, Kind::Forged, Kind::UnknownKid, Kind::WrongScope, Kind::Anonymous, Kind::Body];

/// Tokens of the key the gateway is known to have (published for longer than a refresh).
struct Tokens {
    valid: String,
    expired: String,
    forged: String,
    unknown_kid: String,
    wrong_scope: String,
}

fn mint(issuer: &FakeIssuer, key: &SigningKey) -> Tokens {
    let now = SystemClock.now_unix();
    let mut expired = issuer.claims(now - 7200, "alice", AUD, "orders:read");
    expired["exp"] = (now - 3600).into();
    let forger = SigningKey::generate(Alg::RS256, &key.kid).expect("key");
    Tokens {
        valid: key.token(&issuer.claims(now, "alice", AUD, "orders:read")),
        expired: key.token(&expired),
        forged: forger.token(&issuer.claims(now, "alice", AUD, "orders:read")),
        // A kid the IdP never publishes: each one costs at most one rate-limited refetch.
        unknown_kid: SigningKey::generate(Alg::RS256, &format!("never-{:x}", rand::random::<u32>()))
            .expect("key")
            .token(&issuer.claims(now, "alice", AUD, "orders:read")),
        wrong_scope: key.token(&issuer.claims(now, "alice", AUD, "profile")),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let bin = std::env::args().nth(2).unwrap_or_else(|| "target/release/jwtgate".into());
    let issuer = Arc::new(FakeIssuer::start("soak").await.expect("issuer"));
    let upstream = EchoUpstream::start().await.expect("upstream");
    let mut kid = 0u32;
    let first = issuer.add_key(SigningKey::generate(Alg::RS256, &format!("k{kid}")).expect("key"));
    let tokens = Arc::new(Mutex::new(Arc::new(mint(&issuer, &first))));
    let port = |_: ()| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (gw_port, admin_port) = (port(()), port(()));
    let dir = std::env::temp_dir().join(format!("jwtgate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{gw_port}"
admin_listen = "127.0.0.1:{admin_port}"
log_level = "error"
[upstream]
url = "http://{up}"
[[issuers]]
name = "soak"
discovery_url = "{disc}"
audiences = ["{AUD}"]
jwks_refresh_seconds = 2
jwks_refresh_min_seconds = 1
jwks_min_refetch_seconds = 1
jwks_max_stale_seconds = 3600
[[routes]]
name = "public"
path_prefix = "/public"
auth = "anonymous"
[[routes]]
name = "orders"
path_prefix = "/orders"
scopes = ["orders:read"]
"#,
        up = upstream.addr,
        disc = issuer.discovery_url()
    );
    std::fs::write(dir.join("jwtgate.toml"), config).unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--config"])
        .arg(dir.join("jwtgate.toml"))
        .kill_on_drop(true)
        .spawn()
        .expect("start jwtgate");
    let pid = child.id().expect("pid");
    let gw: SocketAddr = format!("127.0.0.1:{gw_port}").parse().unwrap();
    jwtgate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    for _ in 0..400 {
        if client.get(format!("http://127.0.0.1:{admin_port}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let requests = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (client, tokens, requests, wrong) = (client.clone(), tokens.clone(), requests.clone(), wrong.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let kind = KINDS[(i % KINDS.len() as u64) as usize];
                i += 1;
                let t = tokens.lock().unwrap().clone();
                let url = |p: &str| format!("http://{gw}{p}");
                let (req, expect) = match kind {
                    Kind::Valid => (client.get(url("/orders/1")).bearer_auth(&t.valid), 200),
                    Kind::Expired => (client.get(url("/orders/1")).bearer_auth(&t.expired), 401),
                    Kind::Forged => (client.get(url("/orders/1")).bearer_auth(&t.forged), 401),
                    Kind::UnknownKid => (client.get(url("/orders/1")).bearer_auth(&t.unknown_kid), 401),
                    Kind::WrongScope => (client.get(url("/orders/1")).bearer_auth(&t.wrong_scope), 403),
                    Kind::Anonymous => (client.get(url("/public/x")), 200),
                    Kind::Body => (client.post(url("/orders/1")).bearer_auth(&t.valid).body(vec![b'x'; 4096]), 200),
                };
                requests.fetch_add(1, Ordering::Relaxed);
                match req.send().await {
                    Ok(r) if r.status().as_u16() == expect => {
                        let _ = r.bytes().await;
                    }
                    Ok(r) => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("WRONG: {kind:?} got {} (expected {expect})", r.status());
                    }
                    Err(e) => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("WRONG: {kind:?} failed: {e}");
                    }
                }
            }
        }));
    }

    // Warm-up, then the starting RSS; then rotations every 5 s and a 10 s outage every minute.
    tokio::time::sleep(Duration::from_secs(3.min(seconds))).await;
    let rss_start = rss_kib(pid);
    let started = Instant::now();
    let mut previous: Option<String> = None;
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let in_minute = started.elapsed().as_secs() % 60;
        if (40..50).contains(&in_minute) {
            issuer.set_down(true);
            continue;
        }
        issuer.set_down(false);
        // Rotate: publish a new key; start using it only once the gateway has surely fetched it
        // (two refreshes later); retire the key before the previous one.
        kid += 1;
        let next = issuer.add_key(SigningKey::generate(Alg::RS256, &format!("k{kid}")).expect("key"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let old = std::mem::replace(&mut *tokens.lock().unwrap(), Arc::new(mint(&issuer, &next)));
        drop(old);
        if let Some(p) = previous.take() {
            issuer.remove_key(&p);
        }
        previous = Some(format!("k{}", kid - 1));
    }
    issuer.set_down(false);
    for w in workers {
        let _ = w.await;
    }
    let rss_end = rss_kib(pid);
    let crashed = child.try_wait().ok().flatten().is_some();
    let (n, bad) = (requests.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    let growth = if rss_start > 0 { (rss_end as f64 / rss_start as f64 - 1.0) * 100.0 } else { 0.0 };
    println!(
        "soak: {seconds} s, {n} requests, {bad} wrong answers, crashed: {crashed}, RSS {rss_start} -> {rss_end} KiB ({growth:+.1}%), {} JWKS fetches, {kid} rotations",
        issuer.jwks_fetches()
    );
    let _ = child.start_kill();
    let _ = std::fs::remove_dir_all(&dir);
    if bad > 0 || crashed || growth > 10.0 {
        std::process::exit(1);
    }
}
