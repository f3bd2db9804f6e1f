//! What a token means: only access tokens open an API, bound tokens stay bound, and the
//! refusals say why — through the proxy and through `validate`.

use crate::support::*;
use serde_json::{json, Value};

async fn refusal(h: &Harness, token: &str) -> (u16, String, String) {
    let r = h.get_with("/api/x", token).await;
    let status = r.status().as_u16();
    let challenge = www_authenticate(r.headers());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status, body["error_description"].as_str().unwrap_or("").to_string(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_never_opens_an_api() {
    let h = Harness::start().await;
    // What Asgardeo issues as an ID token: typ JWT, the client id as aud, a nonce, no scope.
    let mut claims = h.claims("");
    claims["nonce"] = json!("n-0S6_WzA2Mj");
    claims.as_object_mut().unwrap().remove("scope");
    let id_token = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256", "typ": "JWT"}), &claims);
    let (status, desc, challenge) = refusal(&h, &id_token).await;
    assert_eq!(status, 401);
    assert!(desc.contains("access tokens"), "{desc}");
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // No typ at all: refused by default.
    let no_typ = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256"}), &h.claims(""));
    assert_eq!(refusal(&h, &no_typ).await.0, 401);
    // Both spellings of the access-token type pass, in any case.
    for typ in ["at+jwt", "application/AT+JWT"] {
        let t = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256", "typ": typ}), &h.claims(""));
        echoed(h.get_with("/api/x", &t).await).await;
    }
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"wrong_token_type\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(h.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_typ_any_opts_out_but_id_tokens_stay_out() {
    let h = Harness::start_with("access_token_typ = \"any\"", "").await;
    let no_typ = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256"}), &h.claims(""));
    echoed(h.get_with("/api/x", &no_typ).await).await;
    let mut claims = h.claims("");
    claims["nonce"] = json!("abc");
    let id_token = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256", "typ": "JWT"}), &claims);
    assert_eq!(refusal(&h, &id_token).await.0, 401);
    // Even one that claims to be an access token.
    let disguised = h.key.token(&claims);
    assert_eq!(refusal(&h, &disguised).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_is_refused_as_a_bearer_token() {
    let h = Harness::start().await;
    for cnf in [
        json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
    ] {
        let mut claims = h.claims("");
        claims["cnf"] = cnf.clone();
        let t = h.key.token(&claims);
        let (status, desc, _) = refusal(&h, &t).await;
        assert_eq!(status, 401, "{cnf}");
        assert!(desc.contains("bound to a key"), "{desc}");
        // The cached verdict keeps the binding: a second use is refused too.
        assert_eq!(refusal(&h, &t).await.0, 401);
    }
    assert_eq!(h.upstream.hits(), 0);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"sender_constrained\"}"),
        4.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_is_told_what_to_do() {
    let h = Harness::start().await;
    let (status, desc, _) = refusal(&h, "6a1c5f3e-2b8d-4c1e-9f7a-0d2e4b6c8a10").await;
    assert_eq!(status, 401);
    assert!(desc.contains("opaque") && desc.contains("access token type to JWT"), "{desc}");
}

const CLAIMS_CONFIG: &str = r#"claim_headers = { "x-user" = "sub", "x-client" = "client_id", "x-roles" = "roles", "x-tenant" = "org.id", "x-admin" = "is_admin", "x-level" = "level" }

[[routes]]
name = "claims"
path_prefix = "/claims"
claim_headers = { "x-route-only" = "jti", "X-User" = "azp" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_headers_carry_what_the_upstream_needs() {
    let h = Harness::start_with(CLAIMS_CONFIG, "").await;
    let mut claims = h.claims("");
    claims["roles"] = json!(["reader", "writer"]);
    claims["org"] = json!({"id": "o-1", "name": "Acme"});
    claims["is_admin"] = json!(true);
    claims["level"] = json!(3);
    claims["jti"] = json!("j-42");
    let token = h.key.token(&claims);
    let spoof = |r: reqwest::RequestBuilder| {
        r.header("x-user", "mallory").header("X_Tenant", "evil").header("x.roles", "admin").header("x-route-only", "x")
    };
    let echo = echoed(spoof(h.client.get(h.url("/api/x")).bearer_auth(&token)).send().await.unwrap()).await;
    assert_eq!(upstream_header(&echo, "x-user"), ["alice"]);
    assert_eq!(upstream_header(&echo, "x-client"), [AUD]);
    assert_eq!(upstream_header(&echo, "x-roles"), ["reader,writer"]);
    assert_eq!(upstream_header(&echo, "x-tenant"), ["o-1"]);
    assert_eq!(upstream_header(&echo, "x-admin"), ["true"]);
    assert_eq!(upstream_header(&echo, "x-level"), ["3"]);
    assert!(upstream_header(&echo, "x-route-only").is_empty(), "not this route's: {echo}");
    assert!(echo["headers"].get("x_tenant").is_none() && echo["headers"].get("x.roles").is_none(), "{echo}");
    // The route's own entries, and its override of the issuer's x-user.
    let echo = echoed(spoof(h.client.get(h.url("/claims/x")).bearer_auth(&token)).send().await.unwrap()).await;
    assert_eq!(upstream_header(&echo, "x-user"), [AUD]);
    assert_eq!(upstream_header(&echo, "x-route-only"), ["j-42"]);
    // Anonymous route: every client copy removed.
    let echo = echoed(spoof(h.client.get(h.url("/public/x"))).send().await.unwrap()).await;
    for n in ["x-user", "x_tenant", "x.roles", "x-route-only"] {
        assert!(echo["headers"].get(n).is_none(), "{n}: {echo}");
    }
    // Absent claims send no header (the client's copy is gone too).
    let plain = h.token("");
    let echo = echoed(spoof(h.client.get(h.url("/api/x")).bearer_auth(&plain)).send().await.unwrap()).await;
    assert!(upstream_header(&echo, "x-roles").is_empty() && upstream_header(&echo, "x-tenant").is_empty(), "{echo}");
    // A claim that cannot be a header value refuses the request.
    let mut bad = h.claims("");
    bad["roles"] = json!(["a\nb"]);
    let (status, desc, _) = refusal(&h, &h.key.token(&bad)).await;
    assert_eq!(status, 401);
    assert!(desc.contains("claim configured as a header"), "{desc}");
}

#[test]
fn claim_headers_cannot_take_names_jwtgate_sets() {
    for (entry, key) in [
        (r#"claim_headers = { "x-jwt-sub" = "sub" }"#, "claim_headers.x-jwt-sub"),
        (r#"claim_headers = { "X_JWT_Payload" = "sub" }"#, "claim_headers.X_JWT_Payload"),
        (r#"claim_headers = { "authorization" = "sub" }"#, "claim_headers.authorization"),
        (r#"claim_headers = { "x-ok" = "a..b" }"#, "claim_headers.x-ok"),
        (r#"claim_headers = { "bad header" = "sub" }"#, "claim_headers.bad header"),
    ] {
        let text = config_text(
            "http://127.0.0.1:9/t/a/oauth2/token/.well-known/openid-configuration",
            "127.0.0.1:1".parse().unwrap(),
            entry,
            "",
        );
        let e = jwtgate::config::Config::parse(&text, None).unwrap_err();
        assert!(e.problems.iter().any(|p| p.path == format!("issuers[0].{key}")), "{entry}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_explains_what_is_wrong_and_what_to_change() {
    let h = Harness::start().await;
    let dir = temp_dir("sem");
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, config_text(&h.idp.discovery_url(), h.upstream.addr, "", "")).unwrap();

    // Without --route: the token alone (no `no_route` for `/`).
    let (code, v) = validate(&cfg, &[&h.token("")], None).await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["allowed"], true);
    assert!(v["detail"].as_str().unwrap().contains("--route"), "{v}");
    // With --route: the route's scopes too.
    let (code, v) = validate(&cfg, &["--route", "/orders/1", &h.token("")], None).await;
    assert_eq!((code, v["status"].as_i64()), (1, Some(403)), "{v}");

    // A claim check failed on a genuine signature: claims printed, expected beside actual.
    let mut claims = h.claims("");
    claims["aud"] = json!("another-client");
    let (code, v) = validate(&cfg, &[&h.key.token(&claims)], None).await;
    assert_eq!(code, 1);
    assert!(
        v["detail"].as_str().unwrap().contains("aud expected one of [\"test-client\"], got [\"another-client\"]"),
        "{v}"
    );
    assert_eq!(v["explain"]["signature_valid"], true);
    assert_eq!(v["claims"]["aud"], "another-client");
    let mut claims = h.claims("");
    // One reading of the clock: two could straddle a second.
    let exp = now() - 600;
    claims["exp"] = json!(exp);
    let (_, v) = validate(&cfg, &[&h.key.token(&claims)], None).await;
    assert!(v["detail"].as_str().unwrap().contains(&format!("exp was {exp}")), "{v}");
    assert_eq!(v["explain"]["actual"]["exp"], exp);
    // A forged signature: explained, but its claims are not shown as if verified.
    let forged = SigningKey::generate(jwtgate::auth::alg::Alg::RS256, "k1_RS256").unwrap().token(&claims);
    let (_, v) = validate(&cfg, &[&forged], None).await;
    assert_eq!(v["explain"]["signature_valid"], false, "{v}");
    assert!(v["claims"].is_null(), "{v}");

    // Wrong token type: says what to change.
    let no_typ = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256"}), &h.claims(""));
    let (code, v) = validate(&cfg, &[&no_typ], None).await;
    assert_eq!(code, 1);
    assert!(v["detail"].as_str().unwrap().contains("access_token_typ = \"any\""), "{v}");
    let mut id = h.claims("");
    id["nonce"] = json!("n");
    let (_, v) =
        validate(&cfg, &[&h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256", "typ": "JWT"}), &id)], None).await;
    assert!(v["detail"].as_str().unwrap().contains("ID token"), "{v}");
    // An opaque token.
    let (code, v) = validate(&cfg, &["6a1c5f3e-2b8d-4c1e-9f7a-0d2e4b6c8a10"], None).await;
    assert_eq!(code, 1);
    assert!(v["detail"].as_str().unwrap().contains("access token type to JWT"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_401_whether_or_not_it_was_cached() {
    // RS256, exp in 2 s, no leeway, keys stale 2 s after the last good fetch, the IdP killed.
    let h = Harness::start_manual(
        "leeway_seconds = 0\njwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\njwks_max_stale_seconds = 2",
        "",
    )
    .await;
    let now = jwtgate::clock::Clock::now_unix(h.manual_clock());
    let token_with_exp = |exp: i64| {
        let mut c = h.claims("orders:read");
        // On the gateway's clock (frozen at start; real time has moved on since): no leeway.
        c["iat"] = serde_json::json!(now);
        c["nbf"] = serde_json::json!(now);
        c["exp"] = serde_json::json!(exp);
        c["jti"] = serde_json::json!(format!("{:x}", rand::random::<u64>()));
        h.key.token(&c)
    };
    let cached = token_with_exp(now + 2);
    let fresh = token_with_exp(now + 2);
    let live = token_with_exp(now + 3600);
    assert_eq!(h.get_with("/orders/1", &cached).await.status(), 200, "now in the cache");
    h.idp.set_down(true);
    h.advance(std::time::Duration::from_secs(5));
    for (what, token) in [("cached", &cached), ("never cached", &fresh)] {
        let (status, description, challenge) = refusal(&h, token).await;
        assert_eq!(status, 401, "{what}: {description}");
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{what}: {challenge}");
        assert!(description.contains("expired"), "{what}: {description}");
    }
    // A live token meets the stale keys: the outage's 503.
    assert_eq!(h.get_with("/orders/1", &live).await.status(), 503);
}
