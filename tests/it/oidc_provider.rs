//! Issue 21, against what nobody here wrote: panva's `oidc-provider` (a certified OpenID
//! Provider, from npm; `tests/oidc-provider/server.mjs`) issues opaque access tokens for the
//! client credentials grant and introspects and revokes them. jwtgate discovers its
//! introspection endpoint, authenticates as its own client, and judges the tokens: an active
//! one passes with its scopes, a revoked one is refused once its cached answer ends, another
//! client's (another API's audience) is refused, and the provider stopped is a 503.
//! `.ci/run` installs the package (`npm ci`); outside CI the test is skipped when it is missing.

use crate::support::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

const SECRET: &str = "jwtgate-introspection-secret";

/// The provider, started on a loopback port of the system's choosing; `None` outside CI when
/// node or the package is missing.
async fn start_provider() -> Option<(tokio::process::Child, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
    let installed = dir.join("node_modules/oidc-provider").is_dir();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(installed && node) {
        assert!(
            std::env::var_os("CI").is_none(),
            "node and oidc-provider are required under CI (.ci/run runs npm ci in tests/oidc-provider)"
        );
        eprintln!("oidc-provider is not installed: skipping (cd tests/oidc-provider && npm ci)");
        return None;
    }
    let mut child = tokio::process::Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .env("JWTGATE_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(i) = v["issuer"].as_str() {
                    return i.to_string();
                }
            }
        }
        panic!("oidc-provider exited before listening");
    })
    .await
    .expect("oidc-provider listened in time");
    // Keep reading: a closed pipe would end the provider at its next line.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some((child, issuer))
}

/// An access token for `client` (client credentials grant, Basic authentication).
async fn token(client: &reqwest::Client, issuer: &str, id: &str, secret: &str, scope: &str) -> String {
    let r = client
        .post(format!("{issuer}/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .expect("token request");
    let body: Value = r.json().await.expect("json");
    let t = body["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {body}")).to_string();
    assert!(!t.contains('.'), "oidc-provider's default format is opaque: {t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_of_a_real_provider_are_introspected() {
    let Some((mut provider, issuer)) = start_provider().await else { return };
    let dir = temp_dir("oidc-provider");
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let upstream = EchoUpstream::start().await.expect("upstream");
    let issuer_extra = format!(
        "[issuers.introspection]\nclient_id = \"jwtgate\"\nclient_secret_file = {:?}\ncache_seconds = 1\nnegative_cache_seconds = 1\ntimeout_seconds = 2\n",
        dir.join("secret").display().to_string()
    );
    // Its API's audience instead of the harness's.
    let text = config_text(&format!("{issuer}/.well-known/openid-configuration"), upstream.addr, &issuer_extra, "")
        .replace(&format!("audiences = [\"{AUD}\"]"), "audiences = [\"https://orders.example/api\"]");
    let gw = start_gateway(&text).await;
    let client = http_client();
    let admin = format!("http://{}", gw.admin_addr);
    wait_until("the provider's keys and discovery are loaded", || async {
        client.get(format!("{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let get = |t: String| client.get(format!("http://{}/orders/1", gw.proxy_addr)).bearer_auth(t).send();

    // Active, with its scopes: passes; without the route's scope: 403.
    let reader = token(&client, &issuer, "orders-app", "orders-secret", "orders:read").await;
    let r = get(reader.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo = echoed(r).await;
    let payload = upstream_header(&echo, "x-jwt-payload");
    let answer: Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&payload[0]).unwrap()).unwrap()
    };
    assert_eq!(answer["client_id"], "orders-app", "{answer}");
    assert_eq!(answer["iss"], issuer.as_str());
    let writer = token(&client, &issuer, "orders-app", "orders-secret", "orders:write").await;
    assert_eq!(get(writer).await.unwrap().status(), 403);
    // Another client's token is for another API: refused by audience.
    let other = token(&client, &issuer, "billing-app", "billing-secret", "orders:read").await;
    let r = get(other).await.unwrap();
    assert_eq!(r.status(), 401);
    let m = client.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"bad_audience\"}"), 1.0);

    // Revoked at the provider (RFC 7009): refused once the cached answer ends.
    let r = client
        .post(format!("{issuer}/token/revocation"))
        .basic_auth("orders-app", Some("orders-secret"))
        .form(&[("token", reader.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    wait_until("the revoked token is refused", || async { get(reader.clone()).await.unwrap().status() == 401 }).await;
    // cache_seconds = 1, with the clock's whole seconds: within 2 s and a margin.
    assert!(revoked.elapsed() < Duration::from_secs(4), "refused after {:?}", revoked.elapsed());
    let m = client.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"inactive\"}") >= 1.0);

    // The provider stopped: a new token cannot be judged — 503, never an accept.
    let last = token(&client, &issuer, "orders-app", "orders-secret", "orders:read").await;
    provider.kill().await.expect("kill");
    let r = get(last).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let status: Value = client.get(format!("{admin}/status")).send().await.unwrap().json().await.unwrap();
    let x = &status["issuers"][0]["introspection"];
    assert_eq!(x["endpoint"], format!("{issuer}/token/introspection"), "discovered: {x}");
    assert!(x["last_error"].as_str().unwrap().contains("cannot reach"), "{x}");
    assert!(!status.to_string().contains(SECRET));
    gw.shutdown().await;
}
