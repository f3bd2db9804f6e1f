//! The decision listener, and the one decision core behind all three front doors: the proxy,
//! the decision listener and `validate` give the same status and error for the same request.

use crate::support::*;
use jwtgate::auth::alg::Alg;
use serde_json::{json, Value};

const DECISION: &str = "\n[decision]\nlisten = \"127.0.0.1:0\"\n";

fn decision_url(h: &Harness, path: &str) -> String {
    format!("http://{}{path}", h.gw.decision_addr.expect("decision listener"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_listener_judges_the_original_request() {
    let h = Harness::start_with("", DECISION).await;
    let token = h.token("orders:read");
    let ask = |uri: &str, method: &str| {
        h.client.get(decision_url(&h, "/_auth")).header("x-original-uri", uri).header("x-original-method", method)
    };
    // Allowed: 200, empty, with the claim headers; nothing forwarded.
    let r = ask("/orders/7?x=1", "GET").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-jwt-sub"], "alice");
    assert!(r.headers().contains_key("x-jwt-payload"));
    assert!(r.text().await.unwrap().is_empty());
    // The original method matters: POST /orders needs orders:write.
    let r = ask("/orders/7", "POST").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        www_authenticate(r.headers()),
        "Bearer error=\"insufficient_scope\", scope=\"orders:write orders:read\""
    );
    // No token: 401 with the challenge; anonymous route: 200 without claim headers.
    let r = ask("/orders/7", "GET").send().await.unwrap();
    assert_eq!((r.status().as_u16(), www_authenticate(r.headers())), (401, "Bearer realm=\"jwtgate\"".to_string()));
    let r = ask("/public/x", "GET").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("x-jwt-sub"));
    // Path rules apply to the original URI.
    let r = ask("/public/../orders/7", "GET").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = ask("/nowhere", "GET").send().await.unwrap();
    assert_eq!(r.status(), 404);
    // ingress-nginx (absolute URL), Traefik (X-Forwarded-*), Envoy (its own method and path).
    let r = h
        .client
        .get(decision_url(&h, "/auth"))
        .header("x-original-url", "https://api.example.com/orders/7")
        .header("x-original-method", "GET")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = h
        .client
        .get(decision_url(&h, "/"))
        .header("x-forwarded-method", "PUT")
        .header("x-forwarded-uri", "/orders/7")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "PUT needs orders:write");
    let r = h.client.get(decision_url(&h, "/orders/7")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = ask("/orders/7", "GET").bearer_auth(&token).header("x-big", "a".repeat(70_000)).send().await.unwrap();
    assert_eq!(r.status(), 431, "the proxy's header limit");
    assert_eq!(h.upstream.hits(), 0, "the decision listener forwards nothing");
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_requests_total{listener=\"decision\",outcome=\"allowed\",route=\"orders-read\"}"),
        3.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"allowed\",route=\"orders-read\"}"),
        0.0,
        "{m}"
    );
}

/// The decision listener's config with `front_proxy` set.
fn decision_behind(front: &str) -> String {
    format!("{DECISION}front_proxy = \"{front}\"\n")
}

/// Each front proxy's subrequest as that proxy builds it, with a client's own header of another
/// convention copied in (Traefik and Caddy copy every client header; ingress-nginx leaves
/// `X-Original-URI` to the client). The client asks `DELETE /orders/7` and names `/public/x`.
fn spoofed(front: &str) -> Vec<(&'static str, &'static str)> {
    match front {
        "traefik" | "caddy" => vec![
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/orders/7"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "api.example.com"),
            ("x-original-uri", "/public/x"),
            ("x-original-method", "GET"),
        ],
        "ingress-nginx" => vec![
            ("x-original-url", "http://api.example.com/orders/7"),
            ("x-original-method", "DELETE"),
            ("x-original-uri", "/public/x"),
        ],
        "nginx" => vec![
            ("x-original-uri", "/orders/7"),
            ("x-original-method", "DELETE"),
            ("x-forwarded-uri", "/public/x"),
            ("x-forwarded-method", "GET"),
        ],
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_name_the_path_that_is_judged() {
    for front in ["traefik", "caddy", "ingress-nginx", "nginx"] {
        // Named: only that proxy's headers are read; DELETE /orders/7 has no route (404), and
        // with a read token on a real route the client's path is never what is judged.
        let h = Harness::start_with("", &decision_behind(front)).await;
        let token = h.token("orders:read");
        let mut ask = h.client.get(decision_url(&h, "/auth")).bearer_auth(&token);
        for (k, v) in spoofed(front) {
            ask = ask.header(k, v);
        }
        let r = ask.send().await.unwrap();
        assert_eq!(r.status(), 404, "{front}: judged as DELETE /orders/7, not GET /public/x");
        // The honest subrequest of that proxy still works.
        let honest: Vec<_> = spoofed(front)
            .into_iter()
            .filter(|(k, _)| match front {
                "traefik" | "caddy" => k.starts_with("x-forwarded"),
                "ingress-nginx" => *k != "x-original-uri",
                _ => k.starts_with("x-original"),
            })
            .map(|(k, v)| (k, if v == "DELETE" { "GET" } else { v }))
            .collect();
        let mut ask = h.client.get(decision_url(&h, "/auth")).bearer_auth(&token);
        for (k, v) in &honest {
            ask = ask.header(*k, *v);
        }
        assert_eq!(ask.send().await.unwrap().status(), 200, "{front}: {honest:?}");
        let mut ask = h.client.get(decision_url(&h, "/auth"));
        for (k, v) in &honest {
            ask = ask.header(*k, *v);
        }
        assert_eq!(ask.send().await.unwrap().status(), 401, "{front}: no token");
        // A missing header of the named proxy is a 400, never a judgement of the subrequest.
        let r = h.client.get(decision_url(&h, "/public/x")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{front}");

        // Auto: two conventions together are refused, never judged.
        let h = Harness::start_with("", DECISION).await;
        let mut ask = h.client.get(decision_url(&h, "/auth")).bearer_auth(h.token("orders:read"));
        for (k, v) in spoofed(front) {
            ask = ask.header(k, v);
        }
        let r = ask.send().await.unwrap();
        assert_eq!(r.status(), 400, "{front} under auto");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert!(body["error_description"].as_str().unwrap().contains("front_proxy"), "{body}");
        assert_eq!(h.upstream.hits(), 0);
    }
    // Envoy: the decision request's own method and path, whatever headers it carries.
    let h = Harness::start_with("", &decision_behind("envoy")).await;
    let r = h
        .client
        .delete(decision_url(&h, "/orders/7"))
        .bearer_auth(h.token("orders:read"))
        .header("x-original-uri", "/public/x")
        .header("x-original-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `validate`'s status and error for `method path` with `token`.
async fn validated(cfg: &std::path::Path, path: &str, method: &str, token: &str) -> (u16, Value) {
    let (_, v) = validate(cfg, &["--route", path, "--method", method, token], None).await;
    (v["status"].as_u64().unwrap_or(0) as u16, v["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_the_proxy_and_the_decision_listener_agree() {
    let h = Harness::start_with("", DECISION).await;
    let dir = temp_dir("diff");
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, config_text(&h.idp.discovery_url(), h.upstream.addr, "", "")).unwrap();
    let mut expired = h.claims("orders:read");
    expired["exp"] = json!(now() - 600);
    let stranger = SigningKey::generate(Alg::RS256, "unknown-kid").unwrap();
    let tokens = [
        ("valid", h.token("orders:read orders:write")),
        ("expired", h.key.token(&expired)),
        ("wrong scope", h.token("profile")),
        ("unknown kid", stranger.token(&h.claims("orders:read"))),
        ("garbage", "abc.def.ghi".to_string()),
    ];
    let requests =
        [("/orders/1", "GET"), ("/orders", "POST"), ("/public/x", "GET"), ("/nowhere", "GET"), ("/api/x", "DELETE")];
    for (what, token) in &tokens {
        for (path, method) in requests {
            let m = http::Method::from_bytes(method.as_bytes()).unwrap();
            let proxy = h.client.request(m.clone(), h.url(path)).bearer_auth(token).send().await.unwrap();
            let proxy_status = proxy.status().as_u16();
            let proxy_error = proxy.json::<Value>().await.map(|v| v["error"].clone()).unwrap_or(Value::Null);
            let decision = h
                .client
                .get(decision_url(&h, "/_auth"))
                .header("x-original-uri", path)
                .header("x-original-method", method)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let decision_status = decision.status().as_u16();
            let decision_error = decision.json::<Value>().await.map(|v| v["error"].clone()).unwrap_or(Value::Null);
            let (validate_status, validate_error) = validated(&cfg, path, method, token).await;
            // The proxy's allowed answers are the upstream's (200, no error body).
            let proxy_error = if proxy_status == 200 { Value::Null } else { proxy_error };
            let seen =
                [(proxy_status, &proxy_error), (decision_status, &decision_error), (validate_status, &validate_error)];
            assert!(
                seen.iter().all(|s| *s == seen[0]),
                "{what} {method} {path}: proxy {:?}, decision {:?}, validate {:?}",
                seen[0],
                seen[1],
                seen[2]
            );
        }
    }
}
