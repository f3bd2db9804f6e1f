//! Issue 20 §4: CORS. A browser's preflight on a route with `[routes.cors]` is answered by
//! jwtgate (no token, never forwarded); every answer on such a route, refusals included, grants
//! an allowed origin only; any other `OPTIONS` is judged like any request.

use crate::support::*;
use reqwest::header::HeaderMap;

const ROUTES: &str = r#"
[[routes]]
name = "spa"
path_prefix = "/spa"
[routes.cors]
allowed_origins = ["https://app.example"]
allowed_methods = ["GET", "POST"]
expose_headers = ["X-Request-Id"]
max_age_seconds = 600
allow_credentials = true

[[routes]]
name = "open"
path_prefix = "/open"
auth = "anonymous"
[routes.cors]
allowed_origins = ["*"]
"#;

const DECISION: &str = "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"traefik\"\n";

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_here_and_answers_grant_allowed_origins_only() {
    let h = Harness::start_with(ROUTES, DECISION).await;
    let preflight = |origin: &str| {
        h.client
            .request(reqwest::Method::OPTIONS, h.url("/spa/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let hits = h.upstream.hits();
    let r = preflight("https://app.example").await.unwrap();
    assert_eq!(r.status(), 204, "answered without a token");
    let g = r.headers();
    assert_eq!(header(g, "access-control-allow-origin").as_deref(), Some("https://app.example"));
    assert_eq!(header(g, "access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(header(g, "access-control-allow-methods").as_deref(), Some("GET, POST"));
    assert_eq!(header(g, "access-control-allow-headers").as_deref(), Some("authorization, content-type, dpop"));
    assert_eq!(header(g, "access-control-max-age").as_deref(), Some("600"));
    assert_eq!(header(g, "vary").as_deref(), Some("Origin"));
    // Another origin: answered, but granted nothing (the browser stops there).
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(h.upstream.hits(), hits, "a preflight is never forwarded");

    // The actual requests: granted to the allowed origin, refusals included.
    let token = h.token("");
    let r = h
        .client
        .get(h.url("/spa/orders"))
        .header("origin", "https://app.example")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "access-control-allow-origin").as_deref(), Some("https://app.example"));
    assert_eq!(header(r.headers(), "access-control-expose-headers").as_deref(), Some("x-request-id"));
    let r = h.client.get(h.url("/spa/orders")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(r.headers(), "access-control-allow-origin").as_deref(), Some("https://app.example"));
    assert!(r.headers().contains_key("www-authenticate"));
    let r = h
        .client
        .get(h.url("/spa/orders"))
        .header("origin", "https://evil.example")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(header(r.headers(), "vary").as_deref(), Some("Origin"));
    // OPTIONS that is not a preflight is judged like any request (here: no token, 401).
    let r = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/spa/orders"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(r.headers(), "access-control-allow-origin").as_deref(), Some("https://app.example"));
    // A wildcard route: `*`, nothing varies.
    let r = h.client.get(h.url("/open/x")).header("origin", "https://anyone.example").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "access-control-allow-origin").as_deref(), Some("*"));
    assert!(r.headers().get("vary").is_none());

    // The decision listener: a preflight is allowed without a token, with the grant to copy.
    let r = h
        .client
        .get(format!("http://{}/", h.gw.decision_addr.unwrap()))
        .header("x-forwarded-method", "OPTIONS")
        .header("x-forwarded-uri", "/spa/orders")
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "access-control-allow-origin").as_deref(), Some("https://app.example"));
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"preflight\",route=\"spa\"}"), 2.0);
}

#[test]
fn check_config_refuses_a_wildcard_with_credentials_and_origins_with_paths() {
    assert_first_route_refused(&[
        (
            "[routes.cors]\nallowed_origins = [\"*\"]\nallow_credentials = true",
            "routes[0].cors.allow_credentials",
            "credentials",
        ),
        (
            "[routes.cors]\nallowed_origins = [\"https://app.example/path\"]",
            "routes[0].cors.allowed_origins",
            "not an origin",
        ),
        ("[routes.cors]\nallowed_origins = []", "routes[0].cors.allowed_origins", "at least one"),
        (
            "[routes.cors]\nallowed_origins = [\"https://a.example\"]\nallowed_headers = [\"x y\"]",
            "routes[0].cors.allowed_headers",
            "HTTP token",
        ),
    ]);
}
