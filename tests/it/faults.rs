//! Issue 11 §4, faults with real sockets: an IdP that answers HTML, an empty key set, ten
//! thousand keys or ten mebibytes; an upstream that resets mid-response; a client that hangs
//! up mid-body; ten thousand idle client connections. Nothing is accepted that should not be,
//! nothing hangs, and what was held is freed. (IdP slow or down, upstream refusing or hanging,
//! slowloris: `keys.rs`, `status_codes.rs`, `connection_lifetimes.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_answering_html_an_empty_set_or_ten_mebibytes_leaves_the_last_good_set() {
    let h = Harness::start_manual("jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1", "").await;
    let ten_mib = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let answers = [
        ("HTML", 200, "<!doctype html><html><body>Sign in</body></html>".to_string(), "JWKS"),
        ("an empty key set", 200, "{\"keys\": []}".to_string(), "JWKS"),
        ("10 MiB", 200, ten_mib, "more than 1048576 bytes"),
        ("a 500 with HTML", 500, "<html>oops</html>".to_string(), "500"),
    ];
    for (what, status, body, expected) in answers {
        h.idp.override_jwks(Some((status, body)));
        let before = h.idp.jwks_fetches();
        let started = std::time::Instant::now();
        // The refresher backs off more after every failure: time moves until it has asked.
        advance_until(h.manual_clock(), Duration::from_millis(100), what, || async {
            h.idp.jwks_fetches() > before
                && h.status().await["issuers"][0]["last_error"].as_str().is_some_and(|e| e.contains(expected))
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(8), "{what}: took {:?} of real time", started.elapsed());
        // A token never seen before (no cached verdict) verifies with the last good set.
        let fresh = h.key.token(&h.idp.claims(now(), &format!("u-{what}"), AUD, ""));
        echoed(h.get_with("/api/x", &fresh).await).await;
        assert_eq!(h.status().await["issuers"][0]["kids"], json!(["k1_RS256"]), "{what}");
    }
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_jwks_fetches_total{issuer=\"asgardeo\",result=\"error\"}") >= 4.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_jwks_keys{issuer=\"asgardeo\"}"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_keys_are_capped_and_the_set_still_works() {
    let h = Harness::start_manual(
        "jwks_refresh_seconds = 1\njwks_refresh_min_seconds = 1\nmax_response_bytes = 16777216",
        "",
    )
    .await;
    // The real key first, then 9,999 copies of it under other kids.
    let real = h.key.jwk();
    let mut keys = vec![real.clone()];
    for i in 1..10_000 {
        let mut k = real.clone();
        k["kid"] = Value::String(format!("flood-{i}"));
        keys.push(k);
    }
    let body = json!({ "keys": keys }).to_string();
    assert!(body.len() > 1024 * 1024, "a large document: {} bytes", body.len());
    h.idp.override_jwks(Some((200, body)));
    let before = h.idp.jwks_fetches();
    advance_until(h.manual_clock(), Duration::from_millis(250), "the flood was read", || async {
        h.idp.jwks_fetches() > before && h.status().await["issuers"][0]["keys"] == 64
    })
    .await;
    // Only the first 64 keys count; the real one is among them.
    echoed(h.get_with("/api/x", &h.key.token(&h.idp.claims(now(), "flood", AUD, ""))).await).await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_jwks_keys{issuer=\"asgardeo\"}"), 64.0, "{m}");
}

/// An upstream that answers its first connection with a head and half a body, then resets
/// the connection; later connections get a complete answer.
async fn resetting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                if n == 0 {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nhalf of it").await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = s.set_zero_linger();
                    drop(s); // RST
                } else {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_response_ends_the_client_response_and_frees_the_connection() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let (upstream, accepted) = resetting_upstream().await;
    let gw = start_gateway(&config_text(&idp.discovery_url(), upstream, "", "")).await;
    // The client gets the head, part of the body, and then the end of the connection — it
    // never waits for the 990 bytes that will not come.
    let mut s = TcpStream::connect(gw.proxy_addr).await.unwrap();
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the client connection was left hanging");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("half of it"), "the body stops where the upstream's did: {text}");
    // The next request gets a fresh upstream connection and a whole answer.
    let (status, _, body) = raw(gw.proxy_addr, "GET /public/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    let client = http_client();
    wait_until("both client connections are closed", || async {
        let m = client.get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap().text().await.unwrap();
        metric(&m, "jwtgate_open_connections") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_body_aborts_the_upstream_request() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let token = h.token("orders:write orders:read");
    let head =
        format!("POST /orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'x'; 1000]).await.unwrap();
    wait_until("the upstream started receiving", || async { h.upstream.hits() == 1 }).await;
    drop(s);
    // The upstream sees its request body end in an error (never a complete, shorter body),
    // and the gateway lets go of the client connection.
    wait_until("the upstream request was aborted", || async { h.upstream.body_errors() == 1 }).await;
    wait_until("the client connection is freed", || async {
        metric(&h.metrics().await, "jwtgate_open_connections") == 0.0
    })
    .await;
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    // No reading is a failure, never a 0 that would make the memory bounds below hold vacuously.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status is readable");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    assert!(rss > 0, "a running gateway has resident memory");
    rss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_keep_memory_bounded_and_all_close() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("faults");
    let path = dir.join("jwtgate.toml");
    let server = "log_format = \"json\"\nheader_read_timeout_seconds = 300\nmax_connections = 10000";
    std::fs::write(&path, config_text(&idp.discovery_url(), upstream.addr, "", server)).unwrap();
    let (child, proxy, admin) = spawn_serve(&path).await;
    let pid = child.id().unwrap();
    let client = http_client();
    let metrics =
        || async { client.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap() };
    // Warm up one request so that the baseline includes what every process has.
    let _ = raw(proxy, "GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    let before = rss_kib(pid);
    let mut during = 0;
    // Twice: the second wave must fit in what the first left behind (memory is reused, not leaked).
    for wave in 1..=2 {
        let t0 = std::time::Instant::now();
        let mut conns = Vec::with_capacity(10_000);
        // In batches, each accepted before the next. A batch of 100 handshakes is 300 packets on
        // loopback: more at once overflow the kernel's input queue (`netdev_max_backlog`, 1,000
        // packets), a dropped SYN is sent again only after a second, and the test spent ten
        // seconds waiting on retransmits (250 at a time) instead of one connecting.
        for _ in 0..100 {
            let batch = (0..100).map(|_| TcpStream::connect(proxy));
            for c in futures_util::future::join_all(batch).await {
                conns.push(c.unwrap());
            }
            let want = conns.len() as f64;
            wait_until("the batch is accepted", || async {
                metric(&metrics().await, "jwtgate_open_connections") == want
            })
            .await;
        }
        let now = rss_kib(pid);
        let per_conn = (now.saturating_sub(before) * 1024) / 10_000;
        eprintln!("wave {wave}: RSS {before} KiB -> {now} KiB with 10,000 idle connections ({per_conn} bytes each, connected in {:?})", t0.elapsed());
        assert!(per_conn < 16 * 1024, "{per_conn} bytes per idle connection");
        if wave == 2 {
            // A leak would double the growth; glibc's per-thread arenas may hand the second wave
            // memory from another arena than the first freed (seen under CPU load), hence 1.5x.
            let (first, second) = (during - before, now.saturating_sub(before));
            assert!(second * 2 <= first * 3, "the second wave grew RSS by {second} KiB, the first by {first} KiB");
        }
        during = now;
        // The clients go away: every connection is closed.
        drop(conns);
        wait_until("all are closed", || async { metric(&metrics().await, "jwtgate_open_connections") == 0.0 }).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_listener_backs_off_and_logs_once_a_second() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("fds");
    let path = dir.join("jwtgate.toml");
    let server = "log_format = \"json\"\nheader_read_timeout_seconds = 300\nmax_connections = 10000";
    std::fs::write(&path, config_text(&idp.discovery_url(), upstream.addr, "", server)).unwrap();
    let (_child, proxy, admin, log) = spawn_serve_with(&path, Some(96)).await;
    let client = http_client();
    // Far more connections than the process has descriptors: accept fails until some close.
    let mut conns = Vec::new();
    for _ in 0..200 {
        conns.push(TcpStream::connect(proxy).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged = log.lock().unwrap().iter().filter(|l| l.contains("accept failed")).count();
    assert!(logged <= 5, "accept failures logged {logged} times in about 3 s");
    // Backing off is not giving up: once the idle clients go, new ones are served.
    drop(conns);
    let fresh = || raw(proxy, "GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    wait_until("a new client is served", || async { fresh().await.0 == 200 }).await;
    // (The admin listener shares the descriptors: read the count once there are some again.)
    let m = client.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    let failures = metric(&m, "jwtgate_accept_errors_total");
    assert!(failures >= 1.0, "the listener ran out of descriptors: {failures}");
    assert!(logged >= 1, "and said so");
}

/// The upstream down under load: each failure is counted and answered, but the log gets one
/// line a second carrying how many it held back (every failure accounted for); a refused token
/// is logged once, in the access log, when that log is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_logged_once_a_second_and_a_refusal_once() {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let down = upstream.addr;
    upstream.stop();
    drop(upstream);
    let dir = temp_dir("loglimit");
    let path = dir.join("jwtgate.toml");
    for access_log in [true, false] {
        let server = format!("log_format = \"json\"\naccess_log = {access_log}");
        std::fs::write(&path, config_text(&idp.discovery_url(), down, "", &server)).unwrap();
        let (_child, proxy, _admin, log) = spawn_serve_with(&path, None).await;
        let client = http_client();
        let burst = std::time::Instant::now();
        for _ in 0..30 {
            let r = client.get(format!("http://{proxy}/public/x")).send().await.unwrap();
            assert_eq!(r.status(), 502);
        }
        // One line per second the burst spanned (a loaded machine may stretch it), and one more.
        let most_lines = burst.elapsed().as_secs() as usize + 2;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(client.get(format!("http://{proxy}/public/x")).send().await.unwrap().status(), 502);
        let r = client.get(format!("http://{proxy}/api/x")).bearer_auth("not-a-jwt").send().await.unwrap();
        assert_eq!(r.status(), 401);
        let lines = |log: &std::sync::Mutex<Vec<String>>, what: &str| logged(log, |m| m.contains(what));
        // The refusal came last: once its line is in, every line before it is too.
        wait_until("the refusal is logged", || async {
            match access_log {
                true => lines(&log, "access").iter().any(|v| v["fields"]["status"] == 401),
                false => !lines(&log, "request refused").is_empty(),
            }
        })
        .await;
        let failures = lines(&log, "upstream request failed");
        assert!((2..=most_lines).contains(&failures.len()), "{} lines: {failures:?}", failures.len());
        let accounted: u64 = failures.iter().map(|v| 1 + v["fields"]["held_back"].as_u64().unwrap()).sum();
        assert_eq!(accounted, 31, "every failure is in a line or in a line's held_back: {failures:?}");
        assert!(failures.iter().all(|v| v["level"] == "WARN"), "{failures:?}");
        let refusals = lines(&log, "request refused");
        if access_log {
            // The access log has the refusal and its reason: no second line at info.
            assert!(refusals.is_empty(), "{refusals:?}");
            let access = lines(&log, "access");
            let refused: Vec<_> = access.iter().filter(|v| v["fields"]["status"] == 401).collect();
            assert_eq!(refused.len(), 1, "{access:?}");
            assert_eq!(refused[0]["fields"]["reason"], "opaque_token", "{refused:?}");
            assert_eq!(refused[0]["fields"]["phase"], "token", "{refused:?}");
            let failed: Vec<_> = access.iter().filter(|v| v["fields"]["status"] == 502).collect();
            assert_eq!(failed.len(), 31);
            assert!(failed.iter().all(|v| v["fields"]["phase"] == "upstream"), "{failed:?}");
        } else {
            assert_eq!(refusals.len(), 1, "{refusals:?}");
            assert_eq!(refusals[0]["level"], "INFO");
            assert_eq!(refusals[0]["fields"]["phase"], "token", "{refusals:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A log shipper that stops reading (stderr a full pipe): requests are still served, and the
/// lines that could not be queued are counted, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_reader_does_not_stall_requests() {
    use tokio::io::AsyncBufReadExt;
    let idp = FakeIssuer::start("acme").await.unwrap();
    let upstream = EchoUpstream::start().await.unwrap();
    let dir = temp_dir("logpipe");
    let path = dir.join("jwtgate.toml");
    let server = "log_format = \"json\"\naccess_log = true";
    std::fs::write(&path, config_text(&idp.discovery_url(), upstream.addr, "", server)).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("JWTGATE_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read up to the "listening" line, then never again: the pipe (64 KiB) fills up.
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (proxy, admin) = loop {
        let line = stderr.next_line().await.unwrap().expect("serve exited");
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        let addr = |k: &str| v["fields"][k].as_str().and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        if let (Some(p), Some(a)) = (addr("proxy_addr"), addr("admin_addr")) {
            break (p, a);
        }
    };
    let client = http_client();
    // About 300 bytes of access log each: 2,400 requests write some 720 KB, eleven times what the
    // pipe holds (a writer on the request path would block after a couple of hundred lines).
    let served = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, served) = (client.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..300 {
                let r = client.get(format!("http://{proxy}/public/x")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("requests kept being served").unwrap();
    }
    assert_eq!(served.load(Ordering::Relaxed), 2400);
    let m = client.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("jwtgate_log_lines_dropped_total"), "{m}");
    drop(stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
