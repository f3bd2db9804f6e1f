//! Sender-constrained tokens (RFC 9449): a DPoP-bound token works only with a fresh proof
//! signed by its key, for this method and URI, once; every broken proof is a 401 with a DPoP
//! challenge; routes can require bound tokens.

use crate::support::dpop::{b64, DpopClient};
use crate::support::*;
use jwtgate::auth::alg::Alg;
use serde_json::{json, Value};

const ISSUER: &str = r#"algorithms = ["RS256", "ES256"]

[[routes]]
name = "bound"
path_prefix = "/bound"
sender_constrained = true
"#;

async fn send(h: &Harness, path: &str, auth: &str, proof: Option<&str>) -> (u16, String, Value) {
    let mut r = h.client.get(h.url(path)).header("authorization", auth);
    if let Some(p) = proof {
        r = r.header("dpop", p);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = www_authenticate(r.headers());
    (status, challenge, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_with_a_fresh_proof_passes_once_per_proof() {
    let h = Harness::start_with(ISSUER, "").await;
    let c = DpopClient::new(&h);
    let auth = format!("DPoP {}", c.token);
    let htu = h.url("/api/x");
    let proof = c.proof("GET", &htu);
    let (status, _, body) = send(&h, "/api/x", &auth, Some(&proof)).await;
    assert_eq!(status, 200, "{body}");
    // The same proof again: replayed.
    let (status, challenge, body) = send(&h, "/api/x", &auth, Some(&proof)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(challenge.starts_with("DPoP error=\"invalid_dpop_proof\""), "{challenge}");
    assert!(challenge.contains("algs=\"ES256 PS256 EdDSA Ed25519 RS256\""), "{challenge}");
    // A fresh proof: the token's verdict now comes from the cache, the proof is still checked.
    let (status, _, _) = send(&h, "/api/x", &auth, Some(&c.proof("GET", &htu))).await;
    assert_eq!(status, 200);
    // The query is not part of htu.
    let (status, _, _) = send(&h, "/api/x?page=2", &auth, Some(&c.proof("GET", &format!("{htu}?other=1")))).await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_proof_is_refused_with_a_dpop_challenge() {
    let h = Harness::start_with(ISSUER, "").await;
    let c = DpopClient::new(&h);
    let auth = format!("DPoP {}", c.token);
    let htu = h.url("/api/x");
    let other = SigningKey::generate(Alg::ES256, "other").unwrap();
    let mut stale = c.claims("GET", &htu);
    stale["iat"] = json!(now() - 600);
    let mut future = c.claims("GET", &htu);
    future["iat"] = json!(now() + 600);
    let mut wrong_ath = c.claims("GET", &htu);
    wrong_ath["ath"] = json!(b64(b"not the hash"));
    let mut no_jti = c.claims("GET", &htu);
    no_jti.as_object_mut().unwrap().remove("jti");
    let mut private = c.header();
    private["jwk"]["d"] = json!("c2VjcmV0");
    let mut wrong_typ = c.header();
    wrong_typ["typ"] = json!("JWT");
    let mut other_header = c.header();
    other_header["jwk"] = other.jwk();
    let none = format!(
        "{}.{}.",
        b64(json!({"typ": "dpop+jwt", "alg": "none", "jwk": c.header()["jwk"]}).to_string().as_bytes()),
        b64(c.claims("GET", &htu).to_string().as_bytes())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong htm", c.proof("POST", &htu), "dpop_htm"),
        ("wrong htu", c.proof("GET", &h.url("/api/y")), "dpop_htu"),
        ("stale iat", c.proof_with(c.header(), stale), "dpop_iat"),
        ("future iat", c.proof_with(c.header(), future), "dpop_iat"),
        ("wrong ath", c.proof_with(c.header(), wrong_ath), "dpop_ath"),
        ("no jti", c.proof_with(c.header(), no_jti), "dpop_jti"),
        ("private key in jwk", c.proof_with(private, c.claims("GET", &htu)), "dpop_private_key"),
        ("typ", c.proof_with(wrong_typ, c.claims("GET", &htu)), "dpop_typ"),
        ("alg none", none, "dpop_alg"),
        ("key not the bound one", other.sign_json(&other_header, &c.claims("GET", &htu)), "dpop_key_mismatch"),
        ("signed by another key", other.sign_json(&c.header(), &c.claims("GET", &htu)), "dpop_signature"),
        ("garbage", "not-a-proof".into(), "dpop_malformed"),
    ];
    for (what, proof, _) in &cases {
        let (status, challenge, body) = send(&h, "/api/x", &auth, Some(proof)).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{what}: {body}");
        assert!(challenge.starts_with("DPoP error=\"invalid_dpop_proof\""), "{what}: {challenge}");
    }
    let (status, _, body) = send(&h, "/api/x", &auth, None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_dpop_proof")), "no proof");
    assert_eq!(h.upstream.hits(), 0);
    let m = h.metrics().await;
    for (what, _, reason) in &cases {
        let series = format!("jwtgate_token_rejections_total{{issuer=\"asgardeo\",reason=\"{reason}\"}}");
        assert!(metric(&m, &series) >= 1.0, "{what}: {series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_and_unbound_tokens_stay_in_their_lanes() {
    let h = Harness::start_with(ISSUER, "").await;
    let c = DpopClient::new(&h);
    // A bound token as Bearer: refused (a stolen bound token must not work as a bearer one).
    let (status, challenge, body) = send(&h, "/api/x", &format!("Bearer {}", c.token), None).await;
    assert_eq!(status, 401);
    assert!(body["error_description"].as_str().unwrap().contains("bound to a key"), "{body}");
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
    // An unbound token with the DPoP scheme: refused.
    let plain = h.token("");
    let (status, challenge, _) =
        send(&h, "/api/x", &format!("DPoP {plain}"), Some(&c.proof("GET", &h.url("/api/x")))).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("DPoP error=\"invalid_token\""), "{challenge}");
    // A route that requires bound tokens: a bearer token gets a DPoP challenge.
    let (status, challenge, _) = send(&h, "/bound/x", &format!("Bearer {plain}"), None).await;
    assert_eq!(status, 401);
    assert!(challenge.starts_with("DPoP error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("algs=\"ES256 PS256 EdDSA Ed25519 RS256\""), "{challenge}");
    let (status, challenge, _) = send(&h, "/bound/x", "", None).await;
    assert_eq!((status, challenge.as_str()), (401, "DPoP algs=\"ES256 PS256 EdDSA Ed25519 RS256\""));
    let (status, _, _) =
        send(&h, "/bound/x", &format!("DPoP {}", c.token), Some(&c.proof("GET", &h.url("/bound/x")))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htu_follows_public_base_url() {
    let h = Harness::start_with(ISSUER, "public_base_url = \"https://api.example.com\"").await;
    let c = DpopClient::new(&h);
    let auth = format!("DPoP {}", c.token);
    let (status, _, _) = send(&h, "/api/x", &auth, Some(&c.proof("GET", "https://api.example.com/api/x"))).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(&h, "/api/x", &auth, Some(&c.proof("GET", &h.url("/api/x")))).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_listener_checks_proofs_against_the_original_request() {
    let h = Harness::start_with(ISSUER, "\n[decision]\nlisten = \"127.0.0.1:0\"\n").await;
    let c = DpopClient::new(&h);
    let decision = format!("http://{}/_auth", h.gw.decision_addr.unwrap());
    let ask = |proof: String| {
        h.client
            .get(&decision)
            .header("authorization", format!("DPoP {}", c.token))
            .header("dpop", proof)
            .header("x-original-url", "https://api.example.com/api/x?page=2")
            .header("x-original-method", "GET")
    };
    // htm and htu are the original request's, not the subrequest's.
    let r = ask(c.proof("GET", "https://api.example.com/api/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = ask(c.proof("GET", &decision)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(r.headers()).starts_with("DPoP error=\"invalid_dpop_proof\""));
    let r = ask(c.proof("POST", "https://api.example.com/api/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_cache_refuses_new_proofs_and_forgets_no_unexpired_one() {
    let h = Harness::start_with(ISSUER, "dpop_replay_cache_entries = 3").await;
    let victim = DpopClient::new(&h);
    let attacker = DpopClient::new(&h);
    let url = h.url("/api/x");
    // The victim's proof is used once and captured.
    let captured = victim.proof("GET", &url);
    let (status, _, _) = send(&h, "/api/x", &format!("DPoP {}", victim.token), Some(&captured)).await;
    assert_eq!(status, 200);
    // The attacker fills the cache with proofs of their own, then floods it.
    let own = format!("DPoP {}", attacker.token);
    for _ in 0..2 {
        assert_eq!(send(&h, "/api/x", &own, Some(&attacker.proof("GET", &url))).await.0, 200);
    }
    for _ in 0..20 {
        let r = h
            .client
            .get(&url)
            .header("authorization", &own)
            .header("dpop", attacker.proof("GET", &url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "never accepted unchecked");
        assert!(r.headers().contains_key("retry-after"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    // The captured proof is still remembered: its replay fails.
    let (status, challenge, _) = send(&h, "/api/x", &format!("DPoP {}", victim.token), Some(&captured)).await;
    assert_eq!(status, 401, "{challenge}");
    assert!(challenge.contains("already used"), "{challenge}");
    let m = h.metrics().await;
    let full = "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"dpop_replay_cache_full\"}";
    assert_eq!(metric(&m, full), 20.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_are_judged_by_dpop_algorithms_not_the_tokens_list() {
    // The README's Asgardeo issuer: tokens RS256 only. Clients prove with ES256 (oidc-provider's
    // default) or Ed25519 under its fully-specified name (oauth4webapi).
    let h = Harness::start_with("algorithms = [\"RS256\"]", "").await;
    let url = h.url("/api/x");
    for (alg, name) in [(Alg::ES256, "ES256"), (Alg::EdDSA, "Ed25519"), (Alg::EdDSA, "EdDSA"), (Alg::RS256, "RS256")] {
        let c = DpopClient::with(&h, alg, name);
        let (status, challenge, _) =
            send(&h, "/api/x", &format!("DPoP {}", c.token), Some(&c.proof("GET", &url))).await;
        assert_eq!(status, 200, "{name}: {challenge}");
    }
    // An issuer that narrows the proof algorithms refuses the others, and its challenge says which.
    let h = Harness::start_with("algorithms = [\"RS256\"]\ndpop_algorithms = [\"ES256\"]", "").await;
    let c = DpopClient::with(&h, Alg::EdDSA, "Ed25519");
    let (status, challenge, body) =
        send(&h, "/api/x", &format!("DPoP {}", c.token), Some(&c.proof("GET", &h.url("/api/x")))).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains("alg is not allowed"), "{challenge}");
    assert!(challenge.ends_with("algs=\"ES256\""), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_with_the_fully_specified_ed25519_name_verify() {
    let h = Harness::start_with("algorithms = [\"RS256\", \"Ed25519\"]", "").await;
    let ed = h.idp.add_key(SigningKey::generate(Alg::EdDSA, "ed").unwrap());
    let mut claims = h.claims("");
    claims["sub"] = json!("ed-user");
    let token = ed.sign_json(&json!({"typ": "at+jwt", "alg": "Ed25519", "kid": "ed"}), &claims);
    // An unknown kid: one refetch finds the new key.
    let r = h.get_with("/api/x", &token).await;
    let status = r.status();
    let jwks: Vec<String> =
        h.metrics().await.lines().filter(|l| l.contains("jwtgate_jwks_")).map(String::from).collect();
    assert_eq!(status, 200, "{:?} {jwks:?}", r.headers().get("www-authenticate"));
    let refused = ed.sign_json(&json!({"typ": "at+jwt", "alg": "Ed448", "kid": "ed"}), &claims);
    assert_eq!(h.get_with("/api/x", &refused).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_judges_a_bound_token_with_its_proof() {
    let h = Harness::start_with(ISSUER, "").await;
    let dir = temp_dir("vdpop");
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, config_text(&h.idp.discovery_url(), h.upstream.addr, ISSUER, "")).unwrap();
    let c = DpopClient::new(&h);
    let run = |args: Vec<String>| {
        let cfg = cfg.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            validate(&cfg, &args, None).await
        }
    };
    let url = "https://api.example.com/bound/1";
    let args =
        |proof: String, route: &str| vec!["--route".into(), route.to_string(), "--dpop".into(), proof, c.token.clone()];
    let (code, v) = run(args(c.proof("GET", url), url)).await;
    assert_eq!((code, v["status"].as_u64()), (0, Some(200)), "{v}");
    // A proof for another URI, another method, or none at all.
    let (code, v) = run(args(c.proof("GET", "https://api.example.com/other"), url)).await;
    assert_eq!((code, v["error"].as_str()), (1, Some("invalid_dpop_proof")), "{v}");
    let (code, v) = run(args(c.proof("POST", url), url)).await;
    assert_eq!((code, v["error"].as_str()), (1, Some("invalid_dpop_proof")), "{v}");
    let (code, v) = run(vec!["--route".into(), url.into(), c.token.clone()]).await;
    assert_eq!((code, v["status"].as_u64()), (1, Some(401)), "a bound token without its proof: {v}");
    let (code, _) = run(vec!["--dpop".into(), c.proof("GET", url), c.token.clone()]).await;
    assert_eq!(code, 2, "--dpop needs --route");
}
