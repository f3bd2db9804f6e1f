//! Issue 21: opaque tokens, judged by the issuer's RFC 7662 introspection endpoint (the fake
//! organization's, in Asgardeo's shape: UUID tokens, Basic client authentication, `active`,
//! `token_type: Bearer`, the token's claims) — cached, shared, bounded, and never an accept on
//! failure. `oidc_provider.rs` runs the same against a real, certified authorization server.

use crate::support::*;
use base64::Engine;
use jwtgate::clock::Clock;
use serde_json::{json, Value};
use std::time::Duration;

const CLIENT: &str = "jwtgate-rs";
const SECRET: &str = "s3cr3t:with/odd&chars";

/// A folder holding the introspection client's secret file.
fn secret_file() -> std::path::PathBuf {
    let dir = temp_dir("introspect");
    let f = dir.join("client-secret");
    std::fs::write(&f, format!("{SECRET}\n")).unwrap();
    f
}

/// `[[issuers]]` lines: `issuer_lines`, then `[issuers.introspection]` with `lines`.
fn introspecting(issuer_lines: &str, lines: &str) -> String {
    format!(
        "{issuer_lines}\n[issuers.introspection]\nclient_id = \"{CLIENT}\"\nclient_secret_file = {:?}\n{lines}\n",
        secret_file().display().to_string()
    )
}

async fn harness(issuer_lines: &str, lines: &str, server_extra: &str) -> Harness {
    let h = Harness::start_with(&introspecting(issuer_lines, lines), server_extra).await;
    h.idp.set_introspection_client(CLIENT, SECRET);
    h
}

async fn manual_harness(issuer_lines: &str, lines: &str) -> Harness {
    // Connections outlive the clock's jumps: a keep-alive connection closed by the idle timeout
    // as a request arrives would make the client retry it, and the gateway ask twice.
    let long = "idle_timeout_seconds = 86400\nheader_read_timeout_seconds = 3600";
    let h = Harness::start_manual(&introspecting(issuer_lines, lines), long).await;
    h.idp.set_introspection_client(CLIENT, SECRET);
    h
}

/// An opaque token at the fake issuer with the harness's claims and `scope`, changed by `extra`.
fn opaque(h: &Harness, scope: &str, extra: Value) -> String {
    let mut c = h.claims(scope);
    for (k, v) in extra.as_object().unwrap() {
        match v {
            Value::Null => {
                c.as_object_mut().unwrap().remove(k);
            }
            v => c[k] = v.clone(),
        }
    }
    h.idp.issue_opaque(c)
}

fn reason(m: &str, r: &str) -> f64 {
    metric(m, &format!("jwtgate_token_rejections_total{{issuer=\"asgardeo\",reason=\"{r}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_opaque_token_passes_with_its_scopes_and_the_answer_reaches_the_upstream() {
    let h = harness("", "", "").await;
    let token = opaque(&h, "openid orders:read", json!({"sub": "carol"}));
    let r = h.get_with("/orders/1", &token).await;
    assert_eq!(r.status(), 200);
    let echo = echoed(r).await;
    assert_eq!(upstream_header(&echo, "x-jwt-sub"), ["carol"]);
    // `x-jwt-payload` carries the introspection answer's claims, base64url JSON: one shape
    // for the upstream whichever way the token was verified.
    let payload = upstream_header(&echo, "x-jwt-payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&payload[0]).expect("base64url"),
    )
    .expect("json");
    assert_eq!(claims["active"], true);
    assert_eq!(claims["client_id"], AUD);
    assert_eq!(claims["scope"], "openid orders:read");
    assert_eq!(h.idp.introspections(), 1);

    // The scopes are the answer's: without orders:read, 403 with the route's challenge.
    let weak = opaque(&h, "openid", json!({}));
    let r = h.get_with("/orders/1", &weak).await;
    assert_eq!(r.status(), 403);
    assert!(www_authenticate(r.headers()).contains("scope=\"orders:read\""));
    // Unknown to the issuer: 401 inactive.
    let r = h.get_with("/orders/1", "6a1c5f3e-2b8d-4c1e-9f7a-0d2e4b6c8a10").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert!(body["error_description"].as_str().unwrap().contains("not active"));
    // Characters no RFC 6750 token has: refused without asking anyone.
    let calls = h.idp.introspections();
    assert_eq!(h.get_with("/orders/1", "abc,def").await.status(), 401);
    assert_eq!(h.idp.introspections(), calls);
    // A JWT is still verified locally, by its own iss: no call.
    assert_eq!(h.get_with("/orders/1", &h.token("orders:read")).await.status(), 200);
    assert_eq!(h.idp.introspections(), calls);

    let m = h.metrics().await;
    assert_eq!(reason(&m, "inactive"), 1.0);
    assert_eq!(metric(&m, "jwtgate_introspection_requests_total{issuer=\"asgardeo\",result=\"active\"}"), 2.0);
    assert_eq!(metric(&m, "jwtgate_introspection_requests_total{issuer=\"asgardeo\",result=\"inactive\"}"), 1.0);
    assert_eq!(metric(&m, "jwtgate_introspection_duration_seconds_count{issuer=\"asgardeo\"}"), 3.0);
    let status = h.status().await;
    let x = &status["issuers"][0]["introspection"];
    assert_eq!(x["endpoint"], h.idp.introspection_endpoint(), "the discovery document's endpoint: {x}");
    assert_eq!(x["client_id"], CLIENT);
    assert_eq!(x["auth"], "client_secret_basic");
    assert_eq!(x["cache_entries"], 3);
    assert_eq!(x["in_flight"], 0);
    assert!(x["last_error"].is_null());
    for text in [status.to_string(), m] {
        assert!(!text.contains("s3cr3t"), "the client secret never shows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_active_until_cache_seconds_or_exp_and_refused_for_negative_cache_seconds() {
    let h = manual_harness("leeway_seconds = 0", "cache_seconds = 60\nnegative_cache_seconds = 5").await;
    // Times on the gateway's clock (it stands still while real time moves on).
    let at = h.manual_clock().now_unix();
    let token = opaque(&h, "orders:read", json!({"iat": at, "nbf": at}));
    for _ in 0..5 {
        assert_eq!(h.get_with("/orders/1", &token).await.status(), 200);
    }
    assert_eq!(h.idp.introspections(), 1, "one call, then the cached answer");
    // Revoked at the issuer: the cached answer holds until cache_seconds have passed.
    h.idp.revoke_opaque(&token);
    h.advance(Duration::from_secs(59));
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 200);
    assert_eq!(h.idp.introspections(), 1);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 401);
    assert_eq!(h.idp.introspections(), 2);
    // The refusal is cached for negative_cache_seconds.
    for _ in 0..3 {
        assert_eq!(h.get_with("/orders/1", &token).await.status(), 401);
    }
    assert_eq!(h.idp.introspections(), 2);
    h.advance(Duration::from_secs(6));
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 401);
    assert_eq!(h.idp.introspections(), 3);

    // Never past exp: a token expiring in 10 s is asked about again after 10 s, and refused.
    let at = h.manual_clock().now_unix();
    let short = opaque(&h, "orders:read", json!({"exp": at + 10, "iat": at, "nbf": at}));
    assert_eq!(h.get_with("/orders/1", &short).await.status(), 200);
    let calls = h.idp.introspections();
    h.advance(Duration::from_secs(11));
    let r = h.get_with("/orders/1", &short).await;
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(r.headers()).contains("expired"));
    assert_eq!(h.idp.introspections(), calls + 1);

    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_introspection_cache_total{issuer=\"asgardeo\",result=\"hit\"}"), 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_one_new_token_make_one_call() {
    // At the decision listener: a thousand requests judged at once, nothing forwarded.
    let h =
        harness("", "max_concurrent = 2", "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"nginx\"\n").await;
    h.idp.set_delay(Duration::from_millis(300));
    let token = opaque(&h, "orders:read", json!({}));
    let decision = h.gw.decision_addr.unwrap();
    // A thousand connections, opened a hundred at a time (a thousand handshakes at once overflow
    // loopback's input queue, and a dropped SYN waits a second: the requests would no longer
    // arrive together); then every request written at once, while the introspection takes 300 ms.
    let mut conns = Vec::with_capacity(1000);
    for _ in 0..10 {
        let batch = (0..100).map(|_| tokio::net::TcpStream::connect(decision));
        for c in futures_util::future::join_all(batch).await {
            conns.push(c.expect("connect"));
        }
    }
    let request = format!(
        "GET /_auth HTTP/1.1\r\nHost: gw\r\nX-Original-URI: /orders/1\r\nX-Original-Method: GET\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let asked = conns.into_iter().map(|mut c| {
        let request = request.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            c.write_all(request.as_bytes()).await.expect("write");
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).await.expect("read");
            String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
        })
    });
    for answer in futures_util::future::join_all(asked).await {
        assert_eq!(answer.unwrap(), "HTTP/1.1 200 OK");
    }
    assert_eq!(h.idp.introspections(), 1, "everyone waited for the one call");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_introspection_requests_total{issuer=\"asgardeo\",result=\"active\"}"), 1.0);

    // Ten new tokens at once, two calls at a time at most (each call 100 ms: five rounds).
    h.idp.set_delay(Duration::from_millis(100));
    let tokens: Vec<String> = (0..10).map(|_| opaque(&h, "orders:read", json!({}))).collect();
    let mut tasks = Vec::new();
    for t in &tokens {
        let (client, url, token) = (h.client.clone(), h.url("/orders/1"), t.clone());
        tasks.push(tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.map(|r| r.status()) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("request"), 200);
    }
    assert_eq!(h.idp.introspections(), 11);
    assert_eq!(h.idp.introspections_in_flight_max(), 2, "max_concurrent bounds the calls in flight");
    assert_eq!(h.status().await["issuers"][0]["introspection"]["in_flight"], 0, "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_tokens_is_held_in_a_fixed_table() {
    let h = harness("", "cache_entries = 16", "").await;
    for i in 0..200 {
        assert_eq!(h.get_with("/api/x", &format!("unknown-{i}")).await.status(), 401);
    }
    let x = h.status().await["issuers"][0]["introspection"].clone();
    assert_eq!(x["cache_capacity"], 16);
    assert!(x["cache_entries"].as_u64().unwrap() <= 16, "{x}");
    assert_eq!(x["in_flight"], 0);
}

async fn assert_unavailable(h: &Harness, token: &str, why: &str) {
    let r = h.get_with("/orders/1", token).await;
    assert_eq!(r.status(), 503, "{why}");
    assert!(r.headers().get("retry-after").is_some(), "{why}");
    assert!(r.headers().get("www-authenticate").is_none(), "{why}: an outage is not a credentials problem");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{why}");
    assert!(body["error_description"].as_str().unwrap().contains("introspection"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_503_are_never_cached_and_never_accept() {
    let h = harness("", "timeout_seconds = 1", "").await;
    let token = opaque(&h, "orders:read", json!({}));
    h.idp.set_down(true);
    assert_unavailable(&h, &token, "the endpoint answers 503").await;
    h.idp.set_down(false);
    let last_error = |s: Value| s["issuers"][0]["introspection"]["last_error"].as_str().unwrap_or("").to_string();
    assert!(last_error(h.status().await).contains("HTTP 503"));
    for (status, body, why) in [
        (200, "not json", "not JSON"),
        (200, "[true]", "not an object"),
        (200, "{\"active\": \"true\"}", "active not a boolean"),
        (200, "{}", "no active"),
        (200, "{\"active\": true, \"exp\": \"tomorrow\"}", "exp not a number"),
        (200, "{\"active\": true, \"exp\": 9999999999, \"token_type\": 7}", "token_type not a string"),
        (302, "", "a redirect"),
        (500, "{\"error\": \"server_error\"}", "a 500"),
    ] {
        h.idp.override_introspection(Some((status, body.to_string())));
        assert_unavailable(&h, &token, why).await;
    }
    h.idp.override_introspection(None);
    // jwtgate's own credentials refused (a rotated secret not rolled out): 503, and said so.
    h.idp.set_introspection_client(CLIENT, "another-secret");
    assert_unavailable(&h, &token, "credentials refused").await;
    let e = last_error(h.status().await);
    assert!(e.contains("HTTP 401") && e.contains("client credentials"), "{e}");
    assert!(!e.contains("s3cr3t"));
    h.idp.set_introspection_client(CLIENT, SECRET);
    // Slower than timeout_seconds.
    h.idp.set_delay(Duration::from_millis(1500));
    assert_unavailable(&h, &token, "too slow").await;
    h.idp.set_delay(Duration::ZERO);
    // Nothing of it was cached: the endpoint back, the token passes.
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 200);
    // Stopped: connections refused.
    let fresh = opaque(&h, "orders:read", json!({}));
    h.idp.stop().await;
    assert_unavailable(&h, &fresh, "the issuer stopped").await;
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 200, "a cached answer still serves");

    let m = h.metrics().await;
    for (result, at_least) in [("bad_status", 3.0), ("malformed", 6.0), ("timeout", 1.0), ("unreachable", 1.0)] {
        let v = metric(&m, &format!("jwtgate_introspection_requests_total{{issuer=\"asgardeo\",result=\"{result}\"}}"));
        assert!(v >= at_least, "{result}: {v}");
    }
    let v = reason(&m, "introspection_unavailable");
    assert!(v >= 12.0, "{v}");
    let v = metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"unavailable\",route=\"orders-read\"}");
    assert!(v >= 12.0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_applies_to_the_answer() {
    let h = harness(
        "leeway_seconds = 5\nclaim_headers = { \"x-client\" = \"client_id\" }",
        "auth = \"client_secret_post\"",
        "",
    )
    .await;
    let t = now();
    for (extra, reason_label) in [
        (json!({"token_type": "refresh_token"}), "wrong_token_type"),
        (json!({"exp": null}), "missing_exp"),
        (json!({"nbf": t + 600}), "not_yet_valid"),
        (json!({"iat": t + 600}), "iat_in_future"),
        (json!({"iss": "https://elsewhere.example/oauth2/token"}), "unknown_issuer"),
        (json!({"aud": "another-client"}), "bad_audience"),
        (json!({"aud": null}), "bad_audience"),
        (json!({"sub": "bad\u{7f}sub"}), "bad_sub"),
    ] {
        let token = opaque(&h, "orders:read", extra.clone());
        let before = reason(&h.metrics().await, reason_label);
        let r = h.get_with("/orders/1", &token).await;
        assert_eq!(r.status(), 401, "{extra}");
        assert!(www_authenticate(r.headers()).contains("invalid_token"), "{extra}");
        assert_eq!(reason(&h.metrics().await, reason_label), before + 1.0, "{extra} → {reason_label}");
    }
    // `iss` absent: nothing to compare; the issuer is the one that introspects.
    let r = h.get_with("/orders/1", &opaque(&h, "orders:read", json!({"iss": null}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(upstream_header(&echoed(r).await, "x-client"), [AUD], "claim headers come from the answer");
    // A token bound to a DPoP key (RFC 9449 §6.2: `cnf.jkt` in the answer) is not a bearer token.
    let bound = opaque(&h, "orders:read", json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}));
    let r = h.get_with("/orders/1", &bound).await;
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(r.headers()).contains("cnf"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_judge_opaque_tokens_by_their_rules_and_the_decision_listener_agrees() {
    // Routes in `server_extra` come before the harness's own: first match wins.
    let server_extra = r#"
[decision]
listen = "127.0.0.1:0"
front_proxy = "nginx"

[[routes]]
name = "admin"
path_prefix = "/admin"
audiences = ["admin-console"]
require_claims = [{ claim = "aut", equals = "APPLICATION_USER" }]
"#;
    let h = harness("", "", server_extra).await;
    let decision = |path: &str, t: &str| {
        h.client
            .get(format!("http://{}/_auth", h.gw.decision_addr.unwrap()))
            .header("x-original-uri", path)
            .header("x-original-method", "GET")
            .bearer_auth(t.to_string())
            .send()
    };
    let user = opaque(&h, "", json!({"aud": ["admin-console", AUD]}));
    let app = opaque(&h, "", json!({"aud": "admin-console", "aut": "APPLICATION"}));
    let api_only = opaque(&h, "", json!({}));
    for (path, token, status) in [
        ("/admin/x", &user, 200),
        ("/admin/x", &app, 403),
        ("/admin/x", &api_only, 401),
        ("/api/x", &api_only, 200),
        ("/api/x", &app, 401),
    ] {
        // Twice each: the first answer is cached, the route's rules apply on every use.
        for _ in 0..2 {
            assert_eq!(h.get_with(path, token).await.status(), status, "proxy {path}");
            assert_eq!(decision(path, token).await.unwrap().status(), status, "decision {path}");
        }
    }
    assert_eq!(h.idp.introspections(), 3, "one call per token, whatever the route or listener");
    let allowed = decision("/admin/x", &user).await.unwrap();
    assert!(allowed.headers().get("x-jwt-payload").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_introspects_a_reload_keeps_the_answers_and_bad_settings_are_refused() {
    let dir = temp_dir("introspect-reload");
    let h = harness("", "", "").await;
    let token = opaque(&h, "orders:read", json!({}));
    assert_eq!(h.get_with("/orders/1", &token).await.status(), 200);
    let cfg = dir.join("jwtgate.toml");
    let text = config_text(&h.idp.discovery_url(), h.upstream.addr, &introspecting("", ""), "log_format = \"json\"");
    std::fs::write(&cfg, &text).unwrap();
    let run = run_jwtgate;
    let cfg_s = cfg.display().to_string();
    assert!(run(&["check-config", "--config", &cfg_s]).status.success());

    // validate introspects too, and says so.
    let out = run(&["validate", "--config", &cfg_s, "--route", "/orders/1", &token]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), &v["verified_by"], &v["allowed"]),
        (Some(0), &json!("introspection"), &json!(true)),
        "{v}"
    );
    assert_eq!(v["claims"]["active"], true);
    let out = run(&["validate", "--config", &cfg_s, "unknown-token"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["verified_by"], "introspection");
    assert!(v["detail"].as_str().unwrap().contains("not active"), "{v}");
    let out = run(&["validate", "--config", &cfg_s, &h.token("")]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified_by"], "signature", "{v}");
    // The issuer down: exit 3, and the detail says what the endpoint did.
    h.idp.set_down(true);
    let out = run(&["validate", "--config", &cfg_s, &token]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), &v["error"]), (Some(3), &json!("temporarily_unavailable")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("introspection"), "{v}");
    h.idp.set_down(false);

    // A gateway from that file: a reload that changes nothing an answer depends on keeps them.
    let (_child, proxy, admin) = spawn_serve(&cfg).await;
    // Ready once discovery (which names the introspection endpoint) and the keys are in.
    wait_until("the spawned gateway is ready", || async {
        h.client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let fresh = opaque(&h, "orders:read", json!({}));
    let get = |t: String| h.client.get(format!("http://{proxy}/orders/1")).bearer_auth(t).send();
    assert_eq!(get(fresh.clone()).await.unwrap().status(), 200);
    let calls = h.idp.introspections();
    std::fs::write(&cfg, text.replace("timeout_seconds = 2", "timeout_seconds = 3")).unwrap();
    let r = h.client.post(format!("http://{admin}/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(fresh.clone()).await.unwrap().status(), 200);
    assert_eq!(h.idp.introspections(), calls, "the answer outlived the reload");

    // Two issuers introspecting: refused, by name.
    let twice_text = {
        let first = text.find("[[routes]]").unwrap();
        let mut t = text.clone();
        t.insert_str(
            first,
            &format!(
                "[[issuers]]\nname = \"b\"\ndiscovery_url = \"https://b.example/.well-known/openid-configuration\"\n{}\n",
                introspecting("", "")
            ),
        );
        t
    };
    std::fs::write(&cfg, &twice_text).unwrap();
    let out = run(&["check-config", "--config", &cfg_s]);
    let err = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("issuers[1].introspection") && err.contains("at most one issuer"), "{err}");

    // A secret file that is gone: check-config names it; the secret itself never shows.
    let gone = text.replace(&secret_dir_of(&text), "/nonexistent/jwtgate");
    std::fs::write(&cfg, &gone).unwrap();
    let out = run(&["check-config", "--config", &cfg_s]);
    let err = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("introspection.client_secret") && err.contains("/nonexistent/jwtgate"), "{err}");
    std::fs::write(&cfg, text.replace("client_secret_file", "# client_secret_file")).unwrap();
    let out = run(&["check-config", "--config", &cfg_s]);
    let err = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client_secret_env or client_secret_file"), "{err}");
}

/// The folder of the secret file named in `text`.
fn secret_dir_of(text: &str) -> String {
    let line = text.lines().find(|l| l.starts_with("client_secret_file")).unwrap();
    let path = line.split('"').nth(1).unwrap();
    std::path::Path::new(path).parent().unwrap().display().to_string()
}
