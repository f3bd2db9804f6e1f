//! Forged, tampered and malformed tokens: each must be a 401 `invalid_token` that never
//! reaches the upstream, and valid edge cases (leeway, `aud` arrays) must pass.

use crate::support::*;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwtgate::auth::alg::Alg;
use serde_json::{json, Value};

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

async fn assert_invalid(h: &Harness, token: &str, what: &str) -> String {
    let resp = h.get_with("/api/x", token).await;
    assert_eq!(resp.status(), 401, "{what} was not refused");
    let challenge = www_authenticate(resp.headers());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{what}: {body}");
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{what}: {challenge}");
    body["error_description"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_refused() {
    let h = Harness::start().await;
    for alg in ["none", "None", "NONE"] {
        let t = format!("{}.", unsigned(&json!({"alg": alg, "kid": "k1_RS256"}), &h.claims("")));
        assert_invalid(&h, &t, alg).await;
        let t = format!("{}.{}", unsigned(&json!({"alg": alg, "kid": "k1_RS256"}), &h.claims("")), b64(b"sig"));
        assert_invalid(&h, &t, alg).await;
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signed_with_the_rsa_public_key_is_refused() {
    let h = Harness::start().await;
    let jwk = h.key.jwk();
    let (n, e) = h.key.rsa_public_components().unwrap();
    // Every form an attacker might use as the "secret": the JWK JSON, n, the n||e bytes.
    let secrets: Vec<Vec<u8>> = vec![jwk.to_string().into_bytes(), n.clone(), [n, e].concat()];
    for secret in secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            let input = unsigned(&json!({"alg": alg, "kid": "k1_RS256"}), &h.claims(""));
            let algo = match alg {
                "HS256" => hmac::HMAC_SHA256,
                "HS384" => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            let tag = hmac::sign(&hmac::Key::new(algo, &secret), input.as_bytes());
            let t = format!("{input}.{}", b64(tag.as_ref()));
            let d = assert_invalid(&h, &t, alg).await;
            assert!(d.contains("alg"), "{d}");
        }
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_outside_the_allow_list_is_refused_even_with_a_valid_signature() {
    let h = Harness::start().await;
    // PS256 with the very same RSA key: a valid signature, but the issuer allows RS256 only.
    let t = h.key.sign_json(&json!({"alg": "PS256", "kid": "k1_RS256", "typ": "at+jwt"}), &h.claims(""));
    let d = assert_invalid(&h, &t, "PS256").await;
    assert!(d.contains("alg"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flipped_signature_and_payload_are_refused() {
    let h = Harness::start().await;
    let t = h.token("");
    let (input, sig) = t.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 0x01;
    let d = assert_invalid(&h, &format!("{input}.{}", b64(&raw)), "flipped signature").await;
    assert!(d.contains("signature"), "{d}");
    // Same signature over a payload with elevated scope.
    let forged = unsigned(&json!({"alg": "RS256", "kid": "k1_RS256", "typ": "at+jwt"}), &h.claims("orders:read admin"));
    assert_invalid(&h, &format!("{forged}.{sig}"), "swapped payload").await;
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_signature_of_all_zeros_is_refused() {
    let h = Harness::start_with("algorithms = [\"ES256\", \"RS256\"]", "").await;
    let ec = h.idp.add_key(SigningKey::generate(Alg::ES256, "ec1").unwrap());
    let good = ec.token(&h.claims(""));
    echoed(h.get_with("/api/x", &good).await).await;
    let input = good.rsplit_once('.').unwrap().0;
    for sig in [vec![0u8; 64], vec![0u8; 0], vec![0u8; 72]] {
        assert_invalid(&h, &format!("{input}.{}", b64(&sig)), "zero ES256 signature").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_key_headers_are_never_key_sources() {
    let h = Harness::start().await;
    let attacker = SigningKey::generate(Alg::RS256, "evil").unwrap();
    let jwks_url = format!("http://{}/evil-jwks", h.upstream.addr);
    for header in [
        json!({"alg": "RS256", "typ": "at+jwt", "jwk": attacker.jwk()}),
        json!({"alg": "RS256", "typ": "at+jwt", "kid": "evil", "jwk": attacker.jwk()}),
        json!({"alg": "RS256", "typ": "at+jwt", "kid": "evil", "jku": jwks_url}),
        json!({"alg": "RS256", "typ": "at+jwt", "kid": "evil", "x5u": jwks_url}),
        json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1_RS256", "jwk": attacker.jwk()}),
    ] {
        let t = attacker.sign_json(&header, &h.claims(""));
        assert_invalid(&h, &t, &header.to_string()).await;
    }
    assert_eq!(h.upstream.hits(), 0, "the gateway fetched or forwarded something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_crit_is_refused() {
    let h = Harness::start().await;
    let t = h.key.sign_json(&json!({"alg": "RS256", "kid": "k1_RS256", "crit": ["exp"], "exp": 1}), &h.claims(""));
    let d = assert_invalid(&h, &t, "crit").await;
    assert!(d.contains("crit"), "{d}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_refused() {
    let h = Harness::start().await;
    let good = h.token("");
    let parts: Vec<&str> = good.split('.').collect();
    let cases = vec![
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("five parts (JWE)", format!("{good}.a.b")),
        ("four parts", format!("{good}.a")),
        ("padded base64", format!("{}=.{}.{}", parts[0], parts[1], parts[2])),
        ("standard base64 alphabet", format!("{}.{}.{}", parts[0], parts[1], parts[2].replace(['-', '_'], "+"))),
        ("non-JSON header", format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2])),
        ("non-JSON payload", format!("{}.{}.{}", parts[0], b64(b"not json"), parts[2])),
        ("array payload", format!("{}.{}.{}", parts[0], b64(b"[1,2]"), parts[2])),
        ("empty segments", "..".to_string()),
        ("garbage", "!!!.###.$$$".to_string()),
    ];
    for (what, t) in cases {
        assert_invalid(&h, &t, what).await;
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_tokens_are_refused_without_decoding() {
    let h = Harness::start_with("", "max_header_bytes = 1048576\nmax_token_bytes = 16384").await;
    let big = "A".repeat(16385);
    let d = assert_invalid(&h, &format!("{big}.{big}.{big}"), "big token").await;
    assert!(d.contains("longer"), "{d}");
    // A 1 MiB token is far over the limit; it is refused (401 or 431), never accepted.
    let huge = "A".repeat(1024 * 1024);
    let resp = h.get_with("/api/x", &huge).await;
    assert!(resp.status() == 401 || resp.status() == 431, "{}", resp.status());
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked() {
    let h = Harness::start().await;
    let mut c = h.claims("");
    c["iss"] = json!(format!("{}/", h.idp.issuer()));
    assert_invalid(&h, &h.key.token(&c), "trailing-slash iss").await;
    let mut c = h.claims("");
    c.as_object_mut().unwrap().remove("iss");
    assert_invalid(&h, &h.key.token(&c), "missing iss").await;
    let mut c = h.claims("");
    c["aud"] = json!("someone-else");
    let d = assert_invalid(&h, &h.key.token(&c), "wrong aud").await;
    assert!(d.contains("audience"), "{d}");
    let mut c = h.claims("");
    c.as_object_mut().unwrap().remove("aud");
    assert_invalid(&h, &h.key.token(&c), "missing aud").await;
    // An aud array containing the configured audience is fine.
    let mut c = h.claims("");
    c["aud"] = json!(["other", AUD]);
    echoed(h.get_with("/api/x", &h.key.token(&c)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_are_checked_with_leeway() {
    let h = Harness::start().await; // leeway 60 s
    let t0 = now();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = h.claims("");
        f(&mut c);
        h.key.token(&c)
    };
    let d = assert_invalid(&h, &with(&|c| c["exp"] = json!(t0 - 120)), "expired").await;
    assert!(d.contains("expired"), "{d}");
    echoed(h.get_with("/api/x", &with(&|c| c["exp"] = json!(t0 - 30))).await).await; // within leeway
    assert_invalid(&h, &with(&|c| c["nbf"] = json!(t0 + 300)), "nbf in the future").await;
    echoed(h.get_with("/api/x", &with(&|c| c["nbf"] = json!(t0 + 30))).await).await;
    assert_invalid(&h, &with(&|c| c["iat"] = json!(t0 + 300)), "iat in the future").await;
    let d = assert_invalid(&h, &with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))), "no exp").await;
    assert!(d.contains("exp"), "{d}");
    assert_invalid(&h, &with(&|c| c["exp"] = json!((t0 + 300).to_string())), "string exp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_token_is_rechecked_for_expiry() {
    // On the gateway's clock, moved past `exp` instead of waiting for it.
    let h = Harness::start_manual("leeway_seconds = 0", "").await;
    let now = jwtgate::clock::Clock::now_unix(h.manual_clock());
    let mut c = h.claims("");
    (c["iat"], c["nbf"], c["exp"]) = (json!(now), json!(now), json!(now + 2));
    let t = h.key.token(&c);
    echoed(h.get_with("/api/x", &t).await).await;
    echoed(h.get_with("/api/x", &t).await).await;
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_token_cache_total{result=\"hit\"}") >= 1.0, "{m}");
    h.advance(std::time::Duration::from_secs(2));
    assert_invalid(&h, &t, "expired cached token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_claim_headers_are_replaced_or_removed() {
    let h = Harness::start().await;
    let t = h.token("");
    let resp = h
        .client
        .get(h.url("/api/x"))
        .bearer_auth(&t)
        .header("x-jwt-payload", "eyJzdWIiOiJhZG1pbiJ9")
        .header("x-jwt-sub", "admin")
        .send()
        .await
        .unwrap();
    let echo = echoed(resp).await;
    assert_eq!(upstream_header(&echo, "x-jwt-payload"), vec![t.split('.').nth(1).unwrap().to_string()]);
    assert_eq!(upstream_header(&echo, "x-jwt-sub"), vec!["alice".to_string()]);
    // On an anonymous route the spoofed copies are removed, not forwarded.
    let resp = h
        .client
        .get(h.url("/public/x"))
        .header("x-jwt-payload", "x")
        .header("x-jwt-sub", "admin")
        .send()
        .await
        .unwrap();
    let echo = echoed(resp).await;
    assert!(upstream_header(&echo, "x-jwt-payload").is_empty());
    assert!(upstream_header(&echo, "x-jwt-sub").is_empty());
    // A token without sub: no x-jwt-sub at all.
    let mut c = h.claims("");
    c.as_object_mut().unwrap().remove("sub");
    let resp =
        h.client.get(h.url("/api/x")).bearer_auth(h.key.token(&c)).header("x-jwt-sub", "admin").send().await.unwrap();
    assert!(upstream_header(&echoed(resp).await, "x-jwt-sub").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_query_string_is_not_a_credential() {
    let h = Harness::start().await;
    let t = h.token("orders:read");
    let resp = h.client.get(h.url(&format!("/orders/1?access_token={t}"))).send().await.unwrap();
    assert_error(resp, 401, "missing_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_by_reason() {
    let h = Harness::start().await;
    let t = format!("{}.", unsigned(&json!({"alg": "none"}), &h.claims("")));
    assert_invalid(&h, &t, "none").await;
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"alg_not_allowed\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"invalid_token\",route=\"any\"}"),
        1.0,
        "{m}"
    );
}
