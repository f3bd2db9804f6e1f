//! A real Caddy (Debian's `caddy`) in front of the echo upstream, asking jwtgate's decision
//! listener about every request with `forward_auth`, configured with `deploy/caddy/Caddyfile`
//! exactly as the README shows it. Caddy copies every client header into the auth request, so
//! this is where a client would try to name the path that is judged. Needs caddy (`.ci/run`
//! installs it); without it the test says so and passes on a developer's machine, and fails
//! under CI.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::support::*;

const CADDYFILE: &str = include_str!("../../deploy/caddy/Caddyfile");

struct Caddy {
    child: Child,
    socket: std::path::PathBuf,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn caddy_available() -> bool {
    match Command::new("caddy").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => true,
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "caddy is required under CI (.ci/run installs it)");
            eprintln!("caddy is not installed: skipping the forward_auth test (apt-get install caddy)");
            false
        }
    }
}

async fn start_caddy(upstream: SocketAddr, decision: SocketAddr) -> Caddy {
    let dir = temp_dir("caddy");
    let socket = dir.join("caddy.sock");
    let text = CADDYFILE
        .replace("reverse_proxy 127.0.0.1:9000", &format!("reverse_proxy {upstream}"))
        .replace("reverse_proxy 127.0.0.1:8081", &format!("reverse_proxy {decision}"))
        .replace("http://127.0.0.1:8000 {", &format!("http:// {{\n\tbind unix/{}", socket.display()));
    assert_eq!(text.matches(&upstream.to_string()).count(), 1, "the upstream address was replaced");
    assert_eq!(text.matches(&decision.to_string()).count(), 1, "the decision address was replaced");
    let file = dir.join("Caddyfile");
    std::fs::write(&file, text).unwrap();
    let caddy = Caddy {
        child: Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&file)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", &dir)
            .env("XDG_CONFIG_HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        socket,
    };
    wait_until("caddy listens", || async { tokio::net::UnixStream::connect(&caddy.socket).await.is_ok() }).await;
    caddy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_with_the_readme_config() {
    if !caddy_available() {
        return;
    }
    let h = Harness::start_with("", "\n[decision]\nlisten = \"127.0.0.1:0\"\nfront_proxy = \"caddy\"\n").await;
    let caddy = start_caddy(h.upstream.addr, h.gw.decision_addr.unwrap()).await;
    let url = |p: &str| format!("http://localhost{p}");
    let c = &reqwest::Client::builder().unix_socket(caddy.socket.as_path()).build().unwrap();
    let read = h.token("orders:read");

    // Honest: the upstream gets the verified identity, not the client's.
    let r = c.get(url("/orders/1?x=1")).bearer_auth(&read).header("x-jwt-sub", "mallory").send().await.unwrap();
    let echo = echoed(r).await;
    assert_eq!(upstream_header(&echo, "x-jwt-sub"), ["alice"], "{echo}");
    assert_eq!(upstream_header(&echo, "x-jwt-payload").len(), 1, "{echo}");
    // Refusals come back as jwtgate answered them: status, challenge, JSON body.
    let hits = h.upstream.hits();
    let r = c.get(url("/orders/1")).send().await.unwrap();
    assert_eq!(www_authenticate(r.headers()), "Bearer realm=\"jwtgate\"");
    assert_error(r, 401, "missing_token").await;
    let r = c.post(url("/orders/1")).bearer_auth(&read).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // The spoofs: the client names an anonymous path in every header convention jwtgate knows.
    for (k, v) in [
        ("x-original-uri", "/public/x"),
        ("x-original-url", "http://localhost/public/x"),
        ("x-forwarded-uri", "/public/x"),
    ] {
        let r = c
            .post(url("/orders/1"))
            .bearer_auth(&read)
            .header(k, v)
            .header("x-original-method", "GET")
            .header("x-forwarded-method", "GET")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{k}: POST /orders/1 is judged, whatever the client names");
        let r = c.delete(url("/orders/1")).header(k, v).send().await.unwrap();
        assert_eq!(r.status(), 404, "{k}: DELETE /orders/1 has no route");
    }
    assert_eq!(h.upstream.hits(), hits, "the API never received a request that was refused");

    // Anonymous route: client identities in every spelling, and URL-override headers, are gone.
    let echo = echoed(
        c.get(url("/public/x"))
            .header("x-jwt-sub", "mallory")
            .header("x_jwt_sub", "mallory")
            .header("x.jwt.payload", "e30")
            .header("x-original-url", "/orders/1")
            .header("x-rewrite-url", "/orders/1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    for (name, values) in echo["headers"].as_object().unwrap() {
        let folded = name.replace(['_', '.'], "-");
        let spoofed = values.as_array().unwrap().iter().any(|v| v.as_str().is_some_and(|v| !v.is_empty()));
        assert!(
            !(spoofed && (folded.contains("jwt") || folded.contains("original") || folded.contains("rewrite"))),
            "{name}: {values}"
        );
    }
}
