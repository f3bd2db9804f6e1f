//! Decision-path benchmarks, each next to its baseline in the same group so the ratio is read
//! off one run (this machine is shared and noisy; absolute numbers drift, ratios hold):
//! - `cached`: a repeated token — cache lookup, time and scope checks, building the forwarded
//!   claim headers — against an empty baseline of building those headers alone.
//! - `rs256`, `es256`, `eddsa`: a new token every time (cache off) — split, decode, issuer and
//!   key choice, verification, claim checks — against raw aws-lc-rs verification of the very
//!   same signature with the same pre-parsed key.
//! - `dpop`: a cached DPoP-bound token with a fresh ES256 proof each time (made outside the
//!   timing) against the cached bearer decision: what sender-constraining costs per request.
//! - before those, the DPoP replay cache's memory at its default size (`replay_memory`) and a
//!   route rate limiter's at 100,000 keys (`rate_limit_memory`).
#![allow(clippy::disallowed_methods)] // benchmarks measure real time

#[path = "decision/rate_limit_memory.rs"]
mod rate_limit_memory;
#[path = "decision/replay_memory.rs"]
mod replay_memory;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use jwtgate::auth::alg::Alg;
use jwtgate::auth::Authenticator;
use jwtgate::clock::{Clock, SystemClock};
use jwtgate::config::Config;
use jwtgate::fetch::HttpFetcher;
use jwtgate::keys::KeyRegistry;
use jwtgate::metrics::Metrics;
use jwtgate_testkit::issuer::FakeIssuer;
use jwtgate_testkit::mint::SigningKey;

/// Runs a future that never suspends on this path (no refetch) to completion in one poll.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the decision waited (a refetch?) — the benchmark setup is wrong"),
    }
}

struct Setup {
    _rt: tokio::runtime::Runtime,
    _idp: FakeIssuer,
    cached: Authenticator,
    uncached: Authenticator,
    keys: Vec<Arc<SigningKey>>,
    claims: serde_json::Value,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let idp = rt.block_on(FakeIssuer::start("bench")).unwrap();
    let keys: Vec<_> = [Alg::RS256, Alg::ES256, Alg::EdDSA]
        .iter()
        .map(|a| idp.add_key(SigningKey::generate(*a, &format!("k_{}", a.name())).unwrap()))
        .collect();
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[issuers]]\nname = \"bench\"\ndiscovery_url = \"{}\"\naudiences = [\"aud\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\n",
        idp.discovery_url()
    );
    let config = Config::parse(&text, None).unwrap();
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(KeyRegistry::new(
        &config.issuers,
        HttpFetcher::new().unwrap(),
        metrics.clone(),
        Arc::new(jwtgate::clock::SystemClock),
    ));
    rt.block_on(registry.issuers[0].refresh()).unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cached = Authenticator::new(registry.clone(), clock.clone(), 100_000, 16384, metrics.clone());
    let uncached = Authenticator::new(registry, clock, 0, 16384, metrics);
    let claims = idp.claims(SystemClock.now_unix(), "alice", "aud", "openid orders:read orders:write");
    Setup { _rt: rt, _idp: idp, cached, uncached, keys, claims }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    h
}

static X_JWT_PAYLOAD: HeaderName = HeaderName::from_static("x-jwt-payload");
static X_JWT_SUB: HeaderName = HeaderName::from_static("x-jwt-sub");

fn raw_key(key: &SigningKey) -> ParsedPublicKey {
    let jwk = key.jwk();
    let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
    match key.alg {
        Alg::RS256 => RsaPublicKeyComponents { n: b("n"), e: b("e") }
            .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
            .unwrap(),
        Alg::ES256 => {
            let mut p = vec![4u8];
            p.extend(b("x"));
            p.extend(b("y"));
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, p).unwrap()
        }
        _ => ParsedPublicKey::new(&signature::ED25519, b("x")).unwrap(),
    }
}

/// DPoP requests for `GET http://gw/orders/1`: a client key, a token bound to it, and a fresh
/// proof for each request (`jti` = `{tag}-{n}-{random}`).
struct DpopRequests {
    client: SigningKey,
    jwk: serde_json::Value,
    token: String,
    ath: String,
    tag: &'static str,
}

impl DpopRequests {
    fn new(s: &Setup, tag: &'static str) -> DpopRequests {
        let client = SigningKey::generate(Alg::ES256, "client").unwrap();
        let mut jwk = client.jwk();
        jwk.as_object_mut().unwrap().remove("kid");
        let mut claims = s.claims.clone();
        claims["cnf"] = serde_json::json!({"jkt": jwtgate::auth::dpop::thumbprint(&jwk).unwrap()});
        let token = s.keys[0].token(&claims);
        let ath = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()));
        DpopRequests { client, jwk, token, ath, tag }
    }

    fn request(&self, n: u64) -> HeaderMap {
        let proof = self.client.sign_json(
            &serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk}),
            &serde_json::json!({"htm": "GET", "htu": "http://gw/orders/1", "iat": SystemClock.now_unix(),
                "jti": format!("{}-{n}-{:x}", self.tag, rand::random::<u64>()), "ath": self.ath}),
        );
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("DPoP {}", self.token)).unwrap());
        h.insert("dpop", HeaderValue::from_str(&proof).unwrap());
        h
    }
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let scopes = vec!["orders:read".to_string()];

    {
        let token = s.keys[0].token(&s.claims);
        let headers = bearer(&token);
        assert!(ready(s.cached.authorize(&headers, &scopes)).is_ok());
        let mut g = c.benchmark_group("cached");
        g.bench_function("baseline_build_claim_headers", |b| {
            let v = ready(s.cached.authorize(&headers, &scopes)).unwrap();
            b.iter(|| {
                let mut out = HeaderMap::with_capacity(4);
                out.insert(&X_JWT_PAYLOAD, v.payload_header.clone());
                if let Some(sub) = v.sub_header() {
                    out.insert(&X_JWT_SUB, sub.clone());
                }
                out
            })
        });
        g.bench_function("jwtgate_cached_decision", |b| {
            b.iter(|| {
                let v = ready(s.cached.authorize(std::hint::black_box(&headers), &scopes)).unwrap();
                let mut out = HeaderMap::with_capacity(4);
                out.insert(&X_JWT_PAYLOAD, v.payload_header);
                if let Some(sub) = v.verdict.sub_header.clone() {
                    out.insert(&X_JWT_SUB, sub);
                }
                out
            })
        });
        g.finish();
    }

    {
        let dpop = DpopRequests::new(&s, "bench");
        let htu = || "http://gw/orders/1".to_string();
        let request = |n: u64| dpop.request(n);
        let need = jwtgate::auth::Requirement::scopes(&scopes);
        let first = request(0);
        let req = jwtgate::auth::AuthRequest { headers: &first, method: "GET", htu: &htu };
        assert!(ready(s.cached.authorize_request(&req, &need)).is_ok(), "a DPoP request passes");
        let bearer_headers = bearer(&s.keys[0].token(&s.claims));
        let mut g = c.benchmark_group("dpop");
        g.bench_function("baseline_cached_bearer_decision", |b| {
            b.iter(|| ready(s.cached.authorize(std::hint::black_box(&bearer_headers), &scopes)).unwrap())
        });
        let mut n = 1;
        g.bench_function("jwtgate_cached_dpop_decision", |b| {
            b.iter_batched(
                || {
                    n += 1;
                    request(n)
                },
                |headers| {
                    let req = jwtgate::auth::AuthRequest { headers: &headers, method: "GET", htu: &htu };
                    ready(s.cached.authorize_request(&req, &need)).unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    {
        // Issue 21: a cached opaque-token decision (introspected once) beside a cached JWT
        // decision, on the same authenticator.
        let secret = std::env::temp_dir().join(format!("jwtgate-bench-secret-{}", std::process::id()));
        std::fs::write(&secret, "bench-secret").unwrap();
        s._idp.set_introspection_client("bench-rs", "bench-secret");
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[issuers]]\nname = \"bench\"\ndiscovery_url = \"{}\"\naudiences = [\"aud\"]\n[issuers.introspection]\nclient_id = \"bench-rs\"\nclient_secret_file = {:?}\n",
            s._idp.discovery_url(),
            secret.display().to_string()
        );
        let config = Config::parse(&text, None).unwrap();
        let metrics = Arc::new(Metrics::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let registry =
            Arc::new(KeyRegistry::new(&config.issuers, HttpFetcher::new().unwrap(), metrics.clone(), clock.clone()));
        s._rt.block_on(registry.issuers[0].refresh()).unwrap();
        let introspector = jwtgate::auth::introspection::Introspector::new(
            jwtgate::keys::IssuerId::at(0),
            registry.issuers[0].clone(),
            &config,
            "bench-secret".into(),
            clock.clone(),
            metrics.clone(),
        )
        .unwrap();
        let auth = Authenticator::new(registry, clock, 100_000, 16384, metrics).with_introspector(Some(introspector));
        let _ = std::fs::remove_file(&secret);
        let opaque = bearer(&s._idp.issue_opaque(s.claims.clone()));
        let jwt = bearer(&s.keys[0].token(&s.claims));
        // The first use of each asks (or verifies); what is measured is every use after.
        assert!(s._rt.block_on(auth.authorize(&opaque, &scopes)).is_ok(), "the opaque token passes");
        assert!(ready(auth.authorize(&jwt, &scopes)).is_ok());
        let mut g = c.benchmark_group("opaque");
        g.bench_function("baseline_cached_jwt_decision", |b| {
            b.iter(|| ready(auth.authorize(std::hint::black_box(&jwt), &scopes)).unwrap())
        });
        g.bench_function("jwtgate_cached_opaque_decision", |b| {
            b.iter(|| ready(auth.authorize(std::hint::black_box(&opaque), &scopes)).unwrap())
        });
        g.finish();
    }

    shared_state(c, &s, &scopes);

    for (i, name) in ["rs256", "es256", "eddsa"].iter().enumerate() {
        let key = &s.keys[i];
        let token = key.token(&s.claims);
        let headers = bearer(&token);
        assert!(ready(s.uncached.authorize(&headers, &scopes)).is_ok(), "{name}");
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let raw = raw_key(key);
        assert!(raw.verify_sig(input.as_bytes(), &sig).is_ok());
        let mut g = c.benchmark_group(*name);
        g.bench_function("raw_aws_lc_verify", |b| {
            b.iter(|| raw.verify_sig(std::hint::black_box(input.as_bytes()), std::hint::black_box(&sig)).unwrap())
        });
        g.bench_function("jwtgate_uncached_decision", |b| {
            b.iter(|| ready(s.uncached.authorize(std::hint::black_box(&headers), &scopes)).unwrap())
        });
        g.finish();
    }
}

/// Issue 22: a DPoP decision and a rate-limit check with the state in this process, beside the
/// same with it in a `redis-server` on loopback (started here; the group is skipped without one).
fn shared_state(c: &mut Criterion, s: &Setup, scopes: &[String]) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Ok(mut redis) = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("redis-server is not installed: the shared-state rows are skipped");
        return;
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:9\"\n[[issuers]]\nname = \"bench\"\ndiscovery_url = \"{}\"\naudiences = [\"aud\"]\n[shared_state]\nredis_url = \"redis://127.0.0.1:{port}/0\"\ntimeout_ms = 1000\npool_size = 1\n",
        s._idp.discovery_url()
    );
    let config = Config::parse(&text, None).unwrap();
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = {
        let _guard = s._rt.enter();
        Arc::new(
            jwtgate::shared_state::SharedStore::new(
                config.shared_state.as_ref().unwrap(),
                None,
                clock.clone(),
                metrics.clone(),
            )
            .unwrap(),
        )
    };
    let registry =
        Arc::new(KeyRegistry::new(&config.issuers, HttpFetcher::new().unwrap(), metrics.clone(), clock.clone()));
    s._rt.block_on(registry.issuers[0].refresh()).unwrap();
    let local = Authenticator::new(registry.clone(), clock.clone(), 100_000, 16384, metrics.clone());
    let shared =
        Authenticator::new(registry, clock.clone(), 100_000, 16384, metrics).with_shared_state(Some(store.clone()));

    let dpop = DpopRequests::new(s, "shared");
    let htu = || "http://gw/orders/1".to_string();
    let mut n = 0u64;
    let mut request = || {
        n += 1;
        dpop.request(n)
    };
    let need = jwtgate::auth::Requirement::scopes(scopes);
    for auth in [&local, &shared] {
        let h = request();
        let req = jwtgate::auth::AuthRequest { headers: &h, method: "GET", htu: &htu };
        assert!(s._rt.block_on(auth.authorize_request(&req, &need)).is_ok(), "a DPoP request passes");
    }
    let mut g = c.benchmark_group("shared_state");
    for (name, auth) in [("baseline_dpop_in_process", &local), ("jwtgate_dpop_shared_redis", &shared)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                &mut request,
                |headers| {
                    let req = jwtgate::auth::AuthRequest { headers: &headers, method: "GET", htu: &htu };
                    s._rt.block_on(auth.authorize_request(&req, &need)).unwrap()
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    let cfg = jwtgate::config::RateLimitConfig {
        key: jwtgate::config::RateLimitKey::Sub,
        requests_per_second: 1e6,
        burst: 1_000_000,
        max_keys: 100_000,
    };
    // The store answers (check_shared would otherwise fall back, silently, to the local buckets).
    let d = std::time::Duration::from_micros(1);
    assert!(s._rt.block_on(store.rate_limit("bench", b"probe", d, d)).is_ok(), "redis answers");
    let local_limiter = jwtgate::rate_limit::RateLimiter::new(&cfg, clock.clone());
    let shared_limiter = jwtgate::rate_limit::RateLimiter::new(&cfg, clock).shared_in(Some(store), "bench");
    g.bench_function("baseline_rate_limit_in_process", |b| {
        b.iter(|| s._rt.block_on(local_limiter.check_shared(std::hint::black_box(b"alice"))))
    });
    g.bench_function("jwtgate_rate_limit_shared_redis", |b| {
        b.iter(|| s._rt.block_on(shared_limiter.check_shared(std::hint::black_box(b"alice"))))
    });
    g.finish();
    let _ = redis.kill();
    let _ = redis.wait();
}

criterion_group!(decision, benches);

fn main() {
    // The smaller first: memory the other frees stays with the allocator and would be reused.
    rate_limit_memory::report();
    replay_memory::report();
    decision();
    Criterion::default().configure_from_args().final_summary();
}
