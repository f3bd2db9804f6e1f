//! Every row of the contract's "What a request gets" table, through real sockets.

use std::time::Duration;

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_with_scope_is_forwarded_with_claim_headers() {
    let h = Harness::start().await;
    let token = h.token("openid orders:read");
    let resp = h.get_with("/orders/7?x=1", &token).await;
    let echo = echoed(resp).await;
    assert_eq!(echo["path"], "/orders/7");
    assert_eq!(echo["query"], "x=1");
    let payload = token.split('.').nth(1).unwrap();
    assert_eq!(upstream_header(&echo, "x-jwt-payload"), vec![payload.to_string()]);
    assert_eq!(upstream_header(&echo, "x-jwt-sub"), vec!["alice".to_string()]);
    assert_eq!(upstream_header(&echo, "authorization"), vec![format!("Bearer {token}")]);
    assert_eq!(h.upstream.hits(), 1);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"allowed\",route=\"orders-read\"}"),
        1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_response_comes_back_unchanged() {
    let h = Harness::start().await;
    let resp = h.get_with("/api/thing", &h.token("")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "1");
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401_with_realm_only() {
    let h = Harness::start().await;
    let resp = h.client.get(h.url("/orders/1")).send().await.unwrap();
    let headers = assert_error(resp, 401, "missing_token").await;
    assert_eq!(www_authenticate(&headers), "Bearer realm=\"jwtgate\"");
    let resp = h.client.get(h.url("/orders/1")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
    let headers = assert_error(resp, 401, "missing_token").await;
    assert_eq!(www_authenticate(&headers), "Bearer realm=\"jwtgate\"");
    assert_eq!(h.upstream.hits(), 0, "a refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bearer_is_400_invalid_request() {
    let h = Harness::start().await;
    let token = h.token("orders:read");
    for value in ["Bearer", "Bearer    ", &format!("Bearer {token} {token}")] {
        let resp = h.client.get(h.url("/orders/1")).header("authorization", value).send().await.unwrap();
        let headers = assert_error(resp, 400, "invalid_request").await;
        assert_eq!(www_authenticate(&headers), "Bearer error=\"invalid_request\"", "for {value:?}");
    }
    let resp = h
        .client
        .get(h.url("/orders/1"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_request").await;
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_scheme_is_case_insensitive_and_spacing_tolerant() {
    let h = Harness::start().await;
    let token = h.token("orders:read");
    for value in [format!("bearer {token}"), format!("BEARER   {token}"), format!("  Bearer {token}  ")] {
        let resp = h.client.get(h.url("/orders/1")).header("authorization", value).send().await.unwrap();
        echoed(resp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_400_and_never_forwarded() {
    let h = Harness::start().await;
    let token = h.token("orders:read");
    for path in
        ["/public/../orders/1", "/public/%2e%2e/orders", "/public/./x", "/public/%2E/x", "/public%2f..%2forders"]
    {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw(h.gw.proxy_addr, &req).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("invalid_request"), "{path}: {body}");
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_token_is_401_with_description() {
    let h = Harness::start().await;
    let mut token = h.token("orders:read");
    token.push('A');
    let resp = h.get_with("/orders/1", &token).await;
    let headers = assert_error(resp, 401, "invalid_token").await;
    let challenge = www_authenticate(&headers);
    assert!(challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""), "{challenge}");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_naming_required_scopes() {
    let h = Harness::start().await;
    let resp = h.get_with("/orders/1", &h.token("openid profile")).await;
    let headers = assert_error(resp, 403, "insufficient_scope").await;
    assert_eq!(www_authenticate(&headers), "Bearer error=\"insufficient_scope\", scope=\"orders:read\"");
    // Two required scopes: both named, both needed.
    let resp = h.client.post(h.url("/orders")).bearer_auth(h.token("orders:write")).send().await.unwrap();
    let headers = assert_error(resp, 403, "insufficient_scope").await;
    assert_eq!(www_authenticate(&headers), "Bearer error=\"insufficient_scope\", scope=\"orders:write orders:read\"");
    let resp = h.client.post(h.url("/orders")).bearer_auth(h.token("orders:read orders:write")).send().await.unwrap();
    echoed(resp).await;
    assert_eq!(h.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_sharing_only_a_prefix_is_refused() {
    let h = Harness::start().await;
    for scope in ["orders:readonly", "orders", "orders:rea", "ORDERS:READ", "xorders:read"] {
        let resp = h.get_with("/orders/1", &h.token(scope)).await;
        assert_eq!(resp.status(), 403, "{scope}");
    }
    // scp as an array works as well as the scope string.
    let mut claims = h.claims("");
    claims["scp"] = json!(["orders:read"]);
    echoed(h.get_with("/orders/1", &h.key.token(&claims)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_and_routes_match_whole_segments() {
    let h = Harness::start().await;
    let token = h.token("orders:read");
    let resp = h.get_with("/nothing-here", &token).await;
    assert_error(resp, 404, "no_route").await;
    let resp = h.get_with("/ordersX", &token).await;
    assert_eq!(resp.status(), 404);
    // Method mismatch is 404 too: there is no 405.
    let resp = h.client.delete(h.url("/orders/1")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_or_doubled_paths_cannot_dodge_a_protected_route() {
    let h = Harness::start().await;
    for path in ["/%6frders/1", "//orders/1", "/orders%2F1"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, _, _) = raw(h.gw.proxy_addr, &req).await;
        assert_eq!(status, 401, "{path} must be treated as /orders");
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_route_passes_without_token() {
    let h = Harness::start().await;
    let resp = h.client.get(h.url("/public/x")).send().await.unwrap();
    let echo = echoed(resp).await;
    assert!(upstream_header(&echo, "x-jwt-payload").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_is_502() {
    let h = Harness::start().await;
    h.upstream.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = h.get_with("/api/x", &h.token("")).await;
    assert_error(resp, 502, "bad_gateway").await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"upstream_error\",route=\"any\"}"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_too_slow_is_504() {
    // The response timeout (2 s) runs on the gateway's clock: moved past it, not waited for.
    let h = Harness::start_manual("", "").await;
    h.upstream.set_delay(Duration::from_secs(60));
    let request = h.client.get(h.url("/api/x")).bearer_auth(h.token("")).send();
    let resp =
        advance_until_answered(h.manual_clock(), Duration::from_millis(250), "the upstream timeout", request).await;
    assert_error(resp.unwrap(), 504, "gateway_timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_never_loaded_is_503_with_retry_after() {
    let idp = FakeIssuer::start("down").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    idp.set_down(true);
    let upstream = EchoUpstream::start().await.unwrap();
    let text = config_text(&idp.discovery_url(), upstream.addr, "", "");
    // The refresher's retries run on the gateway's clock: moved, not waited for.
    let clock = std::sync::Arc::new(ManualClock::at_system_now());
    let config = jwtgate::config::Config::parse(&text, None).unwrap();
    let gw = jwtgate::serve::start(config, clock.clone()).await.unwrap();
    let client = http_client();
    let ready = client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let token = key.token(&idp.claims(now(), "a", AUD, "orders:read"));
    let resp = client.get(format!("http://{}/orders/1", gw.proxy_addr)).bearer_auth(&token).send().await.unwrap();
    let headers = assert_error(resp, 503, "temporarily_unavailable").await;
    assert!(headers.contains_key("retry-after"));
    assert_eq!(upstream.hits(), 0);
    // The IdP comes back: the same token is accepted (the background refresher retries).
    idp.set_down(false);
    advance_until(&clock, Duration::from_millis(250), "the gateway recovers after the IdP came back", || async {
        let r = client.get(format!("http://{}/orders/1", gw.proxy_addr)).bearer_auth(&token).send().await.unwrap();
        r.status() == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signals_an_sre_alerts_on_are_exported() {
    let h = Harness::start().await;
    // Refusal series exist before the first refusal (rate() sees the first one).
    let m = h.metrics().await;
    for series in [
        "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"expired\"} 0",
        "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"dpop_replayed\"} 0",
        "jwtgate_token_rejections_total{issuer=\"\",reason=\"missing_token\"} 0",
    ] {
        assert!(m.contains(series), "{series}: {m}");
    }
    let token = h.token("");
    for status in ["200", "404", "500", "503"] {
        let r = h.client.get(h.url("/api/x")).bearer_auth(&token).header("x-echo-status", status).send().await.unwrap();
        assert_eq!(r.status().as_str(), status, "the upstream's answer comes back unchanged");
    }
    let m = h.metrics().await;
    for (class, n) in [("1xx", 0.0), ("2xx", 1.0), ("3xx", 0.0), ("4xx", 1.0), ("5xx", 2.0)] {
        assert_eq!(metric(&m, &format!("jwtgate_upstream_responses_total{{class=\"{class}\"}}")), n, "{class}: {m}");
    }
    // An upstream 500 is still an allowed request as far as jwtgate's decision goes.
    let allowed = "jwtgate_requests_total{listener=\"proxy\",outcome=\"allowed\",route=\"any\"}";
    assert_eq!(metric(&m, allowed), 4.0, "{m}");
    // Keys: how long until they go stale (the default 86400 s, just refreshed).
    let left = metric(&m, "jwtgate_jwks_seconds_until_stale{issuer=\"asgardeo\"}");
    assert!(left > 86_000.0 && left <= 86_400.0, "{left}");
    // The process itself.
    for family in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(metric(&m, family) > 0.0, "{family}: {m}");
    }
    assert!(m.contains("\nprocess_cpu_seconds_total "), "{m}");
    // A gateway that does not run the key-manager sync exports none of its series.
    assert!(!m.contains("jwtgate_km_sync_"), "{m}");
    // The upstream's share of a request's time, apart from jwtgate's: four answers so far; a
    // slow one shows in both histograms, and the difference is jwtgate's own time.
    let upstream = "jwtgate_upstream_duration_seconds_count{route=\"any\"}";
    assert_eq!(metric(&m, upstream), 4.0, "{m}");
    assert!(!m.contains("jwtgate_upstream_duration_seconds_count{route=\"\"}"), "nothing unrouted goes upstream");
    h.upstream.set_delay(Duration::from_millis(300));
    let r = h.client.get(h.url("/api/x")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    h.upstream.set_delay(Duration::ZERO);
    let m = h.metrics().await;
    let upstream_sum = metric(&m, "jwtgate_upstream_duration_seconds_sum{route=\"any\"}");
    let total_sum = metric(&m, "jwtgate_request_duration_seconds_sum{listener=\"proxy\",route=\"any\"}");
    assert!(upstream_sum >= 0.3, "{upstream_sum}");
    assert!(total_sum >= upstream_sum && total_sum - upstream_sum < 0.25, "{total_sum} vs {upstream_sum}");
    assert_eq!(metric(&m, "jwtgate_upstream_duration_seconds_bucket{route=\"any\",le=\"0.25\"}"), 4.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_an_id_that_the_api_and_the_client_both_see() {
    // Off (the default): a client's id passes like any header, none is made.
    let h = Harness::start().await;
    let r = h.client.get(h.url("/public/x")).send().await.unwrap();
    assert!(!r.headers().contains_key("x-request-id"));
    assert!(upstream_header(&echoed(r).await, "x-request-id").is_empty());
    let r = h.client.get(h.url("/public/x")).header("x-request-id", "abc").send().await.unwrap();
    assert_eq!(upstream_header(&echoed(r).await, "x-request-id"), ["abc"]);
    let h = Harness::start_with("", "request_id = true").await;
    let token = h.token("");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // None sent: one is made, forwarded and returned.
    let r = h.client.get(h.url("/api/x")).bearer_auth(&token).header("traceparent", traceparent).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let echo = echoed(r).await;
    assert_eq!(upstream_header(&echo, "x-request-id"), std::slice::from_ref(&id));
    assert_eq!(upstream_header(&echo, "traceparent"), [traceparent], "trace context passes through");
    // A usable one is kept; an unusable one is replaced, never forwarded.
    let r =
        h.client.get(h.url("/api/x")).bearer_auth(&token).header("x-request-id", "req-42:a/b=").send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42:a/b=");
    assert_eq!(upstream_header(&echoed(r).await, "x-request-id"), ["req-42:a/b="]);
    let r =
        h.client.get(h.url("/api/x")).bearer_auth(&token).header("x-request-id", "evil\"; drop").send().await.unwrap();
    let replaced = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(replaced, "evil\"; drop");
    assert_eq!(upstream_header(&echoed(r).await, "x-request-id"), [replaced]);
    // Refusals carry one too, and two requests never share one.
    let a = h.client.get(h.url("/api/x")).send().await.unwrap();
    let b = h.client.get(h.url("/api/x")).send().await.unwrap();
    assert_eq!(a.status(), 401);
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}
