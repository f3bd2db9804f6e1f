//! The key-manager sync against a fake APIM that validates every body against admin-api.json
//! and a fake Asgardeo organization.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::apim::{FakeApim, Fault, ADMIN_PASSWORD};
use crate::support::*;
use jwtgate::config::Config;
use jwtgate::km_sync::desired::fingerprint;
use jwtgate::km_sync::{run_once, OnceResult, PassOptions};
use serde_json::{json, Value};

const SECRET: &str = "mgmt-secret-1";

struct Km {
    idp: FakeIssuer,
    key: Arc<SigningKey>,
    apim: FakeApim,
    _upstream: EchoUpstream,
    dir: PathBuf,
    config: Config,
}

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

impl Km {
    async fn start(extra: &str) -> Km {
        Km::start_with(extra, "").await
    }

    async fn start_with(km_extra: &str, issuer_extra: &str) -> Km {
        Km::start_on(FakeApim::start().await, None, km_extra, issuer_extra).await
    }

    async fn start_on(apim: FakeApim, ca_pem: Option<&str>, km_extra: &str, issuer_extra: &str) -> Km {
        let idp = FakeIssuer::start("acme").await.unwrap();
        let key = idp.add_shared_key(harness_key());
        let upstream = EchoUpstream::start().await.unwrap();
        let dir = temp_dir("km");
        write(&dir, "admin-password", &format!("{ADMIN_PASSWORD}\n"));
        write(&dir, "mgmt-secret", SECRET);
        if let Some(pem) = ca_pem {
            write(&dir, "apim-ca.pem", pem);
        }
        let mut text = config_text(&idp.discovery_url(), upstream.addr, issuer_extra, "");
        text.push_str(&format!(
            r#"
[key_manager_sync]
apim_url = "{}"
username = "admin"
password_file = "admin-password"
mgmt_client_id = "mgmt-client"
mgmt_client_secret_file = "mgmt-secret"
request_timeout_seconds = 2
max_backoff_seconds = 2
{km_extra}
"#,
            apim.url()
        ));
        write(&dir, "jwtgate.toml", &text);
        let config = Config::load(&dir.join("jwtgate.toml")).expect("config");
        Km { idp, key, apim, _upstream: upstream, dir, config }
    }

    async fn once(&self) -> OnceResult {
        run_pass(&self.config, PassOptions::default(), Duration::from_secs(30)).await
    }

    async fn dry(&self) -> OnceResult {
        run_pass(&self.config, PassOptions { dry_run: true, push_secret: false }, Duration::from_secs(30)).await
    }

    fn rotate_secret(&self, s: &str) {
        write(&self.dir, "mgmt-secret", s);
    }

    fn props(&self) -> serde_json::Map<String, Value> {
        self.apim.stored("Asgardeo").expect("registered")["additionalProperties"].as_object().unwrap().clone()
    }
}

fn ok(r: &OnceResult) -> &str {
    assert_eq!(r.exit_code, 0, "{}", r.output);
    &r.output
}

/// `km-sync --once` on a manual clock that moves only while the pass is backing off (its only
/// sleeps): retries and the budget run in clock time, requests in real time.
async fn run_pass(config: &Config, opts: PassOptions, budget: Duration) -> OnceResult {
    let clock = Arc::new(jwtgate::clock::ManualClock::at_system_now());
    let pass = tokio::spawn({
        let (config, clock) = (config.clone(), clock.clone());
        async move { run_once(&config, opts, budget, clock).await }
    });
    while !pass.is_finished() {
        if clock.sleepers() > 0 {
            clock.advance(Duration::from_millis(500));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pass.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_from_nothing_registers_every_managed_field() {
    let k = Km::start("").await;
    let out = k.once().await;
    let text = ok(&out);
    assert!(text.starts_with("create: key manager \"Asgardeo\""), "{text}");
    assert!(text.contains("additionalProperties.mgmt_client_secret: \"*****\""), "{text}");
    assert!(!text.contains(SECRET), "secret printed: {text}");
    assert_eq!(k.apim.posts(), 1);
    let v = k.apim.get_view("Asgardeo").unwrap();
    let base = format!("http://{}/t/acme", k.idp.addr);
    assert_eq!(v["type"], "Asgardeo");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["wellKnownEndpoint"], k.idp.discovery_url());
    assert_eq!(v["issuer"], k.idp.issuer());
    assert_eq!(v["certificates"], json!({"type": "JWKS", "value": k.idp.jwks_uri()}));
    assert_eq!(v["tokenEndpoint"], format!("{base}/oauth2/token"));
    assert_eq!(v["revokeEndpoint"], format!("{base}/oauth2/revoke"));
    assert_eq!(v["introspectionEndpoint"], format!("{base}/oauth2/introspect"));
    assert_eq!(v["userInfoEndpoint"], format!("{base}/oauth2/userinfo"));
    assert_eq!(v["authorizeEndpoint"], format!("{base}/oauth2/authorize"));
    assert_eq!(v["clientRegistrationEndpoint"], format!("{base}/api/identity/oauth2/dcr/v1.1/register"));
    assert_eq!(v["availableGrantTypes"], k.idp.discovery_document()["grant_types_supported"]);
    assert_eq!(v["enableSelfValidationJWT"], true);
    assert_eq!(v["tokenType"], "DIRECT");
    assert_eq!(v["consumerKeyClaim"], "azp");
    assert_eq!(v["scopesClaim"], "scope");
    let ap = &v["additionalProperties"];
    assert_eq!(ap["org_name"], "acme");
    assert_eq!(ap["mgmt_client_id"], "mgmt-client");
    assert_eq!(ap["mgmt_client_secret"], "*****", "GET masks the secret");
    assert_eq!(ap["APIM_GLOBAL_SCOPES"], "APIM_GLOBAL_SCOPES");
    assert_eq!(ap["asgardeo_api_resource_management_endpoint"], format!("{base}/api/server/v1/api-resources"));
    assert_eq!(ap["asgardeo_roles_endpoint"], format!("{base}/scim2/v2/Roles"));
    assert_eq!(ap["jwtgate_secret_fingerprint"], fingerprint(SECRET));
    assert_eq!(k.props()["mgmt_client_secret"], SECRET, "the real secret was sent on create");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_pass_makes_zero_writes() {
    let k = Km::start("").await;
    ok(&k.once().await);
    let out = k.once().await;
    assert!(ok(&out).starts_with("in sync"), "{}", out.output);
    assert_eq!(k.apim.writes(), 1);
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_each_managed_field_is_corrected() {
    let k = Km::start("display_name = \"Asgardeo (jwtgate)\"\ndescription = \"managed\"").await;
    ok(&k.once().await);
    // (where the portal stores it, what jwtgate reports)
    let drifts: Vec<(&str, Option<&str>, Value, &str)> = vec![
        ("enabled", None, json!(false), "enabled"),
        ("displayName", None, json!("Other"), "displayName"),
        ("description", None, json!("other"), "description"),
        ("tokenType", None, json!("BOTH"), "tokenType"),
        ("additionalProperties", Some("well_known_endpoint"), json!("https://x/wk"), "wellKnownEndpoint"),
        ("additionalProperties", Some("issuer"), json!("https://x"), "issuer"),
        ("additionalProperties", Some("certificate_value"), json!("https://x/jwks"), "certificates"),
        ("additionalProperties", Some("certificate_type"), json!("PEM"), "certificates"),
        ("additionalProperties", Some("token_endpoint"), json!("https://x/t"), "tokenEndpoint"),
        ("additionalProperties", Some("revoke_endpoint"), json!("https://x/r"), "revokeEndpoint"),
        ("additionalProperties", Some("introspection_endpoint"), json!("https://x/i"), "introspectionEndpoint"),
        ("additionalProperties", Some("userinfo_endpoint"), json!("https://x/u"), "userInfoEndpoint"),
        ("additionalProperties", Some("authorize_endpoint"), json!("https://x/a"), "authorizeEndpoint"),
        (
            "additionalProperties",
            Some("client_registration_endpoint"),
            json!("https://x/d"),
            "clientRegistrationEndpoint",
        ),
        ("additionalProperties", Some("grant_types"), json!(["password"]), "availableGrantTypes"),
        ("additionalProperties", Some("self_validate_jwt"), json!(false), "enableSelfValidationJWT"),
        ("additionalProperties", Some("consumer_key_claim"), json!("sub"), "consumerKeyClaim"),
        ("additionalProperties", Some("scopes_claim"), json!("scp"), "scopesClaim"),
        ("additionalProperties", Some("org_name"), json!("other"), "additionalProperties.org_name"),
        ("additionalProperties", Some("mgmt_client_id"), json!("other"), "additionalProperties.mgmt_client_id"),
        ("additionalProperties", Some("APIM_GLOBAL_SCOPES"), json!("X"), "additionalProperties.APIM_GLOBAL_SCOPES"),
        (
            "additionalProperties",
            Some("asgardeo_api_resource_management_endpoint"),
            json!("https://x"),
            "additionalProperties.asgardeo_api_resource_management_endpoint",
        ),
        (
            "additionalProperties",
            Some("asgardeo_roles_endpoint"),
            json!("https://x"),
            "additionalProperties.asgardeo_roles_endpoint",
        ),
        (
            "additionalProperties",
            Some("jwtgate_secret_fingerprint"),
            json!("stale"),
            "additionalProperties.mgmt_client_secret",
        ),
    ];
    for (outer, inner, value, reported) in drifts {
        let before = k.apim.puts();
        k.apim.admin_edit("Asgardeo", |km| match inner {
            None => {
                km.insert(outer.into(), value.clone());
            }
            Some(i) => {
                km["additionalProperties"].as_object_mut().unwrap().insert(i.into(), value.clone());
            }
        });
        let out = k.once().await;
        assert!(ok(&out).contains(&format!("update: {reported}:")), "{outer}.{inner:?}: {}", out.output);
        assert_eq!(k.apim.puts(), before + 1, "{reported}: one PUT");
        let again = k.once().await;
        assert!(ok(&again).starts_with("in sync"), "{reported} not corrected: {}", again.output);
    }
    // A changed type makes it another connector's key manager: a conflict, never overwritten.
    k.apim.admin_edit("Asgardeo", |km| {
        km.insert("type".into(), json!("WSO2-IS"));
    });
    let before = k.apim.writes();
    let out = k.once().await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(out.output.contains("conflict"), "{}", out.output);
    assert_eq!(k.apim.writes(), before);
    k.apim.admin_edit("Asgardeo", |km| {
        km.insert("type".into(), json!("Asgardeo"));
    });
    // Whitespace and grant-type order are not drift.
    k.apim.admin_edit("Asgardeo", |km| {
        let ap = km["additionalProperties"].as_object_mut().unwrap();
        let mut g: Vec<Value> = ap["grant_types"].as_array().unwrap().clone();
        g.reverse();
        ap.insert("grant_types".into(), json!(g));
        let t = ap["token_endpoint"].as_str().unwrap().to_string();
        ap.insert("token_endpoint".into(), json!(format!("  {t} ")));
    });
    assert!(ok(&k.once().await).starts_with("in sync"));
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrator_fields_survive_an_update() {
    let k = Km::start("").await;
    ok(&k.once().await);
    k.apim.admin_edit("Asgardeo", |km| {
        km.insert("permissions".into(), json!({"permissionType": "ALLOW", "roles": ["Internal/subscriber"]}));
        km.insert("allowedOrganizations".into(), json!(["org-a"]));
        let ap = km["additionalProperties"].as_object_mut().unwrap();
        ap.insert(
            "claim_mappings".into(),
            json!([{"remoteClaim": "email", "localClaim": "http://wso2.org/claims/email"}]),
        );
        ap.insert("asgardeo_role_creation".into(), json!(true));
        ap.insert("enable_oauth_app_creation".into(), json!(true));
        ap.insert("token_endpoint".into(), json!("https://drifted/token"));
    });
    let out = k.once().await;
    assert!(ok(&out).contains("update: tokenEndpoint"), "{}", out.output);
    let stored = k.apim.stored("Asgardeo").unwrap();
    assert_eq!(stored["permissions"]["permissionType"], "ALLOW");
    assert_eq!(stored["allowedOrganizations"], json!(["org-a"]));
    let ap = &stored["additionalProperties"];
    assert_eq!(ap["asgardeo_role_creation"], true);
    assert_eq!(ap["enable_oauth_app_creation"], true);
    assert_eq!(ap["claim_mappings"][0]["remoteClaim"], "email");
    assert_eq!(ap["mgmt_client_secret"], SECRET, "the stored secret was kept (***** sent back)");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_pushes_the_new_secret_once() {
    let k = Km::start("").await;
    ok(&k.once().await);
    k.rotate_secret("mgmt-secret-2");
    let out = k.once().await;
    let text = ok(&out);
    assert!(text.contains("update: additionalProperties.mgmt_client_secret: \"*****\" → \"*****\""), "{text}");
    assert!(!text.contains("mgmt-secret-2"), "{text}");
    assert_eq!(k.props()["mgmt_client_secret"], "mgmt-secret-2");
    assert_eq!(k.props()["jwtgate_secret_fingerprint"], fingerprint("mgmt-secret-2"));
    assert!(ok(&k.once().await).starts_with("in sync"));
    assert_eq!(k.apim.puts(), 1, "exactly one write for the rotation");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing() {
    let k = Km::start("").await;
    let out = k.dry().await;
    assert!(ok(&out).starts_with("create:"), "{}", out.output);
    assert!(out.output.ends_with("dry run: nothing written"), "{}", out.output);
    assert_eq!(k.apim.writes(), 0);
    assert!(k.apim.stored("Asgardeo").is_none());
    ok(&k.once().await);
    k.apim.admin_edit("Asgardeo", |km| {
        km["additionalProperties"].as_object_mut().unwrap().insert("token_endpoint".into(), json!("https://x"));
    });
    let out = k.dry().await;
    assert!(ok(&out).contains("update: tokenEndpoint: \"https://x\" → "), "{}", out.output);
    assert_eq!(k.apim.writes(), 1);
    assert_eq!(k.props()["token_endpoint"], "https://x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_manager_of_another_type_holding_the_name_is_a_conflict() {
    let k = Km::start("").await;
    k.apim.seed(json!({"name": "Asgardeo", "type": "WSO2-IS", "tokenEndpoint": "https://is/token"}));
    let out = k.once().await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(out.output.contains("conflict"), "{}", out.output);
    assert_eq!(k.apim.writes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_creator_409_means_list_again_never_post_again() {
    let k = Km::start("").await;
    // Another replica creates it (with an old token endpoint) between our list and our POST.
    k.apim.race_next_post(json!({"name": "Asgardeo", "type": "Asgardeo", "tokenEndpoint": "https://old/token",
        "additionalProperties": {"mgmt_client_secret": SECRET}}));
    let out = k.once().await;
    assert!(ok(&out).contains("update: tokenEndpoint"), "{}", out.output);
    assert_eq!(k.apim.posts(), 1, "never POST again after a 409");
    assert_eq!(k.apim.puts(), 1);
    assert!(ok(&k.once().await).starts_with("in sync"));
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncers_converge_without_flapping() {
    let k = Km::start("").await;
    let other = Config::load(&k.dir.join("jwtgate.toml")).unwrap();
    for _ in 0..3 {
        let (a, b) = tokio::join!(k.once(), run_pass(&other, PassOptions::default(), Duration::from_secs(30)));
        assert_eq!((a.exit_code, b.exit_code), (0, 0), "{} / {}", a.output, b.output);
    }
    assert_eq!(k.apim.stored("Asgardeo").map(|_| 1), Some(1));
    assert!(k.apim.posts() <= 2 && k.apim.puts() <= 1, "posts {} puts {}", k.apim.posts(), k.apim.puts());
    let before = k.apim.writes();
    for _ in 0..3 {
        ok(&k.once().await);
        ok(&run_pass(&other, PassOptions::default(), Duration::from_secs(30)).await);
    }
    assert_eq!(k.apim.writes(), before, "converged replicas do not write");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_recovery() {
    let k = Km::start("").await;
    k.apim.inject(&[Fault::ServerError, Fault::Drop, Fault::Slow(Duration::from_secs(3))]);
    let out = k.once().await;
    assert!(ok(&out).starts_with("create:"), "{}", out.output);
    assert_eq!(k.apim.stored("Asgardeo").map(|_| 1), Some(1));
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_gives_up_naming_the_last_status() {
    let k = Km::start("").await;
    k.apim.inject(&[Fault::ServerError; 40]);
    let out = run_pass(&k.config, PassOptions::default(), Duration::from_secs(3)).await;
    assert_eq!(out.exit_code, 1);
    assert!(out.output.contains("HTTP 500"), "{}", out.output);
    assert!(out.output.contains("giving up"), "{}", out.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apim_4xx_is_reported_with_its_code_and_not_retried() {
    let k = Km::start("").await;
    // Without a revocation endpoint APIM refuses the registration (required endpoint).
    k.idp.patch_discovery(Some(json!({"revocation_endpoint": null})));
    let out = k.once().await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(out.output.contains("901401"), "{}", out.output);
    assert!(out.output.contains("revoke_endpoint"), "{}", out.output);
    assert_eq!(k.apim.posts(), 1, "a 4xx is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_admin_token_is_renewed_once() {
    let k = Km::start("").await;
    let metrics = Arc::new(jwtgate::metrics::Metrics::new());
    let settings = k.config.key_manager_sync.for_one_pass().unwrap().unwrap().clone();
    let status = Arc::new(jwtgate::km_sync::status::SyncStatus::new(jwtgate::km_sync::status::SyncState::Drifted));
    let syncer = jwtgate::km_sync::reconcile::Syncer::new(
        settings,
        metrics.km_sync(),
        status,
        Arc::new(jwtgate::clock::SystemClock),
    )
    .unwrap();
    let fetcher = jwtgate::fetch::HttpFetcher::new().unwrap();
    let keys = jwtgate::keys::IssuerKeys::new(
        k.config.issuers[0].clone(),
        fetcher,
        metrics.clone(),
        Arc::new(jwtgate::clock::SystemClock),
    );
    let doc = keys.fetch_discovery().await.unwrap();
    let url = keys.discovery_url();
    syncer.pass(&doc, &url, PassOptions::default()).await.unwrap();
    k.apim.expire_tokens();
    let token_requests =
        |apim: &FakeApim| apim.state.log.lock().unwrap().iter().filter(|(_, p)| p == "/oauth2/token").count();
    let before = token_requests(&k.apim);
    syncer.pass(&doc, &url, PassOptions::default()).await.unwrap();
    assert_eq!(token_requests(&k.apim), before + 1);
    // And a syncer that keeps correcting the same field warns and counts a conflict.
    for _ in 0..3 {
        k.apim.admin_edit("Asgardeo", |km| {
            km["additionalProperties"]
                .as_object_mut()
                .unwrap()
                .insert("token_endpoint".into(), json!("https://other-writer"));
        });
        syncer.pass(&doc, &url, PassOptions::default()).await.unwrap();
    }
    // (Built by hand here, not started by `serve`: say that this process runs the sync.)
    metrics.export_km_sync(true);
    let m = metrics.render();
    assert_eq!(metric(&m, "jwtgate_km_sync_conflicts_total"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_km_sync_writes_total{op=\"update\"}"), 3.0, "{m}");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_and_client_credentials_auth_work() {
    for auth in ["basic", "client_credentials"] {
        let k = Km::start(&format!("auth = \"{auth}\"")).await;
        ok(&k.once().await);
        assert!(k.apim.stored("Asgardeo").is_some(), "{auth}");
        let used_token = k.apim.state.log.lock().unwrap().iter().any(|(_, p)| p == "/oauth2/token");
        assert_eq!(used_token, auth != "basic", "{auth}");
    }
}

async fn status(client: &reqwest::Client, admin: std::net::SocketAddr) -> Value {
    client.get(format!("http://{admin}/status")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_at_start_and_at_once_when_discovery_changes() {
    let k = Km::start_with(
        "enabled = true\ninterval_seconds = 300",
        "jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1",
    )
    .await;
    let clock = Arc::new(jwtgate::clock::ManualClock::at_system_now());
    let gw = jwtgate::serve::start(k.config.clone(), clock.clone()).await.unwrap();
    let client = http_client();
    wait_until("the first pass", || async {
        status(&client, gw.admin_addr).await["key_manager_sync"]["state"] == "in_sync"
    })
    .await;
    let s = status(&client, gw.admin_addr).await;
    let km = &s["key_manager_sync"];
    assert_eq!(km["state"], "in_sync", "{s}");
    // Created once; a second pass (the first key refresh may trigger one) finds it unchanged.
    assert!(km["last_result"] == "created" || km["last_result"] == "unchanged", "{s}");
    assert_eq!((k.apim.posts(), k.apim.puts()), (1, 0), "{s}");
    assert!(km["key_manager_id"].as_str().is_some_and(|i| !i.is_empty()), "{s}");
    assert!(km["next_run"].as_str().is_some() && km["last_run"].as_str().is_some(), "{s}");
    // The IdP moves its token endpoint: the refresher sees it and the sync follows at once.
    let new_endpoint = format!("http://{}/t/acme/oauth2/token2", k.idp.addr);
    k.idp.patch_discovery(Some(json!({"token_endpoint": new_endpoint})));
    // The next refresh (a second away) sees it; the 300 s sync interval is far off.
    advance_until(&clock, Duration::from_millis(250), "the discovery change triggered a sync", || async {
        k.apim.get_view("Asgardeo").unwrap()["tokenEndpoint"] == new_endpoint
            && status(&client, gw.admin_addr).await["key_manager_sync"]["last_result"] == "updated"
    })
    .await;
    let s = status(&client, gw.admin_addr).await;
    assert_eq!(s["key_manager_sync"]["last_diff"], json!(["tokenEndpoint"]), "{s}");
    let m = client.get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "jwtgate_km_sync_writes_total{op=\"create\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_km_sync_writes_total{op=\"update\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_km_sync_in_sync"), 1.0);
    assert!(metric(&m, "jwtgate_km_sync_last_success_timestamp_seconds") > 1.7e9);
    assert!(!m.contains(SECRET) && !s.to_string().contains(SECRET), "a secret leaked");
    // The hot path is unaffected while APIM fails.
    k.apim.inject(&[Fault::ServerError; 50]);
    k.idp.patch_discovery(Some(json!({"token_endpoint": format!("http://{}/t/acme/oauth2/token3", k.idp.addr)})));
    let token = k.key.token(&k.idp.claims(now(), "a", AUD, ""));
    advance_until(&clock, Duration::from_millis(250), "the failing pass is reported", || async {
        let r = client.get(format!("http://{}/api/x", gw.proxy_addr)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200, "the hot path is unaffected");
        status(&client, gw.admin_addr).await["key_manager_sync"]["state"] == "error"
    })
    .await;
    let s = status(&client, gw.admin_addr).await;
    assert_eq!(s["key_manager_sync"]["state"], "error", "{s}");
    assert!(s["key_manager_sync"]["last_error"].as_str().unwrap_or("").contains("HTTP 500"), "{s}");
    gw.shutdown().await;
    k.apim.assert_clean();
}

#[test]
fn km_sync_cli_dry_run_and_usage() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let k = rt.block_on(Km::start(""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["km-sync", "--once", "--dry-run", "--config"])
        .arg(k.dir.join("jwtgate.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("create: key manager \"Asgardeo\""), "{stdout}");
    assert_eq!(k.apim.writes(), 0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["km-sync", "--config"])
        .arg(k.dir.join("jwtgate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--once is required");
    drop(k);
}

#[test]
fn the_fakes_spec_copy_is_the_published_admin_api() {
    // crates/testkit/src/apim/admin-api.json is a copy of shared/apim/admin-api.json (see SOURCE.md
    // beside it). Where the shared folder is present, check both the JSON and the YAML agree.
    let copy: Value = serde_json::from_str(include_str!("../../crates/testkit/src/apim/admin-api.json")).unwrap();
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/apim");
    if let Ok(yaml) = std::fs::read_to_string(shared.join("admin-api.yaml")) {
        let from_yaml: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(from_yaml["components"]["schemas"]["KeyManager"], copy["components"]["schemas"]["KeyManager"]);
        assert_eq!(from_yaml["paths"]["/key-managers"], copy["paths"]["/key-managers"]);
    }
    assert_eq!(copy["info"]["version"], "v4");
    assert!(copy["components"]["schemas"]["KeyManager"]["properties"]["additionalProperties"].is_object());
}

/// A CA and a `localhost` certificate it signed: (CA PEM, leaf DER, leaf key PKCS#8 DER).
fn test_pki() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    (ca.pem(), leaf.der().to_vec(), leaf_key.serialize_der())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_apim_is_trusted_through_ca_file_only() {
    let (ca_pem, leaf, key) = test_pki();
    // With the CA bundle: the whole pass works over TLS.
    let k = Km::start_on(
        FakeApim::start_tls(vec![leaf.clone()], key.clone()).await,
        Some(&ca_pem),
        "ca_file = \"apim-ca.pem\"",
        "",
    )
    .await;
    assert!(k.apim.url().starts_with("https://"));
    assert!(ok(&k.once().await).starts_with("create:"));
    k.apim.assert_clean();
    // Without it the self-signed chain is refused: a clear error, nothing written.
    let k = Km::start_on(FakeApim::start_tls(vec![leaf.clone()], key.clone()).await, None, "", "").await;
    let out = k.once().await;
    assert_eq!(out.exit_code, 1, "{}", out.output);
    assert!(out.output.to_lowercase().contains("certificate"), "{}", out.output);
    assert!(out.output.contains("ca_file"), "the error says what to do: {}", out.output);
    assert_eq!(k.apim.writes(), 0);
    // insecure_skip_verify works, because apim_url is loopback.
    let k = Km::start_on(FakeApim::start_tls(vec![leaf], key).await, None, "insecure_skip_verify = true", "").await;
    assert!(ok(&k.once().await).starts_with("create:"));
}

#[test]
fn insecure_skip_verify_is_refused_off_loopback() {
    let text = format!(
        "{}\n[key_manager_sync]\napim_url = \"https://apim.example:9443\"\nusername = \"admin\"\npassword_env = \"X\"\n\
         mgmt_client_id = \"c\"\nmgmt_client_secret_env = \"Y\"\ninsecure_skip_verify = true\n",
        config_text("https://api.asgardeo.io/t/acme/oauth2/token/.well-known/openid-configuration", "127.0.0.1:1".parse().unwrap(), "", "")
    );
    // Enabled, the section is checked with the file; switched off (the default), its problems
    // are kept for `check-config` and `km-sync --once`.
    let on = text.replace("[key_manager_sync]\n", "[key_manager_sync]\nenabled = true\n");
    let problems = Config::parse(&on, None).unwrap_err().problems;
    assert!(problems.iter().any(|p| p.path == "key_manager_sync.insecure_skip_verify"), "{problems:?}");
    let config = Config::parse(&text, None).unwrap();
    let problems = config.key_manager_sync.for_one_pass().unwrap_err();
    assert!(problems.iter().any(|p| p.path == "key_manager_sync.insecure_skip_verify"), "{problems:?}");
}

// --- issue 8: a registration the Developer Portal can use -------------------------------------

/// Runs the real binary, off the runtime's threads (the fakes run on them):
/// `jwtgate km-sync --once <extra> --config <dir>/jwtgate.toml`.
async fn km_sync_cli(k: &Km, extra: &'static [&'static str]) -> std::process::Output {
    let cfg = k.dir.join("jwtgate.toml");
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(["km-sync", "--once"])
            .args(extra)
            .arg("--config")
            .arg(cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_one_pass_the_developer_portal_generates_keys() {
    let k = Km::start("").await;
    // Before any pass there is nothing to generate keys with.
    assert_eq!(k.apim.generate_keys("app-1", "Asgardeo").await.0, 400);
    ok(&k.once().await);
    let v = k.apim.get_view("Asgardeo").unwrap();
    assert_eq!(v["enableOAuthAppCreation"], true);
    assert_eq!(v["enableMapOAuthConsumerApps"], true);
    assert_eq!(v["enableTokenGeneration"], true);
    let (status, keys) = k.apim.generate_keys("app-1", "Asgardeo").await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys["consumerKey"].as_str().is_some_and(|c| !c.is_empty()), "{keys}");
    assert_eq!(keys["keyState"], "COMPLETED");
    assert!(keys["token"]["accessToken"].is_string(), "token generation is on: {keys}");
    k.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_stored_with_app_creation_off_is_corrected() {
    // What APIM stores for a body that omits the flags (an older jwtgate, a script): the fake
    // applies KeyManagerDTO's defaults, exactly as the real server does.
    let fresh = Km::start("").await;
    fresh.apim.seed(json!({"name": "Asgardeo", "type": "Asgardeo", "issuer": "x"}));
    let (status, err) = fresh.apim.generate_keys("app-1", "Asgardeo").await;
    assert_eq!((status, err["code"].as_i64()), (400, Some(901405)), "omitted = app creation off: {err}");
    let v = fresh.apim.get_view("Asgardeo").unwrap();
    assert_eq!(v["enableOAuthAppCreation"], false);
    assert_eq!(v["enableMapOAuthConsumerApps"], false);
    assert!(v.get("enableTokenGeneration").is_none(), "no default: {v}");
    assert_eq!(v["enableSelfValidationJWT"], true);
    // One pass corrects the three flags (and everything else), and keys can be generated.
    let out = ok(&fresh.once().await).to_string();
    for f in ["enableOAuthAppCreation", "enableMapOAuthConsumerApps", "enableTokenGeneration"] {
        assert!(out.contains(&format!("update: {f}:")), "{f} corrected: {out}");
    }
    assert_eq!(fresh.apim.generate_keys("app-1", "Asgardeo").await.0, 200);
    fresh.apim.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_switched_off_in_the_config_are_kept_off() {
    let k = Km::start("oauth_app_creation = false\ntoken_generation = false").await;
    ok(&k.once().await);
    let v = k.apim.get_view("Asgardeo").unwrap();
    assert_eq!(v["enableOAuthAppCreation"], false);
    assert_eq!(v["enableTokenGeneration"], false);
    assert_eq!(v["enableMapOAuthConsumerApps"], true);
    let (status, err) = k.apim.generate_keys("app-1", "Asgardeo").await;
    assert_eq!((status, err["code"].as_i64()), (400, Some(901405)));
    assert!(k.once().await.output.starts_with("in sync"), "no fight with our own choice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_scopes_resource_is_the_name_the_user_chose() {
    let k = Km::start("global_scopes_resource = \"Shop global scopes\"").await;
    ok(&k.once().await);
    assert_eq!(k.props()["APIM_GLOBAL_SCOPES"], "Shop global scopes");
    let k = Km::start("").await;
    ok(&k.once().await);
    assert_eq!(k.props()["APIM_GLOBAL_SCOPES"], "APIM_GLOBAL_SCOPES", "the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_secret_sends_a_secret_changed_by_hand() {
    let k = Km::start("").await;
    ok(&k.once().await);
    // An administrator types another secret in the Admin Portal: APIM masks it, the
    // fingerprint still matches, so a normal pass cannot see it.
    k.apim.admin_edit("Asgardeo", |km| km["additionalProperties"]["mgmt_client_secret"] = json!("typed-by-hand"));
    let puts = k.apim.puts();
    let out = km_sync_cli(&k, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("in sync"));
    assert_eq!(k.apim.puts(), puts);
    assert_eq!(k.props()["mgmt_client_secret"], "typed-by-hand");
    let out = km_sync_cli(&k, &["--push-secret"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("update: additionalProperties.mgmt_client_secret"), "{stdout}");
    assert!(!stdout.contains(SECRET), "never printed: {stdout}");
    assert_eq!(k.apim.puts(), puts + 1, "one PUT");
    assert_eq!(k.props()["mgmt_client_secret"], SECRET, "the configured secret is back");
    k.apim.assert_clean();
}
