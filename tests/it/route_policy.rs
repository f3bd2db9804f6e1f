//! Issue 20 §1–3, the route policy beyond scopes — claim rules, an audience per route, RFC 9470
//! step-up — judged alike by the proxy, the decision listener and `validate`, for fresh and
//! cached tokens.

use crate::support::*;
use serde_json::{json, Value};

const ROUTES: &str = r#"
[[routes]]
name = "admin"
path_prefix = "/admin"
require_claims = [{ claim = "roles", any_of = ["admin", "ops"] }, { claim = "azp", equals = "my-app" }, { claim = "realm.level", equals = 3 }]

[[routes]]
name = "billing"
path_prefix = "/billing"
audiences = ["billing-api"]

[[routes]]
name = "transfer"
path_prefix = "/transfer"
acr_values = ["mfa", "hwk"]
max_age_seconds = 300
"#;

const DECISION: &str = "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"nginx\"\n";

/// The status, body error and challenge the proxy, the decision listener and `validate` give;
/// asserts that all three agree, and returns them.
async fn judged(h: &Harness, cfg: &std::path::Path, path: &str, token: &str) -> (u16, Value, String) {
    let proxy = h.get_with(path, token).await;
    let p = (proxy.status().as_u16(), www_authenticate(proxy.headers()));
    let p_error = if p.0 == 200 { Value::Null } else { proxy.json::<Value>().await.unwrap()["error"].clone() };
    let decision = h
        .client
        .get(format!("http://{}/_auth", h.gw.decision_addr.unwrap()))
        .header("x-original-uri", path)
        .header("x-original-method", "GET")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let d = (decision.status().as_u16(), www_authenticate(decision.headers()));
    let d_error = if d.0 == 200 { Value::Null } else { decision.json::<Value>().await.unwrap()["error"].clone() };
    let v = validate_json(cfg, path, token).await;
    let v_status = v["status"].as_u64().unwrap() as u16;
    assert_eq!((p.0, &p_error, &p.1), (d.0, &d_error, &d.1), "{path}: proxy and decision listener");
    assert_eq!((p.0, &p_error), (v_status, &v["error"]), "{path}: proxy and validate: {v}");
    (p.0, p_error, p.1)
}

async fn validate_json(cfg: &std::path::Path, path: &str, token: &str) -> Value {
    validate(cfg, &["--route", path, token], None).await.1
}

async fn setup() -> (Harness, std::path::PathBuf) {
    let h = Harness::start_with(ROUTES, DECISION).await;
    let dir = temp_dir("policy");
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, config_text(&h.idp.discovery_url(), h.upstream.addr, ROUTES, "")).unwrap();
    (h, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_rules_beyond_scopes_are_403_insufficient_claims() {
    let (h, cfg) = setup().await;
    let with = |extra: Value| {
        let mut c = h.claims("");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        h.key.token(&c)
    };
    let good = json!({"roles": ["user", "ops"], "azp": "my-app", "realm": {"level": 3}});
    // Twice each: the second answer comes from the verified-token cache.
    for _ in 0..2 {
        assert_eq!(judged(&h, &cfg, "/admin/x", &with(good.clone())).await.0, 200);
        assert_eq!(
            judged(&h, &cfg, "/admin/x", &with(json!({"roles": "admin", "azp": "my-app", "realm": {"level": 3.0}})))
                .await
                .0,
            200
        );
        for bad in [
            json!({"roles": ["user"], "azp": "my-app", "realm": {"level": 3}}),
            json!({"roles": ["ops"], "azp": "other-app", "realm": {"level": 3}}),
            json!({"roles": ["ops"], "azp": "my-app", "realm": {"level": "3"}}),
            json!({"roles": ["ops"], "azp": "my-app"}),
            json!({"roles": {"ops": true}, "azp": "my-app", "realm": {"level": 3}}),
        ] {
            let (status, error, challenge) = judged(&h, &cfg, "/admin/x", &with(bad.clone())).await;
            assert_eq!((status, error), (403, json!("insufficient_claims")), "{bad}");
            assert!(challenge.starts_with("Bearer error=\"insufficient_claims\""), "{challenge}");
            assert!(!challenge.contains("scope="), "no scope in a claims challenge: {challenge}");
        }
    }
    // validate says which rule failed, expected beside actual.
    let v =
        validate_json(&cfg, "/admin/x", &with(json!({"roles": ["ops"], "azp": "other-app", "realm": {"level": 3}})))
            .await;
    assert_eq!(
        v["explain"],
        json!({"claim": "azp", "test": "equals", "expected": "my-app", "actual": "other-app"}),
        "{v}"
    );
    let m = h.metrics().await;
    assert!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"insufficient_claims\",route=\"admin\"}")
            >= 10.0
    );
    assert!(metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"insufficient_claims\"}") >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_name_its_own_audiences() {
    let (h, cfg) = setup().await;
    let for_aud = |aud: &str| h.key.token(&h.idp.claims(now(), "alice", aud, ""));
    let billing = for_aud("billing-api");
    let issuers = for_aud(AUD);
    // In this order and the other, so that a cached verdict is judged against another route's
    // audiences.
    for _ in 0..2 {
        assert_eq!(judged(&h, &cfg, "/billing/1", &billing).await.0, 200);
        let (status, error, challenge) = judged(&h, &cfg, "/api/x", &billing).await;
        assert_eq!((status, error), (401, json!("invalid_token")));
        assert!(challenge.contains("audience"), "{challenge}");
        assert_eq!(judged(&h, &cfg, "/api/x", &issuers).await.0, 200);
        assert_eq!(judged(&h, &cfg, "/billing/1", &issuers).await.0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_is_401_insufficient_user_authentication_with_what_the_route_needs() {
    let (h, cfg) = setup().await;
    let signed_in = |acr: Option<&str>, ago: Option<i64>| {
        let mut c = h.claims("");
        if let Some(a) = acr {
            c["acr"] = json!(a);
        }
        if let Some(s) = ago {
            c["auth_time"] = json!(now() - s);
        }
        h.key.token(&c)
    };
    let challenge = "Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger or more recent \
                     authentication is required for this route\", acr_values=\"mfa hwk\", max_age=300";
    for _ in 0..2 {
        assert_eq!(judged(&h, &cfg, "/transfer/1", &signed_in(Some("mfa"), Some(10))).await.0, 200);
        assert_eq!(judged(&h, &cfg, "/transfer/1", &signed_in(Some("hwk"), Some(299))).await.0, 200);
        for (acr, ago) in [(Some("pwd"), Some(10)), (None, Some(10)), (Some("mfa"), Some(1000)), (Some("mfa"), None)] {
            let got = judged(&h, &cfg, "/transfer/1", &signed_in(acr, ago)).await;
            assert_eq!(got, (401, json!("insufficient_user_authentication"), challenge.to_string()), "{acr:?} {ago:?}");
        }
    }
    // Other routes do not care how the user signed in.
    assert_eq!(judged(&h, &cfg, "/api/x", &signed_in(Some("pwd"), None)).await.0, 200);
    let v = validate_json(&cfg, "/transfer/1", &signed_in(Some("pwd"), Some(10))).await;
    assert_eq!(v["explain"]["expected"], json!({"acr_values": ["mfa", "hwk"], "max_age_seconds": 300}), "{v}");
    assert_eq!(v["explain"]["actual"]["acr"], "pwd", "{v}");
}

#[test]
fn check_config_refuses_contradictory_route_policies() {
    assert_first_route_refused(&[
        (
            "auth = \"anonymous\"\nrequire_claims = [{ claim = \"roles\", any_of = [\"a\"] }]",
            "routes[0].require_claims",
            "anonymous",
        ),
        ("auth = \"anonymous\"\nacr_values = [\"mfa\"]", "routes[0].acr_values", "anonymous"),
        (
            "require_claims = [{ claim = \"roles\", any_of = [\"a\"], equals = \"b\" }]",
            "routes[0].require_claims[0]",
            "exactly one",
        ),
        ("require_claims = [{ claim = \"roles\" }]", "routes[0].require_claims[0]", "needs one test"),
        ("require_claims = [{ claim = \"roles\", any_of = [] }]", "routes[0].require_claims[0]", "at least one"),
        (
            "require_claims = [{ claim = \"realm..roles\", any_of = [\"a\"] }]",
            "routes[0].require_claims[0].claim",
            "dotted path",
        ),
        (
            "require_claims = [{ claim = \"x\", equals = [1] }]",
            "routes[0].require_claims[0].equals",
            "string, a number or a boolean",
        ),
        ("audiences = []", "routes[0].audiences", "at least one"),
        ("max_age_seconds = 0", "routes[0].max_age_seconds", "at least 1"),
    ]);
}
