//! A real nginx in front of the echo upstream, asking jwtgate's decision listener about every
//! request with `auth_request`, configured with `deploy/nginx/auth_request.conf` exactly as the
//! README shows it. Needs nginx (Debian's `nginx-light`; `.ci/run` installs it). Without nginx
//! the test says so and passes on a developer's machine, and fails under CI.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

const CONF: &str = include_str!("../../deploy/nginx/auth_request.conf");

struct Nginx {
    child: Child,
    /// nginx listens on a Unix socket in its own folder: no TCP port is picked by the test,
    /// released, and hoped to be still free when nginx binds it.
    socket: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_available() -> bool {
    match Command::new("nginx").arg("-v").stderr(Stdio::null()).status() {
        Ok(_) => true,
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "nginx is required under CI (.ci/run installs nginx-light)");
            eprintln!("nginx is not installed: skipping the auth_request test (apt-get install nginx-light)");
            false
        }
    }
}

async fn start_nginx(upstream: SocketAddr, decision: SocketAddr) -> Nginx {
    start_nginx_with(CONF, upstream, decision).await
}

/// The README's file as ingress-nginx builds its `auth-url` location: `X-Original-URL` (and
/// the method) set, `X-Original-URI` left to whatever the client sent.
fn ingress_nginx_shaped() -> String {
    let conf = CONF.replace(
        "proxy_set_header X-Original-URI $request_uri;",
        "proxy_set_header X-Original-URL $scheme://$http_host$request_uri;",
    );
    assert_ne!(conf, CONF);
    conf
}

async fn start_nginx_with(conf_text: &str, upstream: SocketAddr, decision: SocketAddr) -> Nginx {
    let dir = temp_dir("nginx");
    let socket = dir.join("nginx.sock");
    let server = conf_text
        .replace("server 127.0.0.1:9000;", &format!("server {upstream};"))
        .replace("server 127.0.0.1:8081;", &format!("server {decision};"))
        .replace("listen 127.0.0.1:8000;", &format!("listen unix:{};", socket.display()));
    assert_eq!(server.matches(&upstream.to_string()).count(), 1, "the upstream address was replaced");
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{server}\n}}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).unwrap();
    // Owned at once, so that a failed start still kills and reaps it (on drop).
    let nginx = Nginx {
        child: Command::new("nginx").arg("-c").arg(&conf).arg("-p").arg(&dir).stderr(Stdio::inherit()).spawn().unwrap(),
        socket,
    };
    wait_until_or(
        "nginx listens",
        || async { tokio::net::UnixStream::connect(&nginx.socket).await.is_ok() },
        || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default(),
    )
    .await;
    nginx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_the_readme_config() {
    if !nginx_available() {
        return;
    }
    let h = Harness::start_manual(
        "jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\njwks_max_stale_seconds = 2\n\
         claim_headers = { \"x-tenant\" = \"tenant\" }",
        "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"nginx\"\n",
    )
    .await;
    let nginx = start_nginx(h.upstream.addr, h.gw.decision_addr.unwrap()).await;
    let url = |p: &str| format!("http://localhost{p}");
    jwtgate::tls::install_crypto_provider();
    let c = &reqwest::Client::builder().unix_socket(nginx.socket.as_path()).build().unwrap();

    // A valid token: the upstream is reached with the verified claim headers, not the spoofed ones.
    let r = c
        .get(url("/orders/1"))
        .bearer_auth(h.token("orders:read"))
        .header("x-jwt-sub", "mallory")
        .send()
        .await
        .unwrap();
    let echo = echoed(r).await;
    assert_eq!(upstream_header(&echo, "x-jwt-sub"), ["alice"], "{echo}");
    assert_eq!(upstream_header(&echo, "x-jwt-payload").len(), 1, "{echo}");
    // The configured claim header: the verified value, never the client's; without the claim,
    // the client's copy is removed all the same.
    let mut claims = h.claims("orders:read");
    claims["tenant"] = serde_json::json!("acme");
    let r = c.get(url("/orders/1")).bearer_auth(h.key.token(&claims)).header("x-tenant", "evil").send().await.unwrap();
    assert_eq!(upstream_header(&echoed(r).await, "x-tenant"), ["acme"]);
    let r =
        c.get(url("/orders/1")).bearer_auth(h.token("orders:read")).header("x-tenant", "evil").send().await.unwrap();
    assert!(upstream_header(&echoed(r).await, "x-tenant").is_empty());
    // No token: 401 with jwtgate's challenge, once, and the upstream never sees it.
    let hits = h.upstream.hits();
    let r = c.get(url("/orders/1")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1, "{:?}", r.headers());
    assert_eq!(www_authenticate(r.headers()), "Bearer realm=\"jwtgate\"");
    // Missing scope: 403 naming it, once.
    let r = c.get(url("/orders/1")).bearer_auth(h.token("profile")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1, "{:?}", r.headers());
    assert_eq!(www_authenticate(r.headers()), "Bearer error=\"insufficient_scope\", scope=\"orders:read\"");
    // A client naming another path in another convention's header is judged on its own request.
    let r = c
        .delete(url("/orders/1"))
        .bearer_auth(h.token("orders:read"))
        .header("x-forwarded-uri", "/public/x")
        .header("x-forwarded-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "DELETE /orders/1 has no route");
    // No route: 404 kept through the error_page mapping.
    assert_eq!(c.get(url("/nowhere")).bearer_auth(h.token("")).send().await.unwrap().status(), 404);
    assert_eq!(h.upstream.hits(), hits);
    // Anonymous route: passes, and a spoofed identity is removed on the way.
    let echo = echoed(c.get(url("/public/x")).header("x-jwt-sub", "mallory").send().await.unwrap()).await;
    assert!(upstream_header(&echo, "x-jwt-sub").is_empty(), "{echo}");
    let names: Vec<&String> = echo["headers"].as_object().unwrap().keys().collect();
    assert!(!names.iter().any(|n| n.contains("jwt")), "{names:?}");

    // DPoP through the recipe: the proof's htu is the URL the client addressed; a replay fails.
    let dpop = crate::support::dpop::DpopClient::new(&h);
    let proof = dpop.proof("GET", "http://localhost/api/x");
    let send = |proof: &str| {
        c.get(url("/api/x?page=2")).header("authorization", format!("DPoP {}", dpop.token)).header("dpop", proof).send()
    };
    let r = send(&proof).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    let r = send(&proof).await.unwrap();
    assert_eq!(r.status(), 401, "a replayed proof");
    let r = send(&dpop.proof("GET", "http://jwtgate_decision/api/x")).await.unwrap();
    assert_eq!(r.status(), 401, "a proof for the internal name");

    // The IdP goes away for longer than jwks_max_stale_seconds: 503 stays a 503.
    h.idp.set_down(true);
    h.advance(Duration::from_millis(3500));
    let r = c.get(url("/orders/1")).bearer_auth(h.token("orders:read")).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_shaped_subrequests_cannot_be_steered() {
    if !nginx_available() {
        return;
    }
    let conf = ingress_nginx_shaped();
    for front in ["ingress-nginx", "auto"] {
        let h =
            Harness::start_with("", &format!("\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"{front}\"\n"))
                .await;
        let nginx = start_nginx_with(&conf, h.upstream.addr, h.gw.decision_addr.unwrap()).await;
        let c = reqwest::Client::builder().unix_socket(nginx.socket.as_path()).build().unwrap();
        let url = |p: &str| format!("http://localhost{p}");
        // Honest requests.
        let r = c.get(url("/orders/1")).bearer_auth(h.token("orders:read")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{front}");
        assert_eq!(c.get(url("/orders/1")).send().await.unwrap().status(), 401, "{front}");
        // The client names an anonymous path in X-Original-URI, which this nginx passes on.
        let hits = h.upstream.hits();
        let r = c
            .delete(url("/orders/1"))
            .bearer_auth(h.token("orders:read"))
            .header("x-original-uri", "/public/x")
            .header("x-original-method", "GET")
            .send()
            .await
            .unwrap();
        let expected = if front == "auto" { 400 } else { 404 };
        assert_eq!(r.status(), expected, "{front}: never judged as GET /public/x");
        assert_eq!(h.upstream.hits(), hits, "{front}: the API never got the DELETE");
    }
}
