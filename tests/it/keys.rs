//! Key handling against a live fake Asgardeo: every algorithm, rotation with a single-flight
//! refetch, rate limiting of forged kids, outages, staleness, and discovery quirks.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use jwtgate::auth::alg::Alg;
use jwtgate::clock::Clock;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_algorithm_verifies() {
    let all = r#"algorithms = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]"#;
    let h = Harness::start_with(all, "").await;
    let algs = [Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384, Alg::EdDSA];
    let keys: Vec<_> =
        algs.iter().map(|a| h.idp.add_key(SigningKey::generate(*a, &format!("k_{}", a.name())).unwrap())).collect();
    // One refetch picks up all the new keys.
    let first = keys[0].token(&h.claims(""));
    echoed(h.get_with("/api/x", &first).await).await;
    for k in &keys {
        let t = k.token(&h.claims(""));
        let resp = h.get_with("/api/x", &t).await;
        assert_eq!(resp.status(), 200, "{}", k.alg.name());
    }
    // A token signed by the EC key but labelled with the RSA kid is refused: the kid pins the key.
    let forged = keys[5].sign_json(&json!({"alg": "ES256", "kid": "k1_RS256", "typ": "at+jwt"}), &h.claims(""));
    assert_eq!(h.get_with("/api/x", &forged).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_kid_is_tried_against_usable_keys() {
    let h = Harness::start().await;
    h.idp.add_key(SigningKey::generate(Alg::RS256, "k2_RS256").unwrap());
    let t = h.key.sign_json(&json!({"alg": "RS256", "typ": "at+jwt"}), &h.claims(""));
    echoed(h.get_with("/api/x", &t).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_triggers_one_refetch_then_accepts_after_rotation() {
    let h = Harness::start().await;
    let before = h.idp.jwks_fetches();
    let new_key = SigningKey::generate(Alg::RS256, "k2_RS256").unwrap();
    let token = new_key.token(&h.claims(""));
    h.idp.add_key(new_key);
    echoed(h.get_with("/api/x", &token).await).await;
    assert_eq!(h.idp.jwks_fetches(), before + 1, "exactly one refetch");
    // The old key was removed by the IdP: tokens of the new one keep working, no more fetches.
    h.idp.remove_key("k1_RS256");
    echoed(h.get_with("/api/x", &token).await).await;
    assert_eq!(h.idp.jwks_fetches(), before + 1);
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_jwks_refetches_total{issuer=\"asgardeo\",result=\"ok\"}"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_a_new_kid_cause_one_fetch() {
    let h = Arc::new(Harness::start().await);
    let new_key = SigningKey::generate(Alg::RS256, "k9_RS256").unwrap();
    let token = new_key.token(&h.claims(""));
    h.idp.add_key(new_key);
    h.idp.set_delay(Duration::from_millis(300));
    let before = h.idp.jwks_fetches();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (h, t) = (h.clone(), token.clone());
        tasks.push(tokio::spawn(async move { h.get_with("/api/x", &t).await.status().as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.idp.jwks_fetches(), before + 1, "single flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_kids_cannot_hammer_the_idp() {
    let h = Harness::start().await;
    let before = h.idp.jwks_fetches();
    for i in 0..30 {
        let t = h.key.sign_json(&json!({"alg": "RS256", "kid": format!("forged-{i}"), "typ": "at+jwt"}), &h.claims(""));
        let resp = h.get_with("/api/x", &t).await;
        assert_eq!(resp.status(), 401);
    }
    assert!(h.idp.jwks_fetches() <= before + 1, "refetches are rate limited: {}", h.idp.jwks_fetches() - before);
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_jwks_refetches_total{issuer=\"asgardeo\",result=\"throttled\"}") >= 29.0, "{m}");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_down_after_start_keeps_known_keys_working() {
    let h = Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1", "").await;
    let t = h.token("");
    h.idp.stop().await;
    advance_until(h.manual_clock(), Duration::from_millis(250), "the refresh failed", || async {
        metric(&h.metrics().await, "jwtgate_jwks_fetches_total{issuer=\"asgardeo\",result=\"error\"}") >= 1.0
    })
    .await;
    // A fresh token (not in the verified cache) still verifies with the last good keys.
    let fresh = h.key.token(&h.idp.claims(now(), "bob", AUD, ""));
    echoed(h.get_with("/api/x", &fresh).await).await;
    echoed(h.get_with("/api/x", &t).await).await;
    let ready = h.client.get(h.admin("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_jwks_fetches_total{issuer=\"asgardeo\",result=\"error\"}") >= 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_set_older_than_max_staleness_is_503() {
    let h = Harness::start_manual(
        "jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\njwks_max_stale_seconds = 2",
        "token_cache_entries = 1000",
    )
    .await;
    let t = h.token("");
    echoed(h.get_with("/api/x", &t).await).await;
    h.idp.set_down(true);
    // Past the maximum staleness at once: no refresh needs to have run for the set to be too old.
    h.advance(Duration::from_millis(3500));
    // Even a cached token: the keys it was verified with may have been revoked meanwhile.
    let resp = h.get_with("/api/x", &t).await;
    let headers = assert_error(resp, 503, "temporarily_unavailable").await;
    assert_eq!(headers["retry-after"], "5");
    let ready = h.client.get(h.admin("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    h.idp.set_down(false);
    // The refresher, backing off on the same clock, comes back once time moves on.
    advance_until(h.manual_clock(), Duration::from_millis(250), "the keys are usable again", || async {
        h.client.get(h.admin("/readyz")).send().await.unwrap().status() == 200
    })
    .await;
    echoed(h.get_with("/api/x", &t).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwks_answers_keep_the_last_good_set() {
    let h = Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1", "").await;
    for bad in ["not json", "{\"keys\": 5}", "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AA\"}]}", "[]"] {
        h.idp.override_jwks(Some((200, bad.to_string())));
        let before = h.idp.jwks_fetches();
        advance_until(h.manual_clock(), Duration::from_millis(250), "the bad JWKS was fetched and judged", || async {
            h.idp.jwks_fetches() > before
                && h.status().await["issuers"][0]["last_error"].as_str().is_some_and(|e| e.contains("JWKS"))
        })
        .await;
        let fresh = h.key.token(&h.idp.claims(now(), &format!("u-{bad}"), AUD, ""));
        echoed(h.get_with("/api/x", &fresh).await).await;
    }
    let status: serde_json::Value = h.client.get(h.admin("/status")).send().await.unwrap().json().await.unwrap();
    let err = status["issuers"][0]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("JWKS"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_key_does_not_drop_the_set() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = SigningKey::generate(Alg::RS256, "good").unwrap();
    let mut bad_rsa = key.jwk();
    bad_rsa["kid"] = json!("short");
    bad_rsa["n"] = json!("AQAB");
    let jwks = json!({"keys": [bad_rsa, {"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": key.jwk()["n"], "e": "AQAB"}, key.jwk()]});
    idp.override_jwks(Some((200, jwks.to_string())));
    let upstream = EchoUpstream::start().await.unwrap();
    let cfg = jwtgate::config::Config::parse(&config_text(&idp.discovery_url(), upstream.addr, "", ""), None).unwrap();
    let gw = jwtgate::serve::start(cfg, Arc::new(jwtgate::clock::SystemClock)).await.unwrap();
    let client = http_client();
    let url = format!("http://{}/api/x", gw.proxy_addr);
    let mut status = 0;
    for _ in 0..50 {
        status = client
            .get(&url)
            .bearer_auth(key.token(&idp.claims(now(), "a", AUD, "")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
    // The enc key shares the good key's modulus but must not verify anything.
    let t = key.sign_json(&json!({"alg": "RS256", "kid": "enc", "typ": "at+jwt"}), &idp.claims(now(), "a", AUD, ""));
    assert_eq!(client.get(&url).bearer_auth(t).send().await.unwrap().status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_discovery_path_falls_back_to_the_token_form() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_key(SigningKey::generate(Alg::RS256, "k").unwrap());
    let upstream = EchoUpstream::start().await.unwrap();
    let text = config_text(&idp.legacy_discovery_url(), upstream.addr, "", "");
    let gw = jwtgate::serve::start(
        jwtgate::config::Config::parse(&text, None).unwrap(),
        Arc::new(jwtgate::clock::SystemClock),
    )
    .await
    .unwrap();
    let client = http_client();
    wait_until("ready", || async {
        client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.unwrap().status() == 200
    })
    .await;
    let status: serde_json::Value =
        client.get(format!("http://{}/status", gw.admin_addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["issuers"][0]["discovery_url"], idp.discovery_url());
    let t = key.token(&idp.claims(now(), "a", AUD, ""));
    let resp = client.get(format!("http://{}/api/x", gw.proxy_addr)).bearer_auth(t).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_sizes_are_bounded() {
    let h =
        Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\nmax_response_bytes = 4096", "")
            .await;
    let huge = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(100_000));
    h.idp.override_jwks(Some((200, huge)));
    advance_until(h.manual_clock(), Duration::from_millis(250), "the oversized JWKS was refused", || async {
        h.status().await["issuers"][0]["last_error"].as_str().is_some_and(|e| e.contains("4096"))
    })
    .await;
    let status: serde_json::Value = h.client.get(h.admin("/status")).send().await.unwrap().json().await.unwrap();
    let err = status["issuers"][0]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("more than 4096 bytes"), "{status}");
    echoed(h.get_with("/api/x", &h.token("")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_shortens_the_refresh() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    idp.add_key(SigningKey::generate(Alg::RS256, "k").unwrap());
    idp.set_cache_control(Some("public, max-age=1"));
    let upstream = EchoUpstream::start().await.unwrap();
    let extra = "jwks_refresh_seconds = 300\njwks_refresh_min_seconds = 1";
    let text = config_text(&idp.discovery_url(), upstream.addr, extra, "");
    let clock = Arc::new(ManualClock::at_system_now());
    let _gw = jwtgate::serve::start(jwtgate::config::Config::parse(&text, None).unwrap(), clock.clone()).await.unwrap();
    wait_until("the first load", || async { idp.jwks_fetches() == 1 }).await;
    // 300 s without the header; max-age=1 brings it down to the 1 s floor: one fetch a second
    // of the clock. With max-age=0 the floor holds: still one a second, no spinning.
    let mut last = clock.monotonic();
    for n in 2..=6 {
        if n == 4 {
            idp.set_cache_control(Some("max-age=0"));
        }
        advance_until(&clock, Duration::from_millis(50), "the next refresh", || async { idp.jwks_fetches() >= n })
            .await;
        assert_eq!(idp.jwks_fetches(), n, "more than one refresh in one step");
        let gap = clock.monotonic() - last;
        assert!(gap >= Duration::from_secs(1) && gap <= Duration::from_secs(3), "refresh {n} after {gap:?}");
        last = clock.monotonic();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_stops_cached_tokens_too() {
    let h = Harness::start_manual(
        "jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\njwks_min_refetch_seconds = 0",
        "",
    )
    .await;
    let t = h.token("");
    echoed(h.get_with("/api/x", &t).await).await;
    echoed(h.get_with("/api/x", &t).await).await;
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_token_cache_total{result=\"hit\"}") >= 1.0, "{m}");
    // The IdP revokes the key (rotation): once the refresher has seen it, the cached verdict
    // for the old key's token is not used any more.
    h.idp.add_key(SigningKey::generate(Alg::RS256, "k2_RS256").unwrap());
    h.idp.remove_key("k1_RS256");
    advance_until(h.manual_clock(), Duration::from_millis(250), "the refresher saw the rotation", || async {
        h.status().await["issuers"][0]["kids"] == serde_json::json!(["k2_RS256"])
    })
    .await;
    let resp = h.get_with("/api/x", &t).await;
    assert_eq!(resp.status(), 401, "a token of a removed key was still accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_idp_times_out_and_known_keys_keep_working() {
    let h =
        Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\nfetch_timeout_seconds = 1", "")
            .await;
    // The IdP accepts the request and never answers in time.
    h.idp.set_delay(Duration::from_secs(30));
    let seen = h.idp.requests_seen();
    advance_until(h.manual_clock(), Duration::from_millis(250), "the refresh asked the IdP", || async {
        h.idp.requests_seen() > seen
    })
    .await;
    // Its timeout started before the request went out: a second later it has run out.
    h.advance(Duration::from_secs(1));
    wait_until("the refresh timed out", || async {
        h.status().await["issuers"][0]["last_error"].as_str().is_some_and(|e| e.contains("within 1 s"))
    })
    .await;
    let status: serde_json::Value = h.client.get(h.admin("/status")).send().await.unwrap().json().await.unwrap();
    let err = status["issuers"][0]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("did not answer within 1 s"), "{status}");
    let fresh = h.key.token(&h.idp.claims(now(), "carol", AUD, ""));
    let started = std::time::Instant::now();
    echoed(h.get_with("/api/x", &fresh).await).await;
    assert!(started.elapsed() < Duration::from_secs(1), "the hot path waited for the slow IdP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_never_overwrites_a_newer_key_set() {
    // The background refresh asks for the JWKS, the IdP rotates, an unknown-kid refetch gets
    // the new set at once, and only then does the slow answer with the old set arrive. The
    // new key must stay: one fetch per issuer at a time, a set published only if newer.
    let h = Harness::start_manual("jwks_refresh_seconds = 3\njwks_refresh_min_seconds = 1", "").await;
    let before = h.idp.jwks_fetches();
    h.idp.delay_next_jwks(Duration::from_millis(300));
    advance_until(
        h.manual_clock(),
        Duration::from_millis(250),
        "the background refresh is waiting for its slow answer",
        || async { h.idp.jwks_fetches() > before },
    )
    .await;
    let new_key = h.idp.add_key(SigningKey::generate(Alg::RS256, "k2_RS256").unwrap());
    let first = new_key.token(&h.claims(""));
    echoed(h.get_with("/api/x", &first).await).await;
    // After the slow answer landed — and with the clock standing still, no background refresh
    // can mend things meanwhile: a new token of the new key (no cached verdict) still verifies.
    wait_until("the slow answer landed", || async { h.idp.jwks_answered() == h.idp.jwks_fetches() }).await;
    let second = new_key.token(&h.claims(""));
    echoed(h.get_with("/api/x", &second).await).await;
}

/// Two `[[issuers]]` that discover the same `iss` cannot both judge its tokens: `serve` stays
/// unready, naming both (as `validate` refuses them), so a rollout with that mistake never
/// takes traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_discovering_the_same_iss_keep_the_gateway_unready() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    idp.add_key(SigningKey::generate(Alg::RS256, "k1").unwrap());
    let upstream = EchoUpstream::start().await.unwrap();
    let twin = format!(
        "\n[[issuers]]\nname = \"twin\"\ndiscovery_url = \"{}\"\naudiences = [\"{AUD}\"]\n",
        idp.discovery_url()
    );
    let text = config_text(&idp.discovery_url(), upstream.addr, &twin, "");
    let gw = start_gateway(&text).await;
    let client = http_client();
    wait_until("both issuers have keys", || async { gw.keys().issuers.iter().all(|k| k.is_usable()) }).await;
    let r = client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let problem = body["problem"].as_str().unwrap();
    assert!(problem.contains("issuers[0] and issuers[1]") && problem.contains(&idp.issuer()), "{problem}");
    gw.shutdown().await;
}
