//! Issue 22: many replicas, one memory. A real `redis-server` (Debian's package; `.ci/run`
//! installs it) on a Unix socket, and two jwtgate processes behind one public URL sharing it:
//! a DPoP proof used at one is refused at the other, a caller limited to 2 requests gets 2
//! across both, the store stopped means DPoP 503 and per-replica limits, and the store back
//! means shared again — without a restart.

use crate::support::dpop::DpopClient;
use crate::support::*;
use serde_json::Value;
use std::net::SocketAddr;

/// A `redis-server` on a Unix socket in `dir` (started again on the same socket by calling
/// this again); `None` outside CI when it is not installed.
fn start_redis(dir: &std::path::Path) -> Option<std::process::Child> {
    let socket = dir.join("redis.sock");
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no", "--unixsocketperm", "700"])
        // DEBUG SLEEP makes a slow store on demand.
        .args(["--enable-debug-command", "yes"])
        .arg("--unixsocket")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "redis-server is required under CI (.ci/run installs it)");
            eprintln!("redis-server is not installed: skipping (apt-get install redis-server)");
            None
        }
    }
}

async fn wait_for_socket(dir: &std::path::Path) {
    let socket = dir.join("redis.sock");
    wait_until("redis-server listens", || async { tokio::net::UnixStream::connect(&socket).await.is_ok() }).await;
}

const ROUTES: &str = r#"
[[routes]]
name = "limited"
path_prefix = "/limited"
[routes.rate_limit]
key = "sub"
requests_per_second = 0.5
burst = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_dpop_proofs_and_rate_limits_through_redis() {
    let dir = temp_dir("shared");
    let Some(mut redis) = start_redis(&dir) else { return };
    wait_for_socket(&dir).await;
    let h = Harness::start().await;
    // Both replicas serve one public URL: a proof's htu is the same at either.
    let server = "log_format = \"json\"\npublic_base_url = \"https://api.example\"";
    let text = config_text(&h.idp.discovery_url(), h.upstream.addr, "", server)
        .replace("[[routes]]\nname = \"public\"", &format!("{ROUTES}\n[[routes]]\nname = \"public\""))
        + &format!("\n[shared_state]\nredis_url = \"unix://{}\"\ntimeout_ms = 200\n", dir.join("redis.sock").display());
    let cfg = dir.join("jwtgate.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (_a, a, a_admin) = spawn_serve(&cfg).await;
    let (_b, b, b_admin) = spawn_serve(&cfg).await;
    let c = &h.client;
    let dpop = DpopClient::new(&h);
    let htu = "https://api.example/api/x";
    let send = |at: SocketAddr, proof: String| {
        c.get(format!("http://{at}/api/x"))
            .header("authorization", format!("DPoP {}", dpop.token))
            .header("dpop", proof)
            .send()
    };

    // A proof used at one replica is refused at the other.
    let proof = dpop.proof("GET", htu);
    assert_eq!(send(a, proof.clone()).await.unwrap().status(), 200);
    let r = send(b, proof.clone()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(www_authenticate(r.headers()).contains("invalid_dpop_proof"), "{:?}", r.headers());
    assert_eq!(send(b, dpop.proof("GET", htu)).await.unwrap().status(), 200, "a fresh proof passes there");

    // A caller allowed a burst of 2 gets 2 across both replicas, not 4.
    let token = h.key.token(&h.idp.claims(now(), "limited-user", AUD, ""));
    let limited = |at: SocketAddr, t: String| c.get(format!("http://{at}/limited/x")).bearer_auth(t).send();
    let mut statuses = Vec::new();
    for at in [a, b, a, b] {
        statuses.push(limited(at, token.clone()).await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let r = limited(b, token.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some() && r.headers().get("ratelimit-policy").is_some());

    let status: Value = c.get(format!("http://{a_admin}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["shared_state"]["reachable"], true, "{status}");
    let metrics = |admin: SocketAddr| async move {
        c.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap()
    };
    let m = metrics(a_admin).await;
    assert!(metric(&m, "jwtgate_shared_state_requests_total{op=\"dpop\",result=\"ok\"}") >= 1.0);
    assert!(metric(&m, "jwtgate_shared_state_requests_total{op=\"rate_limit\",result=\"ok\"}") >= 2.0);
    assert_eq!(metric(&m, "jwtgate_shared_state_up"), 1.0);

    // The store slow (busy for a second, over timeout_ms): DPoP fails closed, counted as a timeout.
    let sock = dir.join("redis.sock");
    let slow = std::process::Command::new("redis-cli").arg("-s").arg(&sock).args(["DEBUG", "SLEEP", "1"]).spawn();
    assert!(slow.is_ok() || std::env::var_os("CI").is_none(), "redis-cli comes with redis-server (redis-tools)");
    if let Ok(mut slow) = slow {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = send(b, dpop.proof("GET", htu)).await.unwrap();
        assert_eq!(r.status(), 503, "a slow store is no answer");
        let _ = slow.wait();
        let m = metrics(b_admin).await;
        assert!(metric(&m, "jwtgate_shared_state_requests_total{op=\"dpop\",result=\"timeout\"}") >= 1.0);
        wait_until("the store answers again", || async {
            send(b, dpop.proof("GET", htu)).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    // The store stopped: DPoP fails closed (503), rate limits fall back to each replica's own.
    redis.kill().unwrap();
    redis.wait().unwrap();
    let r = send(a, dpop.proof("GET", htu)).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let other = h.key.token(&h.idp.claims(now(), "another-user", AUD, ""));
    assert_eq!(limited(a, other.clone()).await.unwrap().status(), 200, "per replica while the store is away");
    let m = metrics(a_admin).await;
    assert!(metric(&m, "jwtgate_rate_limit_local_fallbacks_total") >= 1.0);
    assert_eq!(metric(&m, "jwtgate_shared_state_up"), 0.0);
    assert!(
        metric(&m, "jwtgate_token_rejections_total{issuer=\"asgardeo\",reason=\"shared_state_unavailable\"}") >= 1.0
    );
    let status: Value = c.get(format!("http://{a_admin}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["shared_state"]["reachable"], false);
    assert!(status["shared_state"]["last_error"].is_string(), "{status}");

    // Back: shared again, no restart.
    let _ = std::fs::remove_file(dir.join("redis.sock"));
    let Some(mut redis) = start_redis(&dir) else { return };
    wait_for_socket(&dir).await;
    wait_until("DPoP requests pass again", || async {
        send(a, dpop.proof("GET", htu)).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let proof = dpop.proof("GET", htu);
    assert_eq!(send(b, proof.clone()).await.unwrap().status(), 200);
    assert_eq!(send(a, proof).await.unwrap().status(), 401, "shared again");
    let _ = redis.kill();
    let _ = redis.wait();
}

/// A free loopback port (bound, then released for redis-server, which cannot report one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_from_a_file() {
    let dir = temp_dir("shared-tls");
    write_pki(&dir, "redis");
    std::fs::write(dir.join("redis-password"), "pa55-word\n").unwrap();
    let port = free_port();
    let spawned = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "pa55-word",
            "--tls-auth-clients",
            "no",
        ])
        .args(["--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("redis-cert.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("redis-key.pem"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("redis-ca.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut redis) = spawned else {
        assert!(std::env::var_os("CI").is_none(), "redis-server is required under CI (.ci/run installs it)");
        return;
    };
    wait_until("redis-server listens", || async { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() })
        .await;
    let shared = |extra: &str| {
        format!(
            "\n[shared_state]\nredis_url = \"rediss://localhost:{port}/0\"\nca_file = {:?}\ntimeout_ms = 500\n{extra}\n",
            dir.join("redis-ca.pem").display().to_string()
        )
    };
    let h = Harness::start().await;
    let gateway = |extra: &str| {
        let text = config_text(&h.idp.discovery_url(), h.upstream.addr, "", "") + &shared(extra);
        async move {
            let gw = start_gateway(&text).await;
            gw
        }
    };
    let dpop = DpopClient::new(&h);
    let send = |gw: &jwtgate::serve::Running, proof: String| {
        h.client
            .get(format!("http://{}/api/x", gw.proxy_addr))
            .header("authorization", format!("DPoP {}", dpop.token))
            .header("dpop", proof)
            .send()
    };
    // The right password: proofs are remembered in the store.
    let gw = gateway(&format!("password_file = {:?}", dir.join("redis-password").display().to_string())).await;
    let htu = format!("http://{}/api/x", gw.proxy_addr);
    wait_until("the keys are loaded", || async {
        h.client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let proof = dpop.proof("GET", &htu);
    assert_eq!(send(&gw, proof.clone()).await.unwrap().status(), 200);
    assert_eq!(send(&gw, proof).await.unwrap().status(), 401);
    let status: Value =
        h.client.get(format!("http://{}/status", gw.admin_addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["shared_state"]["reachable"], true, "{status}");
    assert!(!status.to_string().contains("pa55-word"));
    gw.shutdown().await;
    // Without it: Redis refuses, the DPoP request is a 503 — never an unchecked proof.
    let gw = gateway("").await;
    wait_until("the keys are loaded", || async {
        h.client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let htu = format!("http://{}/api/x", gw.proxy_addr);
    assert_eq!(send(&gw, dpop.proof("GET", &htu)).await.unwrap().status(), 503);
    let status: Value =
        h.client.get(format!("http://{}/status", gw.admin_addr)).send().await.unwrap().json().await.unwrap();
    let e = status["shared_state"]["last_error"].as_str().unwrap_or("").to_string();
    assert!(e.to_lowercase().contains("auth"), "{e}");
    gw.shutdown().await;
    let _ = redis.kill();
    let _ = redis.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_refuses_a_store_it_could_not_use() {
    let base =
        config_text("https://idp.example/.well-known/openid-configuration", "127.0.0.1:1".parse().unwrap(), "", "");
    for (section, key, why) in [
        ("redis_url = \"http://cache:6379\"", "shared_state.redis_url", "scheme"),
        ("redis_url = \"not a url\"", "shared_state.redis_url", "not a URL"),
        ("redis_url = \"redis:///0\"", "shared_state.redis_url", "no host"),
        ("redis_url = \"redis://cache:6379\"\nca_file = \"ca.pem\"", "shared_state.ca_file", "rediss:// only"),
        (
            "redis_url = \"rediss://cache:6379\"\nca_file = \"/nonexistent/ca.pem\"",
            "shared_state.ca_file",
            "/nonexistent/ca.pem",
        ),
        (
            "redis_url = \"redis://cache\"\npassword_env = \"A\"\npassword_file = \"b\"",
            "shared_state.password_env",
            "only one",
        ),
        ("redis_url = \"redis://cache\"\ntimeout_ms = 0", "shared_state.timeout_ms", "between 1 and 10000"),
        ("redis_url = \"redis://cache\"\npool_size = 100", "shared_state.pool_size", "between 1 and 64"),
        ("redis_url = \"redis://cache\"\nkey_prefix = \"\"", "shared_state.key_prefix", "1 to 64"),
    ] {
        let text = format!("{base}\n[shared_state]\n{section}\n");
        let err = jwtgate::config::Config::parse(&text, None).expect_err(section);
        assert!(err.problems.iter().any(|p| p.path == key && p.message.contains(why)), "{section}: {:?}", err.problems);
    }
    // Without a store, its gauge is not exported (it would read "down" everywhere).
    let h = Harness::start().await;
    assert!(!h.metrics().await.contains("jwtgate_shared_state_up"));
    // A password in the URL works, with a warning; /status would show it as ***.
    let text = format!("{base}\n[shared_state]\nredis_url = \"redis://:hunter2@cache:6379/0\"\n");
    let config = jwtgate::config::Config::parse(&text, None).unwrap();
    assert!(config.warnings().iter().any(|w| w.contains("password_env")));
    assert_eq!(config.shared_state.unwrap().shown_url(), "redis://:***@cache:6379/0");
}
