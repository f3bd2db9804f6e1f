//! The configs new users actually write, through the real binary: a switched-off sync section,
//! and each numeric key set alone to the smallest and largest value it accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
    c.env_remove("JWTGATE_CONFIG").env("RUST_LOG", "warn");
    c
}

/// Writes `text` to a new file in a fresh temporary folder.
fn temp_config(text: &str) -> PathBuf {
    let p = temp_dir("first").join("jwtgate.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn check_config(path: &Path) -> (i32, String, String) {
    let out = bin().args(["check-config", "--config"]).arg(path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `serve`, waits for its "listening" log line and returns the admin address; the
/// child is killed on drop.
async fn start_serve(path: &Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["serve", "--config"])
        .arg(path)
        .env_remove("JWTGATE_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let admin = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("admin_addr=").nth(1) {
                return Some(rest.split_whitespace().next().unwrap().to_string());
            }
        }
        None
    })
    .await
    .expect("serve logged its addresses in time")
    .unwrap_or_else(|| panic!("serve exited before listening"));
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, admin)
}

/// A config with `extra_issuers` more issuers and a sync section that says only `enabled = false`.
fn switched_off_config(idp: &FakeIssuer, upstream: std::net::SocketAddr, two_issuers: bool) -> String {
    let mut text = config_text(&idp.discovery_url(), upstream, "", "");
    if two_issuers {
        text.push_str(
            "\n[[issuers]]\nname = \"second\"\n\
             discovery_url = \"http://127.0.0.1:9/t/other/oauth2/token/.well-known/openid-configuration\"\n",
        );
    }
    text.push_str("\n[key_manager_sync]\nenabled = false\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_accepts_a_switched_off_sync_section() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    let upstream = EchoUpstream::start().await.unwrap();
    let token = key.token(&idp.claims(now(), "alice", AUD, "orders:read"));
    for two in [false, true] {
        let path = temp_config(&switched_off_config(&idp, upstream.addr, two));
        let (code, stdout, stderr) = check_config(&path);
        assert_eq!(code, 0, "two issuers: {two}: {stderr}");
        assert!(stdout.contains("key-manager sync switched off"), "{stdout}");
        // What the section still lacks is a warning, naming each key.
        for key in ["key_manager_sync.apim_url", "key_manager_sync.username", "key_manager_sync.mgmt_client_id"] {
            assert!(stderr.contains(key), "warning names {key}: {stderr}");
        }
        assert!(stderr.contains("warning"), "{stderr}");
        assert_eq!(
            stderr.contains("key_manager_sync.issuer: required when more than one"),
            two,
            "the issuer is only required with two issuers: {stderr}"
        );

        let token2 = token.clone();
        let p2 = path.clone();
        let out = tokio::task::spawn_blocking(move || {
            bin().args(["validate", "--route", "/orders/1", "--config"]).arg(&p2).arg(&token2).output().unwrap()
        })
        .await
        .unwrap();
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{verdict}");
        assert_eq!(verdict["allowed"], true);

        let (mut child, admin) = start_serve(&path).await;
        let client = http_client();
        let status: Value = client.get(format!("http://{admin}/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(status["key_manager_sync"]["state"], "disabled", "{status}");
        child.start_kill().unwrap();
        let _ = child.wait().await;

        // Where the sync runs, the same section is refused with the key paths.
        let p2 = path.clone();
        let out = tokio::task::spawn_blocking(move || {
            bin().args(["km-sync", "--once", "--dry-run", "--config"]).arg(&p2).output().unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("key_manager_sync.apim_url: missing"), "{stderr}");
    }
}

#[test]
fn an_enabled_sync_section_is_still_checked_in_full() {
    let text = format!(
        "{}\n[key_manager_sync]\nenabled = true\n",
        config_text(
            "http://127.0.0.1:9/t/a/oauth2/token/.well-known/openid-configuration",
            "127.0.0.1:1".parse().unwrap(),
            "",
            ""
        )
    );
    let path = temp_config(&text);
    let (code, _, stderr) = check_config(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("key_manager_sync.apim_url: missing"), "{stderr}");
    let out = bin().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = text.replace("enabled = true", "enabled = true\nissuer = \"nope\"");
    let (code, _, stderr) = check_config(&temp_config(&text));
    assert_eq!(code, 2);
    assert!(stderr.contains("key_manager_sync.issuer: no [[issuers]] entry is named \"nope\""), "{stderr}");
}

/// Every numeric key, with the smallest and the largest value it accepts. A value alone must
/// never conflict with a default of another key.
const NUMERIC_KEYS: &[(&str, &str, u64, u64)] = &[
    ("server", "max_token_bytes", 64, 1_048_576),
    ("server", "max_header_bytes", 1024, 1_056_768),
    ("server", "drain_timeout_seconds", 0, 3600),
    ("server", "shutdown_delay_seconds", 0, 300),
    ("server", "header_read_timeout_seconds", 1, 3600),
    ("server", "idle_timeout_seconds", 1, 86_400),
    ("server", "body_read_timeout_seconds", 1, 3600),
    ("server", "tunnel_max_lifetime_seconds", 1, 604_800),
    ("server", "max_connections", 1, 1_000_000),
    ("server", "tunnel_idle_timeout_seconds", 1, 86_400),
    ("server", "send_timeout_seconds", 1, 3600),
    ("server", "max_concurrent_streams", 1, 10_000),
    ("server", "dpop_replay_cache_entries", 1, 100_000_000),
    ("server", "token_cache_entries", 0, 10_000_000),
    ("server", "worker_threads", 0, 256),
    ("upstream", "connect_timeout_seconds", 1, 300),
    ("upstream", "timeout_seconds", 1, 86_400),
    ("upstream", "pool_idle_timeout_seconds", 1, 86_400),
    ("upstream", "pool_max_idle", 0, 100_000),
    ("upstream", "max_connections", 1, 1_000_000),
    ("issuers", "leeway_seconds", 0, 3600),
    ("issuers", "jwks_refresh_seconds", 1, 86_400),
    ("issuers", "jwks_refresh_min_seconds", 1, 86_400),
    ("issuers", "jwks_min_refetch_seconds", 0, 86_400),
    ("issuers", "jwks_max_stale_seconds", 2, 2_592_000),
    ("issuers", "fetch_timeout_seconds", 1, 120),
    ("issuers", "dpop_max_age_seconds", 1, 3600),
    ("issuers", "max_response_bytes", 1024, 16_777_216),
    ("key_manager_sync", "interval_seconds", 5, 86_400),
    ("key_manager_sync", "jitter_seconds", 0, 86_400),
    ("key_manager_sync", "max_backoff_seconds", 1, 3600),
    ("key_manager_sync", "request_timeout_seconds", 1, 300),
];

/// The smallest config with an enabled sync (so its keys are checked in full), with `line`
/// added to `section`.
fn config_with(section: &str, line: &str) -> String {
    let at = |s: &str| if s == section { line } else { "" };
    format!(
        "[server]\n{}\n[upstream]\nurl = \"http://127.0.0.1:9000\"\n{}\n\
         [[issuers]]\nname = \"a\"\norganization = \"acme\"\n{}\n\
         [key_manager_sync]\nenabled = true\napim_url = \"https://127.0.0.1:9443\"\nusername = \"admin\"\n\
         password_env = \"APIM_ADMIN_PASSWORD\"\nmgmt_client_id = \"c\"\nmgmt_client_secret_env = \"S\"\n{}\n",
        at("server"),
        at("upstream"),
        at("issuers"),
        at("key_manager_sync"),
    )
}

#[test]
fn each_numeric_key_alone_at_its_bounds_is_a_valid_config() {
    let (code, _, stderr) = check_config(&temp_config(&config_with("", "")));
    assert_eq!(code, 0, "the base config: {stderr}");
    let mut failures = Vec::new();
    for (section, key, lo, hi) in NUMERIC_KEYS {
        for v in [*lo, *hi] {
            let (code, _, stderr) = check_config(&temp_config(&config_with(section, &format!("{key} = {v}"))));
            if code != 0 {
                failures.push(format!("{section}.{key} = {v}: {stderr}"));
            }
        }
        // One past each bound is refused, naming the key (so the bounds above are the real ones).
        let mut outside = vec![*hi + 1];
        if *lo > 0 {
            outside.push(lo - 1);
        }
        for v in outside {
            let (code, _, stderr) = check_config(&temp_config(&config_with(section, &format!("{key} = {v}"))));
            if code != 2 || !stderr.contains(key) {
                failures.push(format!("{section}.{key} = {v} should be refused naming the key: {code} {stderr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn two_written_values_can_still_conflict() {
    let text = config_with("issuers", "jwks_refresh_seconds = 10\njwks_refresh_min_seconds = 20");
    let (code, _, stderr) = check_config(&temp_config(&text));
    assert_eq!(code, 2);
    assert!(stderr.contains("issuers[0].jwks_refresh_min_seconds: must not exceed jwks_refresh_seconds"), "{stderr}");
    let text = config_with("server", "max_token_bytes = 4096\nmax_header_bytes = 2048");
    let (code, _, stderr) = check_config(&temp_config(&text));
    assert_eq!(code, 2);
    assert!(stderr.contains("server.max_token_bytes"), "{stderr}");
}

// --- the token's own defects come before the issuer's key availability ------------------------

fn hs256(claims: &Value) -> String {
    use aws_lc_rs::hmac;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let b64 = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    let input = format!(
        "{}.{}",
        b64(serde_json::json!({"alg": "HS256", "typ": "at+jwt"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"secret"), input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// Tokens that are wrong whatever the keys are, each with the reason it must be refused for.
fn client_faults(idp: &FakeIssuer, key: &SigningKey) -> Vec<(&'static str, String)> {
    let good = idp.claims(now(), "alice", AUD, "");
    let mut expired = good.clone();
    expired["exp"] = (now() - 3600).into();
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "someone-else".into();
    vec![
        ("HS256", hs256(&good)),
        ("expired", key.token(&expired)),
        ("no exp", key.token(&no_exp)),
        ("wrong aud", key.token(&wrong_aud)),
        ("malformed", "abc.def".into()),
    ]
}

async fn status_of(client: &reqwest::Client, addr: std::net::SocketAddr, token: &str) -> (u16, Value) {
    let r = client.get(format!("http://{addr}/api/x")).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_idp_down_since_start_a_bad_token_is_still_401() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    idp.set_down(true);
    let upstream = EchoUpstream::start().await.unwrap();
    let text = config_text(&idp.discovery_url(), upstream.addr, "", "");
    let gw = start_gateway(&text).await;
    let client = http_client();
    for (what, token) in client_faults(&idp, &key) {
        let (status, body) = status_of(&client, gw.proxy_addr, &token).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{what}: {body}");
    }
    let good = key.token(&idp.claims(now(), "alice", AUD, ""));
    let (status, body) = status_of(&client, gw.proxy_addr, &good).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
    assert_eq!(upstream.hits(), 0);

    // `validate` judges the same way: exit 1 for the client's faults, 3 for the outage.
    let path = temp_config(&text);
    for (what, token) in client_faults(&idp, &key).into_iter().chain([("good", good)]) {
        let p = path.clone();
        let out = tokio::task::spawn_blocking(move || {
            bin().args(["validate", "--route", "/api/x", "--config"]).arg(&p).arg(&token).output().unwrap()
        })
        .await
        .unwrap();
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected = if what == "good" { (3, 503) } else { (1, 401) };
        assert_eq!(
            (out.status.code().unwrap(), verdict["status"].as_i64().unwrap()),
            (expected.0, expected.1),
            "{what}: {verdict}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_stale_key_set_a_bad_token_is_still_401() {
    let h =
        Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\njwks_max_stale_seconds = 2", "")
            .await;
    h.idp.set_down(true);
    // The gateway's clock moves on until the last good key set is stale: a good token's 503.
    let good = h.token("");
    advance_until(h.manual_clock(), Duration::from_millis(250), "the key set is stale", || async {
        status_of(&h.client, h.gw.proxy_addr, &good).await.0 == 503
    })
    .await;
    for (what, token) in client_faults(&h.idp, &h.key) {
        let (status, body) = status_of(&h.client, h.gw.proxy_addr, &token).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{what}: {body}");
    }
    let (status, _) = status_of(&h.client, h.gw.proxy_addr, &h.token("")).await;
    assert_eq!(status, 503);
}

// --- small things a user sees -----------------------------------------------------------------

/// The sum of every sample of `name` (all label sets).
fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_duration_observes_every_request_refusals_included() {
    let h = Harness::start().await;
    let no_scope = h.token("");
    let with_scope = h.token("orders:read");
    let bad = format!("{}x", h.token(""));
    let statuses = [
        h.client.get(h.url("/orders/1")).bearer_auth(&with_scope).send().await.unwrap().status(),
        h.client.get(h.url("/orders/1")).bearer_auth(&no_scope).send().await.unwrap().status(),
        h.client.get(h.url("/orders/1")).bearer_auth(&bad).send().await.unwrap().status(),
        h.client.get(h.url("/orders/1")).send().await.unwrap().status(),
        h.client.get(h.url("/public/x")).send().await.unwrap().status(),
        h.client.get(h.url("/nowhere")).send().await.unwrap().status(),
        h.client.get(h.url("/public/x%2F..%2Forders")).send().await.unwrap().status(),
        h.client.get(h.url("/api/x")).header("x-big", "a".repeat(70_000)).send().await.unwrap().status(),
    ];
    let codes: Vec<u16> = statuses.iter().map(|s| s.as_u16()).collect();
    assert_eq!(codes, [200, 403, 401, 401, 200, 404, 400, 431]);
    let m = h.metrics().await;
    let requests = sum_of(&m, "jwtgate_requests_total");
    assert_eq!(requests, 8.0, "{m}");
    assert_eq!(sum_of(&m, "jwtgate_request_duration_seconds_count"), requests, "{m}");
}

#[test]
fn dev_prints_a_validate_line_that_works_as_pasted() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["dev", "--any-port"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut line = None;
    for l in std::io::BufRead::lines(std::io::BufReader::new(out)) {
        let l = l.unwrap();
        if let Some(rest) = l.trim().strip_prefix("why a token is refused:") {
            line = Some(rest.trim().to_string());
            break;
        }
    }
    let line = line.expect("dev prints a validate line");
    // Paste it as a shell would run it (`cargo run --release --` stands for the binary).
    let cmd = line.replacen("cargo run --release --", env!("CARGO_BIN_EXE_jwtgate"), 1);
    let out = Command::new("sh").arg("-c").arg(&cmd).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let verdict: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{cmd}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "{verdict}");
    assert_eq!(verdict["status"], 403, "the line judges bob's token on /orders/42: {verdict}");
}
