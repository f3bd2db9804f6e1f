//! Properties of the decision that must hold for every input, not just the examples: any
//! single-byte change to a valid token is refused; the same claims signed by another key (even
//! under the right `kid`) are refused; and the decision depends on no header but
//! `Authorization` (for routing: method and path).

use std::sync::Arc;

use crate::support::*;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use jwtgate::auth::alg::Alg;
use jwtgate::auth::Authenticator;
use jwtgate::clock::SystemClock;
use jwtgate::config::Config;
use jwtgate::decision::{Judge, Origin, RequestFacts};
use jwtgate::fetch::HttpFetcher;
use jwtgate::keys::KeyRegistry;
use jwtgate::metrics::Metrics;
use proptest::prelude::*;

struct World {
    rt: tokio::runtime::Runtime,
    _idp: FakeIssuer,
    /// Cache off: every check is a full verification.
    auth: Arc<Authenticator>,
    judge: Judge,
    token: String,
    forged: String,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let idp = rt.block_on(FakeIssuer::start("prop")).unwrap();
    let key = idp.add_shared_key(harness_key());
    let text = format!("{}\n", config_text(&idp.discovery_url(), "127.0.0.1:9".parse().unwrap(), "", ""));
    let config = Config::parse(&text, None).unwrap();
    let metrics = Arc::new(Metrics::new());
    let registry = Arc::new(KeyRegistry::new(
        &config.issuers,
        HttpFetcher::new().unwrap(),
        metrics.clone(),
        Arc::new(SystemClock),
    ));
    rt.block_on(registry.issuers[0].refresh()).unwrap();
    let auth = Arc::new(Authenticator::new(registry, Arc::new(SystemClock), 0, 16384, metrics.clone()));
    let judge = Judge::new(&config.routes, auth.clone(), &metrics, "proxy", &config.server);
    let claims = idp.claims(now(), "alice", AUD, "orders:read orders:write");
    let token = key.token(&claims);
    // Another key under the published key's kid: a forgery.
    let forged = SigningKey::generate(Alg::RS256, "k1_RS256").unwrap().token(&claims);
    World { rt, _idp: idp, auth, judge, token, forged }
}

fn verify(w: &World, token: &[u8]) -> bool {
    // Refetches are rate-limited (10 s): a mutated kid costs at most one fetch for the run.
    w.rt.block_on(w.auth.verify(token, None, None)).is_ok()
}

fn status(w: &World, method: &Method, path: &str, headers: &HeaderMap) -> (u16, &'static str) {
    let origin = || "http://gw".to_string();
    let o = RequestFacts {
        method,
        path,
        headers,
        header_bytes: jwtgate::proxy::meaning::header_bytes(headers),
        framing: None,
        origin: Origin::Request(&origin),
        client: None,
    };
    match w.rt.block_on(w.judge.judge(&o)) {
        Ok(_) => (200, ""),
        Err(r) => (r.refusal.status.as_u16(), r.refusal.code),
    }
}

#[test]
fn the_valid_token_and_the_forgery_are_what_they_seem() {
    let w = world();
    assert!(verify(&w, w.token.as_bytes()), "the unmodified token passes");
    assert!(!verify(&w, w.forged.as_bytes()), "the same claims signed by another key are refused");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_single_byte_change_is_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        thread_local!(static W: World = world());
        W.with(|w| {
            let mut t = w.token.clone().into_bytes();
            let i = pos.index(t.len());
            prop_assume!(t[i] != byte);
            t[i] = byte;
            prop_assert!(!verify(w, &t), "a token changed at byte {} ({:?} -> {:?}) passed", i, w.token.as_bytes()[i] as char, byte as char);
            Ok(())
        })?;
    }

    #[test]
    fn the_decision_depends_on_no_other_header(
        extra in prop::collection::vec((
            prop::sample::select(vec![
                "x-jwt-sub", "x-jwt-payload", "x-forwarded-for", "x-original-uri", "x-forwarded-uri",
                "cookie", "x-http-method-override", "dpop", "x-user", "host", "proxy-authorization", "x_jwt_sub",
            ]),
            "[ -~]{0,40}",
        ), 0..6),
        route in prop::sample::select(vec![("GET", "/orders/1"), ("POST", "/orders"), ("GET", "/public/x"), ("DELETE", "/api/x"), ("GET", "/nowhere")]),
        with_token in any::<bool>(),
    ) {
        thread_local!(static W: World = world());
        W.with(|w| {
            let method = Method::from_bytes(route.0.as_bytes()).unwrap();
            let mut base = HeaderMap::new();
            if with_token {
                base.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", w.token)).unwrap());
            }
            let mut noisy = base.clone();
            for (name, value) in &extra {
                if let Ok(v) = HeaderValue::from_str(value) {
                    noisy.append(HeaderName::from_static(name), v);
                }
            }
            prop_assert_eq!(status(w, &method, route.1, &base), status(w, &method, route.1, &noisy));
            Ok(())
        })?;
    }
}
