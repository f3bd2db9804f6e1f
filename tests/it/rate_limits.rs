//! Issue 20 §5: rate limits per caller — a GCRA bucket per `sub`, `client_id`, address or
//! token, checked after authentication; 429 with `Retry-After` and the IETF `RateLimit` /
//! `RateLimit-Policy` fields; time on the gateway's clock (moved by hand here).

use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

const ROUTES: &str = r#"
[[routes]]
name = "by-sub"
path_prefix = "/by-sub"
[routes.rate_limit]
key = "sub"
requests_per_second = 1
burst = 3

[[routes]]
name = "by-ip"
path_prefix = "/by-ip"
auth = "anonymous"
[routes.rate_limit]
key = "ip"
requests_per_second = 0.5
burst = 2

[[routes]]
name = "by-client"
path_prefix = "/by-client"
[routes.rate_limit]
key = "client_id"
requests_per_second = 1
burst = 1
"#;

const DECISION: &str = "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"traefik\"\n";

fn token_for(h: &Harness, sub: &str, client_id: &str) -> String {
    let mut c = h.idp.claims(now(), sub, AUD, "");
    c["client_id"] = json!(client_id);
    h.key.token(&c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_has_a_bucket_and_the_429_says_when_to_come_back() {
    let h = Harness::start_manual(ROUTES, DECISION).await;
    let alice = token_for(&h, "alice", "app-1");
    let bob = token_for(&h, "bob", "app-1");
    for _ in 0..3 {
        assert_eq!(h.get_with("/by-sub/x", &alice).await.status(), 200);
    }
    let hits = h.upstream.hits();
    let r = h.get_with("/by-sub/x", &alice).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["ratelimit-policy"], "\"route\";q=3;w=3");
    assert_eq!(r.headers()["ratelimit"], "\"route\";r=0;t=1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(h.upstream.hits(), hits, "a limited request is not forwarded");
    assert_eq!(h.get_with("/by-sub/x", &bob).await.status(), 200, "bob has a bucket of his own");
    // A second on the gateway's clock: one more request for alice, not two.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.get_with("/by-sub/x", &alice).await.status(), 200);
    assert_eq!(h.get_with("/by-sub/x", &alice).await.status(), 429);

    // client_id: alice and bob of the same application share one.
    assert_eq!(h.get_with("/by-client/x", &alice).await.status(), 200);
    assert_eq!(h.get_with("/by-client/x", &bob).await.status(), 429);
    assert_eq!(h.get_with("/by-client/x", &token_for(&h, "bob", "app-2")).await.status(), 200);

    // An anonymous route limited by address.
    for expected in [200, 200, 429] {
        assert_eq!(h.client.get(h.url("/by-ip/x")).send().await.unwrap().status(), expected);
    }
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"rate_limited\",route=\"by-sub\"}"), 2.0);
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"rate_limited\",route=\"by-ip\"}"), 1.0);

    // The decision listener keys addresses on the last X-Forwarded-For entry (the one its front
    // proxy added): a client naming other addresses before it gains nothing.
    let ask = |xff: &str| {
        h.client
            .get(format!("http://{}/", h.gw.decision_addr.unwrap()))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/by-ip/x")
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(ask("203.0.113.7").await.unwrap().status(), 200);
    assert_eq!(ask("198.51.100.1, 203.0.113.7").await.unwrap().status(), 200);
    let r = ask("198.51.100.2, 203.0.113.7").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(ask("203.0.113.8").await.unwrap().status(), 200, "another client");
}

#[test]
fn check_config_refuses_limits_that_cannot_work() {
    assert_first_route_refused(&[
        (
            "auth = \"anonymous\"\n[routes.rate_limit]\nkey = \"sub\"\nrequests_per_second = 1",
            "routes[0].rate_limit.key",
            "only \"ip\"",
        ),
        (
            "[routes.rate_limit]\nkey = \"sub\"\nrequests_per_second = 1e-300",
            "routes[0].rate_limit.requests_per_second",
            "0.001..",
        ),
        (
            "[routes.rate_limit]\nkey = \"sub\"\nrequests_per_second = 0",
            "routes[0].rate_limit.requests_per_second",
            "above 0",
        ),
        (
            "[routes.rate_limit]\nkey = \"sub\"\nrequests_per_second = 5\nburst = 0",
            "routes[0].rate_limit.burst",
            "1..1000000",
        ),
        (
            "[routes.rate_limit]\nkey = \"ip\"\nrequests_per_second = 5\nmax_keys = 0",
            "routes[0].rate_limit.max_keys",
            "1..10000000",
        ),
        ("[routes.rate_limit]\nkey = \"user\"\nrequests_per_second = 5", "routes[0].rate_limit.key", "unknown variant"),
    ]);
}
