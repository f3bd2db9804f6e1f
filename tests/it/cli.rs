//! The command line as an operator uses it: the real binary, real files, real sockets.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jwtgate"));
    c.env_remove("JWTGATE_CONFIG").env("RUST_LOG", "warn");
    c
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = temp_dir("test");
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn example_config_passes_check_config() {
    let out = bin().args(["check-config", "--config", "config/jwtgate.example.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_config_names_the_key_path_and_exits_2() {
    let p = temp_file("bad.toml", "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"a\"\ndiscovery_url = \"ftp://x\"\nalgorithms = [\"HS256\"]\n");
    let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuers[0].discovery_url:"), "{err}");
    assert!(err.contains("issuers[0].algorithms[0]:"), "{err}");
    // serve refuses it the same way, before listening.
    let out = bin().args(["serve", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let p = temp_file("typo.toml", "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n");
    let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.lisen"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().env("JWTGATE_CONFIG", "/nonexistent/jwtgate.toml").arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_warns_when_the_front_proxy_is_not_named() {
    let base = "[upstream]\nurl = \"http://127.0.0.1:9000\"\n[[issuers]]\nname = \"a\"\norganization = \"acme\"\n\
                [decision]\nlisten = \"127.0.0.1:8081\"\n";
    for (extra, warned) in [("", true), ("front_proxy = \"auto\"\n", true), ("front_proxy = \"traefik\"\n", false)] {
        let p = temp_file("decision.toml", &format!("{base}{extra}"));
        let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.contains("decision.front_proxy = \"auto\""), warned, "{extra:?}: {err}");
    }
    let p = temp_file("decision.toml", &format!("{base}front_proxy = \"haproxy\"\n"));
    let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decision.front_proxy"));
}

struct Setup {
    idp: FakeIssuer,
    _upstream: EchoUpstream,
    key: std::sync::Arc<SigningKey>,
    config: PathBuf,
}

async fn setup() -> Setup {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    let upstream = EchoUpstream::start().await.unwrap();
    let config = temp_file("jwtgate.toml", &config_text(&idp.discovery_url(), upstream.addr, "", "worker_threads = 1"));
    Setup { idp, _upstream: upstream, key, config }
}

/// `--issuer` holds with `--route` too: the judge is asked for that issuer's tokens only. (Before
/// `validate` became judge + renderer it judged the route with every issuer and verified again
/// apart; the flag held because only the named issuer's keys were loaded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_issuer_holds_on_a_route() {
    let s = setup().await;
    let other = FakeIssuer::start("globex").await.unwrap();
    let other_key = other.add_shared_key(harness_key());
    let second = format!(
        "[[issuers]]\nname = \"globex\"\ndiscovery_url = \"{}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\"]\n\n[[routes]]",
        other.discovery_url()
    );
    let text = std::fs::read_to_string(&s.config).unwrap().replacen("[[routes]]", &second, 1);
    let config = temp_file("two-issuers.toml", &text);
    let run = |args: Vec<String>| {
        let config = config.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            validate(&config, &args, None).await
        }
    };
    let globex = other_key.token(&other.claims(now(), "carol", AUD, "orders:read"));
    let args =
        |issuer: &str| vec!["--issuer".into(), issuer.into(), "--route".into(), "/orders/1".into(), globex.clone()];
    let (code, v) = run(args("globex")).await;
    assert_eq!((code, v["issuer"].as_str()), (0, Some("globex")), "{v}");
    let (code, v) = run(args("asgardeo")).await;
    assert_eq!((code, v["status"].as_u64(), v["error"].as_str()), (1, Some(401), Some("invalid_token")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_gives_verdicts_and_exit_codes() {
    let s = setup().await;
    let ok = s.key.token(&s.idp.claims(now(), "alice", AUD, "openid orders:read"));
    let (code, v) = validate(&s.config, &["--route", "/orders/1", &ok], None).await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["allowed"], true);
    assert_eq!(v["status"], 200);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["issuer"], "asgardeo");
    assert_eq!(v["claims"]["sub"], "alice");

    let (code, v) = validate(&s.config, &["--route", "/orders/1", "--method", "POST", &ok], None).await;
    assert_eq!((code, v["status"].clone(), v["error"].clone()), (1, 403.into(), "insufficient_scope".into()), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("orders:write"), "{v}");

    let (code, v) = validate(&s.config, &["--route", "/nowhere", &ok], None).await;
    assert_eq!((code, v["status"].clone(), v["error"].clone()), (1, 404.into(), "no_route".into()), "{v}");

    // --at moves the clock: two hours later the token has expired.
    let later = (now() + 7200).to_string();
    let (code, v) = validate(&s.config, &["--route", "/api", "--at", &later, &ok], None).await;
    assert_eq!((code, v["status"].clone(), v["error"].clone()), (1, 401.into(), "invalid_token".into()), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");

    let (code, v) = validate(&s.config, &["--route", "/api", "not.a.jwt"], None).await;
    assert_eq!((code, v["status"].clone()), (1, 401.into()), "{v}");
    assert_eq!(v["claims"], Value::Null);

    let (code, v) = validate(&s.config, &["--route", "/api", "-"], Some(&format!("{ok}\n"))).await;
    assert_eq!(code, 0, "{v}");

    let (code, v) = validate(&s.config, &["--issuer", "nobody", &ok], None).await;
    assert_eq!(code, 2, "{v}");

    s.idp.set_down(true);
    let (code, v) = validate(&s.config, &["--route", "/api", &ok], None).await;
    assert_eq!(
        (code, v["status"].clone(), v["error"].clone()),
        (3, 503.into(), "temporarily_unavailable".into()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_and_exits_zero_on_sigterm() {
    let s = setup().await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    // Ephemeral ports: the addresses come from serve's own "listening" line.
    let text = text.replacen("[server]\n", "[server]\nlog_format = \"json\"\n", 1);
    std::fs::write(&s.config, text).unwrap();
    let (mut child, proxy, admin) = spawn_serve(&s.config).await;
    let port = proxy.port();
    let client = http_client();
    wait_until("serve is ready", || async {
        client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    s._upstream.set_delay(Duration::from_millis(700));
    let token = s.key.token(&s.idp.claims(now(), "a", AUD, ""));
    let c2 = client.clone();
    let in_flight = tokio::spawn(async move {
        c2.get(format!("http://127.0.0.1:{port}/api/x")).bearer_auth(token).send().await.map(|r| r.status().as_u16())
    });
    wait_until("the request reached the upstream", || async { s._upstream.hits() == 1 }).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "in-flight request was cut");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exit in time").unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Kubernetes keeps sending to a terminating pod until its endpoints are gone: after SIGTERM,
/// `/readyz` fails at once while new connections are still served for `shutdown_delay_seconds`
/// (a preStop sleep, for an image with no shell); a second signal exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_and_keeps_serving_through_the_shutdown_delay() {
    let s = setup().await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text.replacen("[server]\n", "[server]\nlog_format = \"json\"\nshutdown_delay_seconds = 2\n", 1);
    std::fs::write(&s.config, text).unwrap();
    let client = http_client();
    for second_signal in [false, true] {
        let (mut child, proxy, admin) = spawn_serve(&s.config).await;
        wait_until("serve is ready", || async {
            client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        let pid = child.id().unwrap().to_string();
        let signalled = std::time::Instant::now();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        wait_until("readiness fails", || async {
            client.get(format!("http://{admin}/readyz")).send().await.is_ok_and(|r| r.status() == 503)
        })
        .await;
        let body: Value = client.get(format!("http://{admin}/readyz")).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["stopping"], true, "{body}");
        if second_signal {
            assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exit").unwrap();
            assert_eq!(status.code(), Some(1));
            assert!(signalled.elapsed() < Duration::from_secs(2), "did not wait out the delay");
            continue;
        }
        // A new connection, a second after the signal: served.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let fresh = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
        let r = fresh.get(format!("http://{proxy}/public/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(signalled.elapsed() < Duration::from_secs(2), "the check ran inside the delay");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exit in time").unwrap();
        assert_eq!(status.code(), Some(0));
        assert!(signalled.elapsed() >= Duration::from_secs(2), "exited before the delay was over");
    }
}

#[test]
fn check_config_refuses_mistakes_that_parse_and_warns_about_likely_ones() {
    let base = "[upstream]\nurl = \"http://127.0.0.1:9000\"\n[[issuers]]\nname = \"a\"\norganization = \"acme\"\n";
    let check = |text: String| {
        let p = temp_file("mistake.toml", &text);
        let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // A level that is no level: tracing would read it as a target and log nothing at all.
    for bad in ["verbose", "info,verbose", "jwtgate=loud", ""] {
        let (code, err) = check(format!("[server]\nlog_level = {bad:?}\n{base}audiences = [\"x\"]\n"));
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains("server.log_level"), "{err}");
    }
    for good in ["debug", "warn,jwtgate=debug", "jwtgate::access=info"] {
        let (code, err) = check(format!(
            "[server]\nlog_level = {good:?}\n{base}audiences = [\"x\"]\n[[routes]]\npath_prefix = \"/\"\n"
        ));
        assert_eq!(code, Some(0), "{good:?}: {err}");
    }
    // Keys that go stale before they are refreshed: both keys named.
    let (code, err) =
        check(format!("{base}audiences = [\"x\"]\njwks_max_stale_seconds = 5\njwks_refresh_seconds = 600\n"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("issuers[0].jwks_refresh_seconds") && err.contains("issuers[0].jwks_max_stale_seconds"),
        "{err}"
    );
    // Valid but most likely wrong: warned, exit 0.
    let (code, err) = check(base.to_string());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no [[routes]]"), "{err}");
    assert!(err.contains("issuers[0].audiences = []"), "{err}");
    let routes = "[[routes]]\nname = \"all\"\npath_prefix = \"/api\"\n[[routes]]\nname = \"admin\"\npath_prefix = \"/api/admin\"\nmethods = [\"DELETE\"]\nscopes = [\"admin\"]\n\
                  [[routes]]\nname = \"reads\"\npath_prefix = \"/orders\"\nmethods = [\"GET\"]\n[[routes]]\nname = \"writes\"\npath_prefix = \"/orders\"\nmethods = [\"POST\"]\n";
    let (code, err) = check(format!("{base}audiences = [\"x\"]\n{routes}"));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("routes[1] (admin) never matches: routes[0] (all)"), "{err}");
    assert!(!err.contains("routes[3]"), "different methods do not shadow: {err}");
}

/// A forward proxy on loopback for plain-HTTP absolute-form requests: records the first request
/// line of each connection, then pipes the connection to the target it names.
async fn forward_proxy() -> (std::net::SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 8192];
                let n = client.read(&mut head).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&head[..n]).to_string();
                let line = text.lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line.clone());
                let target = line.split(' ').nth(1).and_then(|u| url::Url::parse(u).ok());
                let Some(target) = target else { return };
                let Ok(mut up) =
                    tokio::net::TcpStream::connect((target.host_str().unwrap_or(""), target.port().unwrap_or(80)))
                        .await
                else {
                    return;
                };
                let _ = up.write_all(&head[..n]).await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_fetches_honour_the_proxy_variables() {
    let s = setup().await;
    let (proxy, seen) = forward_proxy().await;
    let token = s.key.token(&s.idp.claims(now(), "alice", AUD, ""));
    let run = |env: Vec<(&'static str, String)>| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"));
        c.env_remove("JWTGATE_CONFIG")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("ALL_PROXY")
            .arg("validate")
            .arg("--config")
            .arg(&s.config)
            .arg(&token);
        for (k, v) in env {
            c.env(k, v);
        }
        async move { c.output().await.unwrap().status.code() }
    };
    // HTTP_PROXY set: the fetches go through it (the JWKS on the same kept-alive connection).
    assert_eq!(run(vec![("HTTP_PROXY", format!("http://{proxy}"))]).await, Some(0));
    let lines = seen.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.contains("/.well-known/openid-configuration")), "{lines:?}");
    // NO_PROXY naming the IdP's host: straight there.
    seen.lock().unwrap().clear();
    assert_eq!(run(vec![("HTTP_PROXY", format!("http://{proxy}")), ("NO_PROXY", "127.0.0.1".into())]).await, Some(0));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn every_secret_is_named_by_exactly_one_non_empty_source() {
    // Introspection, the shared store and the key-manager sync choose their secret's source one
    // way: an empty variable name or path names nothing and is refused where it is written, not
    // found out at the first request.
    let base = "[upstream]\nurl = \"http://127.0.0.1:9000\"\n[[issuers]]\nname = \"a\"\norganization = \"acme\"\n\
                audiences = [\"x\"]\n";
    let introspection = "[issuers.introspection]\nclient_id = \"c\"\n";
    let store = "[shared_state]\nredis_url = \"redis://127.0.0.1:6379\"\n";
    let sync = "[key_manager_sync]\nenabled = true\napim_url = \"https://127.0.0.1:9443\"\nusername = \"admin\"\n\
                mgmt_client_id = \"m\"\nmgmt_client_secret_env = \"M\"\n";
    let cases = [
        (
            format!("{base}{introspection}client_secret_env = \"\"\n"),
            "issuers[0].introspection.client_secret_env: must not be empty",
        ),
        (
            format!("{base}{introspection}client_secret_file = \"\"\n"),
            "issuers[0].introspection.client_secret_file: must not be empty",
        ),
        (
            format!("{base}{introspection}client_secret_env = \"S\"\nclient_secret_file = \"s\"\n"),
            "set only one of client_secret_env, client_secret_file",
        ),
        (format!("{base}{introspection}"), "issuers[0].introspection.client_secret_env: missing"),
        (format!("{base}{store}password_env = \"\"\n"), "shared_state.password_env: must not be empty"),
        (
            format!("{base}{store}password_env = \"P\"\npassword_file = \"p\"\n"),
            "set only one of password_env, password_file",
        ),
        (format!("{base}{sync}password_file = \"\"\n"), "key_manager_sync.password_file: must not be empty"),
        (format!("{base}{sync}password = \"\"\n"), "key_manager_sync.password: must not be empty"),
        (
            format!("{base}{sync}password_env = \"P\"\npassword = \"p\"\n"),
            "set only one of password_env, password_file, password",
        ),
    ];
    for (text, said) in cases {
        let p = temp_file("secrets.toml", &text);
        let out = bin().args(["check-config", "--config"]).arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{said}: {err}");
        assert!(err.contains(said), "{said}: {err}");
    }
    // And one named source is accepted by every section.
    let p = temp_file(
        "secrets.toml",
        &format!(
            "{base}{introspection}client_secret_env = \"S\"\n{store}password_env = \"P\"\n{sync}password_env = \"P\"\n"
        ),
    );
    let out =
        bin().args(["check-config", "--config"]).arg(&p).env("S", "s").env("P", "p").env("M", "m").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
