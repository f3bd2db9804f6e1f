//! Issue 20 §6: tokens revoked before they expire — an issuer's `deny_list_file` (`jti:`,
//! `sub:`, `client_id:` lines), in force within a second of the file changing, cached verdicts
//! included; a malformed file is refused whole and the list in force stays.

use crate::support::*;
use jwtgate::clock::Clock;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_token_is_refused_within_a_second_of_the_file_changing() {
    let dir = temp_dir("deny");
    let deny = dir.join("revoked.txt");
    std::fs::write(&deny, "# nothing revoked yet\n").unwrap();
    let issuer_extra = format!("deny_list_file = {:?}", deny.display().to_string());
    // The file is polled once a second of the gateway's clock: that second is moved, not waited.
    let h =
        Harness::start_manual(&issuer_extra, "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"nginx\"\n").await;
    let token = |extra: Value| {
        let mut c = h.claims("");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        h.key.token(&c)
    };
    let by_jti = token(json!({"jti": "t-1"}));
    let by_sub = token(json!({"sub": "bob", "jti": "t-2"}));
    let by_client = token(json!({"client_id": "app-9", "jti": "t-3"}));
    let other = token(json!({"jti": "t-4", "client_id": "app-1"}));
    let decision = |t: &str| {
        h.client
            .get(format!("http://{}/_auth", h.gw.decision_addr.unwrap()))
            .header("x-original-uri", "/api/x")
            .header("x-original-method", "GET")
            .bearer_auth(t.to_string())
            .send()
    };
    // Accepted, and cached.
    for t in [&by_jti, &by_sub, &by_client, &other] {
        assert_eq!(h.get_with("/api/x", t).await.status(), 200);
    }
    std::fs::write(&deny, "# revoked\njti:t-1\nsub:bob\n\nclient_id:app-9\n").unwrap();
    let changed = h.manual_clock().monotonic();
    advance_until(h.manual_clock(), Duration::from_millis(100), "the revocation is in force", || async {
        h.get_with("/api/x", &by_jti).await.status() == 401
    })
    .await;
    let after = h.manual_clock().monotonic() - changed;
    assert!(after <= Duration::from_millis(1_100), "in force after {after:?} of the gateway's clock");
    for t in [&by_jti, &by_sub, &by_client] {
        let r = h.get_with("/api/x", t).await;
        assert_eq!(r.status(), 401);
        assert!(www_authenticate(r.headers()).contains("revoked"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"error": "invalid_token", "error_description": "the token has been revoked"}));
        assert_eq!(decision(t).await.unwrap().status(), 401, "the decision listener refuses it too");
    }
    assert_eq!(h.get_with("/api/x", &other).await.status(), 200);
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_deny_list_entries{issuer=\"asgardeo\"}"), 3.0);
    assert!(metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"revoked\"}") >= 6.0);
    // A malformed file: refused whole, the list in force stays.
    std::fs::write(&deny, "jti:t-4\nuser:bob\n").unwrap();
    advance_until(h.manual_clock(), Duration::from_millis(100), "the bad file is refused", || async {
        metric(&h.metrics().await, "jwtgate_deny_list_reloads_total{issuer=\"asgardeo\",result=\"error\"}") >= 1.0
    })
    .await;
    assert_eq!(h.get_with("/api/x", &by_jti).await.status(), 401);
    assert_eq!(h.get_with("/api/x", &other).await.status(), 200, "nothing of the refused file applies");
    // Taken off the list: accepted again.
    std::fs::write(&deny, "sub:bob\n").unwrap();
    advance_until(h.manual_clock(), Duration::from_millis(100), "the token is accepted again", || async {
        h.get_with("/api/x", &by_jti).await.status() == 200
    })
    .await;
    assert_eq!(h.get_with("/api/x", &by_sub).await.status(), 401);

    // check-config and validate read the list as serve does.
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, config_text(&h.idp.discovery_url(), h.upstream.addr, &issuer_extra, "")).unwrap();
    let run = run_jwtgate;
    let cfg_s = cfg.display().to_string();
    let out = run(&["validate", "--config", &cfg_s, "--route", "/api/x", &by_sub]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["status"].as_u64(), v["error"].as_str()), (Some(401), Some("invalid_token")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
    std::fs::write(&deny, "jti:t-4\nuser:bob\n").unwrap();
    let out = run(&["check-config", "--config", &cfg_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("issuers[0].deny_list_file") && err.contains("line 2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
