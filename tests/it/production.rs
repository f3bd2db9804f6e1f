//! Issue 10, running it in production: reload without dropping anything (POST /reload and
//! SIGHUP), TLS on the proxy and decision listeners, TLS and HTTP/2 to the upstream, and gRPC
//! through jwtgate with a real tonic client and server. Everything over loopback sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jwtgate::clock::SystemClock;
use jwtgate::config::Config;
use serde_json::Value;

/// A server config for `{name}-cert.pem`/`{name}-key.pem` in `dir`, offering `alpn`.
fn server_tls(dir: &Path, name: &str, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let t = jwtgate::config::ListenerTls {
        cert_file: dir.join(format!("{name}-cert.pem")),
        key_file: dir.join(format!("{name}-key.pem")),
    };
    let mut c = Arc::unwrap_or_clone(t.load().unwrap().config);
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

/// An HTTPS client trusting only `ca_pem`.
fn client_trusting(ca_pem: &str) -> reqwest::Client {
    jwtgate::tls::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A fake organization, an echo upstream, and a gateway started from a file in its own folder
/// (so that it can be reloaded).
struct Setup {
    idp: FakeIssuer,
    key: Arc<SigningKey>,
    upstream: EchoUpstream,
    dir: PathBuf,
    path: PathBuf,
    gw: jwtgate::serve::Running,
    client: reqwest::Client,
}

impl Setup {
    async fn start(tag: &str, routes_extra: &str, server_extra: &str) -> Setup {
        Setup::start_on(tag, routes_extra, server_extra, Arc::new(SystemClock)).await
    }

    /// [`Setup::start`] with the gateway on `clock`.
    async fn start_on(
        tag: &str,
        routes_extra: &str,
        server_extra: &str,
        clock: Arc<dyn jwtgate::clock::Clock>,
    ) -> Setup {
        let idp = FakeIssuer::start("acme").await.unwrap();
        let key = idp.add_shared_key(harness_key());
        let upstream = EchoUpstream::start().await.unwrap();
        let dir = temp_dir(tag);
        let path = dir.join("jwtgate.toml");
        let text = config_text(&idp.discovery_url(), upstream.addr, "", server_extra) + routes_extra;
        std::fs::write(&path, text).unwrap();
        let gw = jwtgate::serve::start(Config::load(&path).unwrap(), clock).await.unwrap();
        let s = Setup { idp, key, upstream, dir, path, gw, client: http_client() };
        s.wait_ready().await;
        s
    }

    async fn wait_ready(&self) {
        wait_ready_at(self.gw.admin_addr).await;
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.admin_addr)
    }

    fn token(&self, scope: &str) -> String {
        self.key.token(&self.idp.claims(now(), "alice", AUD, scope))
    }

    /// Rewrites the config file with `routes_extra` and `server_extra`, and `upstream` (the
    /// echo's address unless given).
    fn rewrite(&self, routes_extra: &str, server_extra: &str, upstream: Option<SocketAddr>) {
        let text = config_text(&self.idp.discovery_url(), upstream.unwrap_or(self.upstream.addr), "", server_extra)
            + routes_extra;
        std::fs::write(&self.path, text).unwrap();
    }

    /// `POST /reload`: status and body.
    async fn reload(&self) -> (u16, Value) {
        let r = self.client.post(self.admin("/reload")).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn status(&self) -> Value {
        self.client.get(self.admin("/status")).send().await.unwrap().json().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.client.get(self.admin("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

const REPORTS_ROUTE: &str = r#"
[[routes]]
name = "reports"
path_prefix = "/reports"
auth = "anonymous"
"#;

/// One HTTP/1.1 keep-alive connection to `addr`.
async fn one_connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    tx
}

async fn get_on(tx: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> u16 {
    tx.ready().await.expect("the connection is still open");
    let req = http::Request::get(path).header("host", "api.test").body(Empty::new()).unwrap();
    let resp = tx.send_request(req).await.expect("an answer on the same connection");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_by_reload_applies_on_a_connection_that_stays_open() {
    let s = Setup::start("reload-route", "", "").await;
    let mut conn = one_connection(s.gw.proxy_addr).await;
    assert_eq!(get_on(&mut conn, "/reports/q3").await, 404, "no such route yet");
    let sha_before = s.status().await["config"]["sha256"].as_str().unwrap().to_string();
    let fetches_before = s.idp.jwks_fetches();
    let keys_before = s.gw.keys();

    s.rewrite(REPORTS_ROUTE, "", None);
    let (status, body) = s.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "reloaded");
    assert_eq!(body["restart_needed"], serde_json::json!([]));

    assert_eq!(get_on(&mut conn, "/reports/q3").await, 200, "the new route, on the same connection");
    assert_eq!(s.upstream.hits(), 1);
    // The unchanged issuer kept its key store: no refetch, the same store object.
    assert_eq!(s.idp.jwks_fetches(), fetches_before, "a reload must not refetch unchanged issuers' keys");
    assert!(Arc::ptr_eq(&keys_before.issuers[0], &s.gw.keys().issuers[0]));
    let r = s.client.get(format!("http://{}/orders/1", s.gw.proxy_addr)).bearer_auth(s.token("orders:read")).send();
    assert_eq!(r.await.unwrap().status(), 200, "tokens still verify against the kept keys");

    let st = s.status().await;
    assert_ne!(st["config"]["sha256"].as_str().unwrap(), sha_before);
    assert_eq!(st["config"]["reloads"]["ok"], 1);
    assert_eq!(st["config"]["file"].as_str().unwrap(), s.path.display().to_string());
    assert!(st["config"]["loaded_at"].as_u64().unwrap() > 1_700_000_000);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "jwtgate_config_reloads_total{result=\"ok\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_config_reloads_total{result=\"error\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_its_problems_and_changes_nothing() {
    let s = Setup::start("reload-invalid", REPORTS_ROUTE, "").await;
    let sha_before = s.status().await["config"]["sha256"].as_str().unwrap().to_string();
    // Two problems at once, both reported with their key paths.
    let broken = std::fs::read_to_string(&s.path).unwrap().replace("timeout_seconds = 2", "timeout_seconds = 0")
        + "\n[[routes]]\npath_prefix = \"no-slash\"\n";
    std::fs::write(&s.path, broken).unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_config");
    assert_eq!(body["status"], "unchanged");
    let problems: Vec<String> =
        body["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(problems.iter().any(|p| p.starts_with("upstream.timeout_seconds")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("routes[")), "{problems:?}");

    // A file that is not TOML at all.
    std::fs::write(&s.path, "this is [ not toml").unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 400, "{body}");

    // A valid file whose TLS files are missing: refused as a whole.
    s.rewrite("", "[server.tls]\ncert_file = \"nope.pem\"\nkey_file = \"nope-key.pem\"", None);
    let (status, body) = s.reload().await;
    assert_eq!(status, 400, "{body}");
    assert!(body["problems"][0].as_str().unwrap().contains("nope.pem"), "{body}");

    // Still the old configuration: the route the broken files dropped still answers.
    let r = s.client.get(format!("http://{}/reports/x", s.gw.proxy_addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let st = s.status().await;
    assert_eq!(st["config"]["sha256"].as_str().unwrap(), sha_before);
    assert_eq!(st["config"]["reloads"]["failed"], 3);
    assert!(st["config"]["last_reload_error"][0].as_str().unwrap().contains("nope.pem"));
    let m = s.metrics().await;
    assert_eq!(metric(&m, "jwtgate_config_reloads_total{result=\"error\"}"), 3.0);
    assert_eq!(metric(&m, "jwtgate_config_reloads_total{result=\"ok\"}"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_other_sites_and_rebound_names() {
    let s = Setup::start("admin-guard", "", "health_listen = \"127.0.0.1:0\"\nadmin_hosts = [\"jwtgate-admin\"]").await;
    // A page on another site posting a "simple" request (no preflight) to /reload.
    s.rewrite(REPORTS_ROUTE, "health_listen = \"127.0.0.1:0\"\nadmin_hosts = [\"jwtgate-admin\"]", None);
    let r = s
        .client
        .post(s.admin("/reload"))
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = s.client.post(s.admin("/reload")).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.status().await["config"]["reloads"]["ok"], 0, "nothing was reloaded");
    let proxy = format!("http://{}/reports/x", s.gw.proxy_addr);
    assert_eq!(s.client.get(&proxy).send().await.unwrap().status(), 404);
    // DNS rebinding: the attacker's name resolving to 127.0.0.1.
    for path in ["/status", "/metrics", "/healthz"] {
        let r = s.client.get(s.admin(path)).header("host", "evil.example:9901").send().await.unwrap();
        assert_eq!(r.status(), 421, "{path}");
    }
    for host in ["jwtgate-admin:9901", "localhost:9901", "127.0.0.1"] {
        let r = s.client.get(s.admin("/status")).header("host", host).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    // Its own origin, and tools that send none, are served.
    let own = format!("http://{}", s.gw.admin_addr);
    let r = s.client.post(s.admin("/reload")).header("origin", own).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.client.get(&proxy).send().await.unwrap().status(), 200);

    // The health listener: probes and scrapes only.
    let health = s.gw.health_addr.expect("health listener");
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200), ("/status", 404)] {
        let r = s.client.get(format!("http://{health}{path}")).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let r = s.client.post(format!("http://{health}/reload")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(s.status().await["config"]["reloads"]["ok"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_late_changes_nothing() {
    let s = Setup::start("reload-late", "", "").await;
    // A new route and a sync whose CA bundle exists but is no PEM bundle: the file parses and
    // validates; only building the sync's APIM client fails, after everything else was built.
    std::fs::write(s.dir.join("apim-ca.pem"), "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap();
    std::fs::write(s.dir.join("mgmt-secret"), "s\n").unwrap();
    let sync = "\n[key_manager_sync]\nenabled = true\napim_url = \"https://127.0.0.1:9443\"\nusername = \"admin\"\n\
                password = \"admin\"\nmgmt_client_id = \"c\"\nmgmt_client_secret_file = \"mgmt-secret\"\n\
                ca_file = \"apim-ca.pem\"\n";
    s.rewrite(&format!("{REPORTS_ROUTE}{sync}"), "", None);
    let proxy = format!("http://{}/reports/q3", s.gw.proxy_addr);
    assert_eq!(s.client.get(&proxy).send().await.unwrap().status(), 404);
    let (status, body) = s.reload().await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["status"], "unchanged");
    assert!(body["problems"][0].as_str().unwrap().contains("key_manager_sync"), "{body}");
    assert_eq!(s.client.get(&proxy).send().await.unwrap().status(), 404, "the refused file's route is not live");
    assert_eq!(s.status().await["key_manager_sync"]["state"], "disabled", "no sync was started");
    // check-config reads the same file the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .env_remove("JWTGATE_CONFIG")
        .args(["check-config", "--config"])
        .arg(&s.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("key_manager_sync"));
}

/// Writes `text` as kubelet publishes a ConfigMap: a timestamped folder, `..data` pointing at
/// it, and `jwtgate.toml` pointing through `..data`; an update swaps `..data` atomically.
fn kubelet_publish(dir: &Path, generation: u32, text: &str) {
    let folder = dir.join(format!("..2026_12_06_{generation:02}"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("jwtgate.toml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(folder.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("jwtgate.toml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/jwtgate.toml", &link).unwrap();
    }
    if generation > 1 {
        let _ = std::fs::remove_dir_all(dir.join(format!("..2026_12_06_{:02}", generation - 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_reaches_the_running_gateway() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let _key = idp.add_shared_key(harness_key());
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("kubelet");
    let text = |routes: &str| config_text(&idp.discovery_url(), upstream.addr, "", "watch_config_seconds = 1") + routes;
    kubelet_publish(&dir, 1, &text(""));
    // The watcher polls on the gateway's clock: moved here, not waited for.
    let clock = Arc::new(ManualClock::at_system_now());
    let gw = jwtgate::serve::start(Config::load(&dir.join("jwtgate.toml")).unwrap(), clock.clone()).await.unwrap();
    wait_ready_at(gw.admin_addr).await;
    let client = http_client();
    let url = format!("http://{}/reports/q3", gw.proxy_addr);
    let step = Duration::from_millis(250);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 404);
    // kubelet swaps the symlink: no signal, no restart.
    kubelet_publish(&dir, 2, &text(REPORTS_ROUTE));
    advance_until(&clock, step, "the new route is live", || async {
        client.get(&url).send().await.unwrap().status() == 200
    })
    .await;
    // A broken update is refused as a whole, once, and the running configuration stays.
    kubelet_publish(&dir, 3, &(text(REPORTS_ROUTE) + "\n[[routes]]\npath_prefix = \"no-slash\"\n"));
    let status = || async {
        client.get(format!("http://{}/status", gw.admin_addr)).send().await.unwrap().json::<Value>().await.unwrap()
    };
    let failed = || async { status().await["config"]["reloads"]["failed"].as_u64() };
    advance_until(&clock, step, "the broken update is refused", || async { failed().await == Some(1) }).await;
    // Three more periods with nothing changed: not tried again.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed().await, Some(1), "not retried while nothing changes");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    // And the watcher still watches: a good update (the report route gone) applies.
    kubelet_publish(&dir, 4, &text(""));
    advance_until(&clock, step, "the next good update is live", || async {
        client.get(&url).send().await.unwrap().status() == 404
    })
    .await;
    assert_eq!(failed().await, Some(1));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_changes_are_reported_as_needing_a_restart() {
    let s = Setup::start("reload-listen", "", "").await;
    // The file says another port and another idle timeout: both wait for a restart, the rest applies.
    let text = std::fs::read_to_string(&s.path).unwrap().replacen(
        "\nlisten = \"127.0.0.1:0\"",
        "\nlisten = \"127.0.0.1:1\"\nidle_timeout_seconds = 5",
        1,
    ) + REPORTS_ROUTE;
    std::fs::write(&s.path, text).unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 200, "{body}");
    let needed: Vec<&str> = body["restart_needed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(needed, ["server.listen", "server.idle_timeout_seconds"]);
    let r = s.client.get(format!("http://{}/reports/x", s.gw.proxy_addr)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the routes applied; the listener stayed where it was");
    assert_eq!(s.status().await["config"]["restart_needed"].as_array().unwrap().len(), 2);
    // A later reload that changes only a route still reports what waits: the listener runs
    // where it started, whatever the last file said.
    let changed =
        std::fs::read_to_string(&s.path).unwrap().replace("path_prefix = \"/reports\"", "path_prefix = \"/reports2\"");
    std::fs::write(&s.path, changed).unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 200, "{body}");
    let needed: Vec<&str> = body["restart_needed"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(needed, ["server.listen", "server.idle_timeout_seconds"], "still pending");
    // Back to what runs: nothing is pending.
    let back = std::fs::read_to_string(&s.path).unwrap().replacen(
        "\nlisten = \"127.0.0.1:1\"\nidle_timeout_seconds = 5",
        "\nlisten = \"127.0.0.1:0\"",
        1,
    );
    std::fs::write(&s.path, back).unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_needed"], serde_json::json!([]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_no_issuer_keeps_the_verified_tokens() {
    let s = Setup::start("reload-cache", "", "").await;
    let token = s.token("orders:read");
    let url = format!("http://{}/orders/1", s.gw.proxy_addr);
    let get = || s.client.get(&url).bearer_auth(&token).send();
    assert_eq!(get().await.unwrap().status(), 200);
    let hits = |m: &str| metric(m, "jwtgate_token_cache_total{result=\"hit\"}");
    let misses = |m: &str| metric(m, "jwtgate_token_cache_total{result=\"miss\"}");
    let before = s.metrics().await;
    // A route added: the verdicts still hold.
    s.rewrite(REPORTS_ROUTE, "", None);
    assert_eq!(s.reload().await.0, 200);
    assert_eq!(get().await.unwrap().status(), 200);
    let after = s.metrics().await;
    assert_eq!((hits(&after) - hits(&before), misses(&after) - misses(&before)), (1.0, 0.0), "{after}");
    // An issuer setting changed: its verdicts are verified again.
    let text =
        std::fs::read_to_string(&s.path).unwrap().replacen("audiences = [", "leeway_seconds = 30\naudiences = [", 1);
    std::fs::write(&s.path, text).unwrap();
    assert_eq!(s.reload().await.0, 200);
    assert_eq!(get().await.unwrap().status(), 200);
    let last = s.metrics().await;
    assert_eq!(misses(&last) - misses(&after), 1.0, "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_issuers_and_the_upstream() {
    let s = Setup::start("reload-issuers", "", "").await;
    let other = FakeIssuer::start("globex").await.unwrap();
    let other_key = other.add_key(SigningKey::generate(jwtgate::auth::alg::Alg::RS256, "g1_RS256").unwrap());
    let second_upstream = EchoUpstream::start().await.unwrap();
    let other_token = other_key.token(&other.claims(now(), "bob", AUD, "orders:read"));
    let url = format!("http://{}/orders/1", s.gw.proxy_addr);
    assert_eq!(s.client.get(&url).bearer_auth(&other_token).send().await.unwrap().status(), 401);

    let text = config_text(&s.idp.discovery_url(), second_upstream.addr, "", "")
        + &format!(
            "\n[[issuers]]\nname = \"globex\"\ndiscovery_url = \"{}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\"]\n",
            other.discovery_url()
        );
    std::fs::write(&s.path, text).unwrap();
    assert_eq!(s.reload().await.0, 200);
    s.wait_ready().await;
    let r = s.client.get(&url).bearer_auth(&other_token).send().await.unwrap();
    assert_eq!(r.status(), 200, "the new issuer's tokens pass once its keys loaded");
    assert_eq!(second_upstream.hits(), 1, "the new upstream took the request");
    assert_eq!(s.upstream.hits(), 0);

    // Removed again: its tokens are refused, and its refresher stops fetching.
    s.rewrite("", "", Some(second_upstream.addr));
    assert_eq!(s.reload().await.0, 200);
    assert_eq!(s.client.get(&url).bearer_auth(&other_token).send().await.unwrap().status(), 401);
    assert_eq!(s.gw.keys().issuers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request() {
    let s = Arc::new(Setup::start("reload-load", "", "").await);
    let token = s.token("orders:read");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (s, token, done, ok, wrong) = (s.clone(), token.clone(), done.clone(), ok.clone(), wrong.clone());
        workers.push(tokio::spawn(async move {
            let url = format!("http://{}/orders/1", s.gw.proxy_addr);
            while !done.load(Ordering::Relaxed) {
                let answered = match s.client.get(&url).bearer_auth(&token).send().await {
                    Ok(r) => (r.status().as_u16(), r.bytes().await.map(|b| b.len()).map_err(|e| e.to_string())),
                    Err(e) => (0, Err(e.to_string())),
                };
                match answered {
                    (200, Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("lost: {other:?}");
                        wrong.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for i in 0..20 {
        // Alternate between two valid files (a route more or less).
        s.rewrite(if i % 2 == 0 { REPORTS_ROUTE } else { "" }, "", None);
        let (status, body) = s.reload().await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "every request during 20 reloads was answered 200");
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran: {}", ok.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("sighup");
    let path = dir.join("jwtgate.toml");
    std::fs::write(&path, config_text(&idp.discovery_url(), upstream.addr, "", "log_format = \"json\"")).unwrap();
    let (child, _, admin) = spawn_serve(&path).await;
    let client = http_client();
    let status = || async {
        client.get(format!("http://{admin}/status")).send().await.expect("status").json::<Value>().await.expect("json")
    };
    let before = status().await["config"]["sha256"].as_str().unwrap().to_string();

    std::fs::write(
        &path,
        config_text(&idp.discovery_url(), upstream.addr, "", "log_format = \"json\"") + REPORTS_ROUTE,
    )
    .unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("SIGHUP re-read the file", || async { status().await["config"]["sha256"] != before.as_str() }).await;
    let after = status().await["config"]["sha256"].as_str().unwrap().to_string();
    // A broken file on SIGHUP: the process stays up on the old configuration.
    std::fs::write(&path, "[server]\nlisten = 3\n").unwrap();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_until("the broken file is refused", || async { status().await["config"]["reloads"]["failed"] == 1 }).await;
    let st = status().await;
    assert_eq!(st["config"]["reloads"]["failed"], 1, "{st}");
    assert_eq!(st["config"]["sha256"].as_str().unwrap(), after);
    let _ = std::fs::remove_dir_all(&dir);
}

// --- TLS on the listeners ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_serves_tls_over_http1_and_h2_and_says_https_upstream() {
    let s = Setup::start("tls-proxy", "", "").await;
    let ca = write_pki(&s.dir, "one");
    // A second gateway, from a file beside the certificates, serves TLS.
    s.rewrite("", "[server.tls]\ncert_file = \"one-cert.pem\"\nkey_file = \"one-key.pem\"", None);
    let gw = jwtgate::serve::start(Config::load(&s.path).unwrap(), Arc::new(SystemClock)).await.unwrap();
    let port = gw.proxy_addr.port();
    let token = s.token("orders:read");
    for (client, version) in [
        (client_trusting(&ca), reqwest::Version::HTTP_2),
        (
            {
                jwtgate::tls::install_crypto_provider();
                reqwest::Client::builder()
                    .no_proxy()
                    .http1_only()
                    .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                    .build()
                    .unwrap()
            },
            reqwest::Version::HTTP_11,
        ),
    ] {
        let r = client.get(format!("https://localhost:{port}/orders/1")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.version(), version, "ALPN chose the protocol");
        let echo = echoed(r).await;
        assert_eq!(upstream_header(&echo, "x-forwarded-proto"), ["https"]);
        let r = client.get(format!("https://localhost:{port}/orders/1")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    // Plain HTTP on the TLS port: the handshake fails, the connection is closed and counted.
    let (status, _, _) =
        raw(gw.proxy_addr, "GET /orders/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 0, "no HTTP answer on a TLS port");
    let m = http_client().get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"tls_handshake\"}"), 1.0, "{m}");
    // A client that does not trust the CA is refused by its own TLS stack.
    let untrusting = http_client().get(format!("https://localhost:{port}/orders/1")).send().await;
    assert!(untrusting.is_err());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_certificate_for_new_connections() {
    let base = Setup::start("tls-rotate", "", "").await;
    let dir = base.dir.clone();
    // One certificate expires in the UTCTime era, the other in the GeneralizedTime one.
    let ca_one = write_pki_until(&dir, "one", (2031, 5, 7));
    let ca_two = write_pki_until(&dir, "two", (2051, 2, 3));
    let with_cert =
        |name: &str| format!("[server.tls]\ncert_file = \"{name}-cert.pem\"\nkey_file = \"{name}-key.pem\"");
    base.rewrite("", &with_cert("one"), None);
    let gw = jwtgate::serve::start(Config::load(&base.path).unwrap(), Arc::new(SystemClock)).await.unwrap();
    let url = format!("https://localhost:{}/orders/1", gw.proxy_addr.port());
    let token = base.token("orders:read");
    let get = |ca: String| {
        let (url, token) = (url.clone(), token.clone());
        async move { client_trusting(&ca).get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get(ca_one.clone()).await.unwrap(), 200);
    assert!(get(ca_two.clone()).await.is_err());
    let expiry = || async {
        let m =
            http_client().get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
        metric(&m, "jwtgate_tls_certificate_expiry_timestamp_seconds{listener=\"proxy\"}")
    };
    assert_eq!(expiry().await, 1_935_878_400.0, "2031-05-07T00:00:00Z");

    base.rewrite("", &with_cert("two"), None);
    let (status, body) = {
        let r = http_client().post(format!("http://{}/reload", gw.admin_addr)).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(ca_two.clone()).await.unwrap(), 200, "new connections get the new certificate");
    assert!(get(ca_one.clone()).await.is_err(), "the old certificate is gone");
    assert_eq!(expiry().await, 2_558_995_200.0, "2051-02-03T00:00:00Z");

    // A key that does not match its certificate: refused, the running certificate stays.
    std::fs::copy(dir.join("one-key.pem"), dir.join("two-key.pem")).unwrap();
    let r = http_client().post(format!("http://{}/reload", gw.admin_addr)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["problems"][0].as_str().unwrap().contains("server.tls"), "{body}");
    assert_eq!(get(ca_two).await.unwrap(), 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_listener_serves_tls_of_its_own() {
    let base = Setup::start("tls-decision", "", "").await;
    let ca = write_pki(&base.dir, "dec");
    base.rewrite(
        "\n[decision]\nlisten = \"127.0.0.1:0\"\n[decision.tls]\ncert_file = \"dec-cert.pem\"\nkey_file = \"dec-key.pem\"\n",
        "",
        None,
    );
    let gw = jwtgate::serve::start(Config::load(&base.path).unwrap(), Arc::new(SystemClock)).await.unwrap();
    let decision = gw.decision_addr.unwrap();
    let client = client_trusting(&ca);
    let ask = |token: Option<String>| {
        let mut r = client
            .get(format!("https://localhost:{}/auth", decision.port()))
            .header("x-original-method", "GET")
            .header("x-original-uri", "/orders/1");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    wait_until("the decision listener has its keys", || async {
        ask(Some(base.token("orders:read"))).await.unwrap().status() == 200
    })
    .await;
    assert_eq!(ask(None).await.unwrap().status(), 401);
    // The proxy listener stays plain HTTP.
    let r = http_client().get(format!("http://{}/orders/1", gw.proxy_addr)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    gw.shutdown().await;
}

#[test]
fn check_config_reads_the_tls_files() {
    let dir = temp_dir("tls-check");
    write_pki(&dir, "ok");
    let base = config_text(
        "https://api.asgardeo.io/t/acme/oauth2/token/.well-known/openid-configuration",
        "127.0.0.1:1".parse().unwrap(),
        "",
        "",
    );
    let run = |tls: &str| {
        std::fs::write(dir.join("jwtgate.toml"), base.replace("[server]", &format!("[server.tls]\n{tls}\n[server]")))
            .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
            .args(["check-config", "--config"])
            .arg(dir.join("jwtgate.toml"))
            .output()
            .unwrap()
    };
    let ok = run("cert_file = \"ok-cert.pem\"\nkey_file = \"ok-key.pem\"");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = run("cert_file = \"ok-key.pem\"\nkey_file = \"ok-key.pem\"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ok-key.pem"), "{}", String::from_utf8_lossy(&bad.stderr));
    let missing = run("cert_file = \"absent.pem\"\nkey_file = \"ok-key.pem\"");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("absent.pem"));
}

// --- TLS and HTTP/2 to the upstream ---------------------------------------------------------------

/// A gateway (from a file in `dir`) in front of `upstream_url` with `upstream_extra` lines.
async fn gateway_to(s: &Setup, upstream_url: &str, upstream_extra: &str) -> jwtgate::serve::Running {
    let text = std::fs::read_to_string(&s.path).unwrap().replacen(
        &format!("url = \"http://{}\"", s.upstream.addr),
        &format!("url = \"{upstream_url}\"\n{upstream_extra}"),
        1,
    );
    let path = s.dir.join("upstream.toml");
    std::fs::write(&path, text).unwrap();
    jwtgate::serve::start(Config::load(&path).unwrap(), Arc::new(SystemClock)).await.unwrap()
}

/// Waits until the gateway with this admin address says `/readyz` 200.
async fn wait_ready_at(admin: SocketAddr) {
    let client = http_client();
    wait_until("the gateway is ready", || async {
        client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_its_ca_file() {
    let s = Setup::start("upstream-tls", "", "").await;
    write_pki(&s.dir, "up");
    let tls_echo =
        EchoUpstream::start_tls("127.0.0.1:0".parse().unwrap(), Some(server_tls(&s.dir, "up", &[b"h2", b"http/1.1"])))
            .await
            .unwrap();
    let token = s.token("orders:read");
    let url_of = |gw: &jwtgate::serve::Running| format!("http://{}/orders/1", gw.proxy_addr);

    // Trusted through ca_file, with SNI `localhost`: HTTP/1.1 by default.
    let https = format!("https://localhost:{}", tls_echo.addr.port());
    let gw = gateway_to(&s, &https, "ca_file = \"up-ca.pem\"").await;
    wait_ready_at(gw.admin_addr).await;
    let echo = echoed(s.client.get(url_of(&gw)).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(echo["version"], "HTTP/1.1");
    // The client's Host goes through (SNI and verification use the URL's host).
    assert_eq!(upstream_header(&echo, "host"), [gw.proxy_addr.to_string()]);
    gw.shutdown().await;

    // HTTP/2 over TLS (ALPN h2).
    let gw = gateway_to(&s, &https, "ca_file = \"up-ca.pem\"\nprotocol = \"h2\"").await;
    wait_ready_at(gw.admin_addr).await;
    for _ in 0..3 {
        let echo = echoed(s.client.get(url_of(&gw)).bearer_auth(&token).send().await.unwrap()).await;
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["authority"], gw.proxy_addr.to_string(), "the client's Host is the :authority");
    }
    gw.shutdown().await;

    // Not trusted (the public web PKI does not know the test CA): 502, never forwarded.
    let hits = tls_echo.hits();
    let gw = gateway_to(&s, &https, "").await;
    wait_ready_at(gw.admin_addr).await;
    let r = s.client.get(url_of(&gw)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(tls_echo.hits(), hits);
    let m = http_client().get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&m, "jwtgate_upstream_errors_total{kind=\"connect\"}"), 1.0, "{m}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_carries_requests_to_a_plain_http2_upstream() {
    let s = Setup::start("upstream-h2c", "", "").await;
    let gw = gateway_to(&s, &format!("http://{}", s.upstream.addr), "protocol = \"h2c\"").await;
    wait_ready_at(gw.admin_addr).await;
    let token = s.token("orders:read");
    let url = format!("http://{}/orders/1?x=1", gw.proxy_addr);
    let mut all = Vec::new();
    for _ in 0..10 {
        all.push(s.client.get(&url).bearer_auth(&token).send());
    }
    for r in futures_util::future::join_all(all).await {
        let echo = echoed(r.unwrap()).await;
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["path"], "/orders/1");
        assert_eq!(echo["query"], "x=1");
    }
    // A POST with a body streams through too.
    let r = s.client.post(format!("http://{}/orders", gw.proxy_addr)).bearer_auth(s.token("orders:read orders:write"));
    let echo = echoed(r.body(vec![7u8; 100_000]).send().await.unwrap()).await;
    assert_eq!(echo["body_bytes"], 100_000);
    gw.shutdown().await;
}

#[test]
fn upstream_protocol_and_scheme_must_agree() {
    let text = |url: &str, extra: &str| {
        config_text(
            "https://api.asgardeo.io/t/acme/oauth2/token/.well-known/openid-configuration",
            "127.0.0.1:1".parse().unwrap(),
            "",
            "",
        )
        .replacen("url = \"http://127.0.0.1:1\"", &format!("url = \"{url}\"\n{extra}"), 1)
    };
    let problems = |url: &str, extra: &str| -> Vec<String> {
        match Config::parse(&text(url, extra), None) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.path.clone()).collect(),
        }
    };
    assert_eq!(problems("https://api.internal:8443", "protocol = \"h2\""), Vec::<String>::new());
    assert_eq!(problems("http://127.0.0.1:50051", "protocol = \"h2c\""), Vec::<String>::new());
    assert_eq!(problems("https://api.internal", "protocol = \"h2c\""), ["upstream.protocol"]);
    assert_eq!(problems("http://127.0.0.1:1", "protocol = \"h2\""), ["upstream.protocol"]);
    assert_eq!(problems("http://127.0.0.1:1", "ca_file = \"ca.pem\""), ["upstream.ca_file"]);
    assert_eq!(problems("http://127.0.0.1:1", "protocol = \"http3\""), ["upstream.protocol"]);
    let c = Config::parse(&text("https://api.internal", ""), None).unwrap();
    assert_eq!((c.upstream.host.as_str(), c.upstream.port), ("api.internal", 443));
}

// --- gRPC -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_with_the_scope_and_get_grpc_codes_without() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

    // A real gRPC server (the standard health service) listening h2c, as in a pod.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let grpc_addr = incoming.local_addr().unwrap();
    tokio::spawn(tonic::transport::Server::builder().add_service(health).serve_with_incoming(incoming));

    let routes = r#"
[[routes]]
name = "health"
path_prefix = "/grpc.health.v1.Health"
methods = ["POST"]
scopes = ["health:read"]
"#;
    let s = Setup::start("grpc", routes, "").await;
    let text = std::fs::read_to_string(&s.path).unwrap().replacen(
        &format!("url = \"http://{}\"", s.upstream.addr),
        &format!("url = \"http://{grpc_addr}\"\nprotocol = \"h2c\""),
        1,
    );
    let path = s.dir.join("grpc.toml");
    std::fs::write(&path, text).unwrap();
    let gw = jwtgate::serve::start(Config::load(&path).unwrap(), Arc::new(SystemClock)).await.unwrap();
    wait_ready_at(gw.admin_addr).await;

    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", gw.proxy_addr)).unwrap().connect().await.unwrap();
    let call = |token: Option<String>| {
        let channel = channel.clone();
        async move {
            let mut client = HealthClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
                }
                Ok(req)
            });
            client.check(HealthCheckRequest { service: String::new() }).await
        }
    };

    let ok = call(Some(s.token("health:read"))).await.expect("allowed call");
    assert_eq!(ok.into_inner().status, ServingStatus::Serving as i32);

    let no_token = call(None).await.unwrap_err();
    assert_eq!(no_token.code(), tonic::Code::Unauthenticated, "{no_token:?}");
    let wrong_scope = call(Some(s.token("orders:read"))).await.unwrap_err();
    assert_eq!(wrong_scope.code(), tonic::Code::PermissionDenied, "{wrong_scope:?}");
    let forged = call(Some(format!("{}x", s.token("health:read")))).await.unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated);

    // A server-streaming call streams through (messages, then the trailers with grpc-status).
    let token = s.token("health:read");
    let mut client = HealthClient::with_interceptor(channel.clone(), move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(req)
    });
    let mut stream = client.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // The refusals counted as the proxy counts any refusal.
    let m = http_client().get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
    assert!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"insufficient_scope\",route=\"health\"}") >= 1.0,
        "{m}"
    );
    // The watch stream would keep the drain waiting: the client hangs up first.
    drop((stream, client, channel));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_refusal_is_a_trailers_only_response_with_the_http_status() {
    let clock = Arc::new(ManualClock::at_system_now());
    let s = Setup::start_on("grpc-raw", "", "", clock.clone()).await;
    let r = s
        .client
        .post(format!("http://{}/orders/1", s.gw.proxy_addr))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/grpc");
    assert_eq!(r.headers()["grpc-status"], "16");
    assert!(r.headers().contains_key("grpc-message"));
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert!(r.bytes().await.unwrap().is_empty(), "no JSON body for a gRPC client to misread");
    // Not gRPC, only a look-alike media type: the JSON refusal.
    let r =
        s.client.get(format!("http://{}/orders/1", s.gw.proxy_addr)).header("content-type", "application/grpcx").send();
    let r = r.await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    // jwtgate's own answers after the judgement are gRPC-shaped too: the upstream slow (504 →
    // DEADLINE_EXCEEDED), then down (502 → UNAVAILABLE).
    let grpc_call = || {
        s.client
            .post(format!("http://{}/public/x", s.gw.proxy_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .send()
    };
    // The upstream's timeout (2 s) runs on the gateway's clock: moved past, not waited for.
    s.upstream.set_delay(Duration::from_secs(30));
    let r = advance_until_answered(&clock, Duration::from_millis(250), "the 504", grpc_call()).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers().get("grpc-status").cloned()), (504, Some("4".parse().unwrap())));
    assert_eq!(r.headers()["content-type"], "application/grpc");
    assert!(r.bytes().await.unwrap().is_empty());
    s.upstream.stop();
    let r = grpc_call().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers().get("grpc-status").cloned()), (502, Some("14".parse().unwrap())));
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_reaches_an_https_h2_upstream_over_http1() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = Setup::start("ws-h2", "", "").await;
    write_pki(&s.dir, "ws");
    // A TLS WebSocket server that would pick h2 if the client offered it.
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(&s.dir, "ws", &[b"h2", b"http/1.1"]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                // Like servers that dispatch on ALPN (Go's net/http, Envoy): an `h2`
                // connection speaks HTTP/2, so an HTTP/1.1 upgrade on it is refused.
                if tls.get_ref().1.alpn_protocol() != Some(b"http/1.1") {
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else { return };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    if ws.send(Message::text(format!("echo: {t}"))).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let gw =
        gateway_to(&s, &format!("https://localhost:{}", ws_addr.port()), "ca_file = \"ws-ca.pem\"\nprotocol = \"h2\"")
            .await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/public/chat", gw.proxy_addr)).await.expect("tunnelled");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo: hi"));
    drop(ws);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_behind_a_private_ca_is_trusted_through_its_ca_file() {
    let dir = temp_dir("idp-ca");
    write_pki(&dir, "idp");
    let tls = server_tls(&dir, "idp", &[b"http/1.1"]);
    let idp = FakeIssuer::start_with("127.0.0.1:0".parse().unwrap(), "acme", Some(tls)).await.unwrap();
    let key = idp.add_shared_key(harness_key());
    assert!(idp.discovery_url().starts_with("https://127.0.0.1:"));
    let upstream = EchoUpstream::start().await.unwrap();
    let start = |extra: &str| {
        let path = dir.join(format!("jwtgate-{:x}.toml", rand::random::<u32>()));
        std::fs::write(&path, config_text(&idp.discovery_url(), upstream.addr, extra, "")).unwrap();
        async move { jwtgate::serve::start(Config::load(&path).unwrap(), Arc::new(SystemClock)).await.unwrap() }
    };
    // With the IdP's CA: keys load over TLS and a token passes.
    let gw = start("ca_file = \"idp-ca.pem\"").await;
    wait_ready_at(gw.admin_addr).await;
    let token = key.token(&idp.claims(now(), "alice", AUD, "orders:read"));
    let client = http_client();
    let r = client.get(format!("http://{}/orders/1", gw.proxy_addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Without it the public web PKI does not know that CA: no keys, 503, and /status says why.
    let gw = start("").await;
    let status = || async {
        client.get(format!("http://{}/status", gw.admin_addr)).send().await.unwrap().json::<Value>().await.unwrap()
    };
    wait_until("the TLS failure is reported", || async { status().await["issuers"][0]["last_error"].is_string() })
        .await;
    let r = client.get(format!("http://{}/orders/1", gw.proxy_addr)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 503);
    // A CA file that is no bundle is refused at load, naming the key.
    std::fs::write(dir.join("bad-ca.pem"), "no certificate here\n").unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, config_text(&idp.discovery_url(), upstream.addr, "ca_file = \"bad-ca.pem\"", "")).unwrap();
    let err = Config::load(&bad).unwrap_err().to_string();
    assert!(err.contains("issuers[0].ca_file"), "{err}");
}
