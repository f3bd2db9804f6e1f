//! Issue 19, the one request pipeline: every refusal names the phase that made it — in the
//! proxy's access log, in the decision listener's refusal line — and both doors refuse the same
//! request in the same phase. Judged from the outside: a real `serve` process, its JSON log
//! lines, raw requests a client (or a front proxy) really sends.

use crate::support::*;
use serde_json::{json, Value};
use std::sync::Mutex;

const EXTRA_ROUTES: &str = r#"
[[routes]]
name = "admin"
path_prefix = "/admin"
require_claims = [{ claim = "roles", any_of = ["admin"] }]

[[routes]]
name = "transfer"
path_prefix = "/transfer"
acr_values = ["mfa"]

[[routes]]
name = "bound"
path_prefix = "/bound"
sender_constrained = true

[[routes]]
name = "limited"
path_prefix = "/limited"
auth = "anonymous"
[routes.rate_limit]
key = "ip"
requests_per_second = 1
burst = 1
"#;

/// Headers for a subrequest.
type Headers = Vec<(&'static str, String)>;

/// A request through the proxy, answered; then its access-log line (the n-th so far).
async fn phase_of(proxy: std::net::SocketAddr, log: &Mutex<Vec<String>>, request: &str) -> (u16, Value) {
    let access = || logged(log, |m| m == "access");
    let before = access().len();
    let (status, _, _) = raw(proxy, request).await;
    wait_until("the access line is written", || async { access().len() > before }).await;
    let line = access().swap_remove(before);
    assert_eq!(line["fields"]["status"], status, "{line}");
    (status, line["fields"]["phase"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_phase_at_both_doors() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("phases");
    let path = dir.join("jwtgate.toml");
    let server = "log_format = \"json\"\naccess_log = true\nmax_header_bytes = 4096";
    let text = format!(
        "{}{EXTRA_ROUTES}\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"auto\"\n",
        config_text(&idp.discovery_url(), upstream.addr, "", server)
    );
    std::fs::write(&path, text).unwrap();
    let (_child, proxy, admin, log) = spawn_serve_with(&path, None).await;
    let client = http_client();
    wait_until("keys loaded", || async {
        client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let listening = logged(&log, |m| m == "jwtgate listening");
    let decision: std::net::SocketAddr = listening[0]["fields"]["decision_addr"]
        .as_str()
        .expect("the listening line names the decision listener")
        .parse()
        .unwrap();

    let token = |claims: Value| key.token(&claims);
    let claims = idp.claims(now(), "alice", AUD, "orders:read");
    let reader = token(claims.clone());
    let mut bound = claims.clone();
    bound["cnf"] = json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiGuA4I"});
    let bound = token(bound);
    let forged = format!("{}x", &reader[..reader.len() - 1]);
    let get = |path: &str, auth: Option<&str>| {
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n")
    };
    let bearer = |t: &str| format!("Bearer {t}");
    let big = format!("GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(5000));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("the header budget", big, 431, "framing"),
        ("two Host headers", "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), 400, "framing"),
        (
            "a lower-case method",
            "get /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".into(),
            400,
            "target",
        ),
        ("a dot segment", get("/public/../orders/1", None), 400, "target"),
        ("no route", get("/nowhere", None), 404, "route"),
        ("no token", get("/orders/1", None), 401, "credentials"),
        ("two tokens", get("/orders/1", Some("Bearer a b")), 400, "credentials"),
        ("Bearer on a DPoP route", get("/bound/1", Some(&bearer(&reader))), 401, "credentials"),
        ("a forged signature", get("/orders/1", Some(&bearer(&forged))), 401, "token"),
        ("a bound token as Bearer", get("/orders/1", Some(&bearer(&bound))), 401, "binding"),
        ("a missing scope", get("/orders/1", Some(&bearer(&token(idp.claims(now(), "bob", AUD, "x"))))), 403, "scope"),
        ("a claim rule", get("/admin/x", Some(&bearer(&reader))), 403, "claims"),
        ("step-up", get("/transfer/x", Some(&bearer(&reader))), 401, "step_up"),
        ("allowed", get("/orders/1", Some(&bearer(&reader))), 200, ""),
        ("the first of a burst of one", get("/limited/x", None), 200, ""),
        ("the second", get("/limited/x", None), 429, "rate_limit"),
    ];
    for (what, request, status, phase) in &cases {
        let (got, logged_phase) = phase_of(proxy, &log, request).await;
        assert_eq!(got, *status, "{what}");
        match *phase {
            "" => assert!(logged_phase.is_null(), "{what}: an allowed request names no phase: {logged_phase}"),
            p => assert_eq!(logged_phase, p, "{what}"),
        }
    }

    // The decision listener (no access log: one refusal line at info) refuses in the same phases.
    let ask = |headers: Headers| {
        let client = client.clone();
        async move {
            let mut r = client.get(format!("http://{decision}/_auth"));
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    let original = |uri: &str| vec![("x-original-uri", uri.to_string()), ("x-original-method", "GET".to_string())];
    let with = |mut h: Headers, extra: (&'static str, String)| {
        h.push(extra);
        h
    };
    let decision_cases: Vec<(&str, Headers, u16, &str)> = vec![
        ("two conventions", with(original("/orders/1"), ("x-forwarded-uri", "/public/x".into())), 400, "framing"),
        ("a dot segment", original("/public/../orders/1"), 400, "target"),
        ("no token", original("/orders/1"), 401, "credentials"),
        ("a forged signature", with(original("/orders/1"), ("authorization", bearer(&forged))), 401, "token"),
        ("a claim rule", with(original("/admin/x"), ("authorization", bearer(&reader))), 403, "claims"),
    ];
    for (what, headers, status, phase) in decision_cases {
        let refusals = || logged(&log, |m| m.starts_with("request refused"));
        let seen = refusals().len();
        assert_eq!(ask(headers).await, status, "{what}");
        wait_until("the refusal line is written", || async { refusals().len() > seen }).await;
        let line = refusals().pop().unwrap();
        assert_eq!(line["fields"]["phase"], phase, "{what}: {line}");
        assert_eq!(line["fields"]["status"], status, "{what}: {line}");
        assert_eq!(line["level"], "INFO", "{what}: {line}");
    }
}
