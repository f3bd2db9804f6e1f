//! No idle connection lives forever: silent clients, slow heads, idle keep-alive and HTTP/2
//! connections are closed on time and counted; busy ones are not; the connection cap holds.
mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: &str = "header_read_timeout_seconds = 1\nidle_timeout_seconds = 2";

/// Reads until the server closes the connection; returns how long that took (panics after 10 s).
async fn until_closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was never closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_or_too_little_is_closed() {
    let h = Harness::start_with("", SHORT).await;
    let mut silent = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let mut one_byte = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    one_byte.write_all(b"G").await.unwrap();
    let mut trickle = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let t = tokio::spawn(async move {
        // A byte every 300 ms (slowloris): the head is never finished within the second allowed.
        let mut sent = 0;
        for b in b"GET /public/x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n" {
            if trickle.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        sent
    });
    for (what, s) in [("silent", &mut silent), ("one byte", &mut one_byte)] {
        let took = until_closed(s).await;
        assert!(took < Duration::from_secs(4), "{what}: closed after {took:?}");
    }
    let sent = t.await.unwrap();
    assert!(sent < 20, "the slow client was cut off after {sent} bytes");
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_connections_closed_total{reason=\"header_timeout\"}") >= 1.0, "{m}");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let h = Harness::start_with("", SHORT).await;
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = until_closed(&mut s).await;
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "idle close after {took:?}");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"idle_timeout\"}"), 1.0, "{m}");
    // A request slower than the header timeout (and the upstream timeout of the harness, 2 s,
    // bounds it) is in flight, not idle: it completes.
    h.upstream.set_delay(Duration::from_millis(1800));
    let r = h.client.get(h.url("/public/slow")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_idle_or_stall_are_closed() {
    let h = Harness::start_with("", SHORT).await;
    // Preface only.
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    let took = until_closed(&mut s).await;
    assert!(took < Duration::from_secs(4), "preface only: {took:?}");
    // Stopped mid-HEADERS: a HEADERS frame without END_HEADERS, and no CONTINUATION.
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    s.write_all(H2_PREFACE).await.unwrap();
    // length 1, type HEADERS (1), flags END_STREAM only, stream 1, one byte of HPACK (":method: GET").
    s.write_all(b"\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82").await.unwrap();
    let took = until_closed(&mut s).await;
    assert!(took < Duration::from_secs(4), "mid-HEADERS: {took:?}");
    // Idle after a request, with a real HTTP/2 client: the next request needs a new connection.
    jwtgate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    assert_eq!(client.get(h.url("/public/x")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 0.0, "{m}");
    assert!(metric(&m, "jwtgate_connections_closed_total{reason=\"idle_timeout\"}") >= 1.0, "{m}");
    assert_eq!(client.get(h.url("/public/x")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_are_all_closed() {
    let h = Harness::start_with("", SHORT).await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        conns.push(TcpStream::connect(h.gw.proxy_addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 300.0);
    for c in conns.iter_mut() {
        until_closed(c).await;
    }
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 0.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"header_timeout\"}"), 300.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_clients_wait_their_turn() {
    let h = Harness::start_with("", &format!("{SHORT}\nmax_connections = 2")).await;
    let _a = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let _b = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third is not accepted until one of the first two is closed (header timeout, 1 s).
    let start = Instant::now();
    let (status, _, _) = raw(h.gw.proxy_addr, "GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(start.elapsed() >= Duration::from_millis(500), "served at once: {:?}", start.elapsed());
    let m = h.metrics().await;
    assert!(metric(&m, "jwtgate_connection_limit_waits_total") >= 1.0, "{m}");
}
