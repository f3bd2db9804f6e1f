//! No idle connection lives forever: silent clients, slow heads, idle keep-alive and HTTP/2
//! connections are closed on time and counted; busy ones are not; the connection cap holds.
//! The listener's timers run on the gateway's clock: these tests move a manual clock across
//! the timeouts instead of waiting for them.

use std::time::Duration;

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: &str = "header_read_timeout_seconds = 1\nidle_timeout_seconds = 2";

/// Reads until the server closes the connection (panics after 10 s of real time).
async fn until_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was never closed"),
        }
    }
}

/// True if the server has not closed `s` (nothing to read, no end of stream, right now).
async fn still_open(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(20), s.peek(&mut buf)).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_or_too_little_is_closed() {
    let h = Harness::start_manual("", SHORT).await;
    let mut silent = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let mut one_byte = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    one_byte.write_all(b"G").await.unwrap();
    // Slowloris: a byte of the head at a time, never the end of it.
    let mut trickle = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let head = b"GET /public/x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n";
    for b in &head[..10] {
        trickle.write_all(&[*b]).await.unwrap();
    }
    wait_until("the three are accepted", || async { metric(&h.metrics().await, "jwtgate_open_connections") == 3.0 })
        .await;
    // Just inside the header-read timeout (1 s): all three still open.
    h.advance(Duration::from_millis(900));
    for b in &head[10..20] {
        trickle.write_all(&[*b]).await.unwrap();
    }
    for (what, s) in [("silent", &mut silent), ("one byte", &mut one_byte), ("trickle", &mut trickle)] {
        assert!(still_open(s).await, "{what} was closed before its time");
    }
    // Past it: all three closed, however many bytes they sent.
    h.advance(Duration::from_millis(400));
    for s in [&mut silent, &mut one_byte, &mut trickle] {
        until_closed(s).await;
    }
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"header_timeout\"}"), 3.0, "{m}");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    // The upstream's timeout runs on the gateway's clock too: longer than the jump below.
    let h =
        Harness::start_manual_edited("", SHORT, |t| t.replace("\ntimeout_seconds = 2\n", "\ntimeout_seconds = 30\n"))
            .await;
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    s.write_all(b"GET /public/x HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle for 1.9 s of the 2 allowed: open, and a second request on it works.
    h.advance(Duration::from_millis(1900));
    assert!(still_open(&mut s).await, "closed before the idle timeout");
    h.advance(Duration::from_millis(600));
    until_closed(&mut s).await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"idle_timeout\"}"), 1.0, "{m}");
    // A request in flight for longer than both timeouts is busy, not idle: it completes.
    let mut s = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    h.upstream.set_delay(Duration::from_millis(300));
    s.write_all(b"GET /public/slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    wait_until("the request reached the upstream", || async { h.upstream.hits() == 2 }).await;
    h.advance(Duration::from_secs(5));
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "the busy connection was cut");
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_idle_or_stall_are_closed() {
    let h = Harness::start_manual("", SHORT).await;
    // Preface only; and stopped mid-HEADERS: a HEADERS frame without END_HEADERS, and no
    // CONTINUATION (length 1, type HEADERS, flags END_STREAM only, stream 1, ":method: GET").
    let mut preface = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    preface.write_all(H2_PREFACE).await.unwrap();
    let mut mid_headers = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    mid_headers.write_all(H2_PREFACE).await.unwrap();
    mid_headers.write_all(b"\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82").await.unwrap();
    wait_until("both are accepted", || async { metric(&h.metrics().await, "jwtgate_open_connections") == 2.0 }).await;
    h.advance(Duration::from_millis(1300));
    until_closed(&mut preface).await;
    until_closed(&mut mid_headers).await;
    // Idle after a request, with a real HTTP/2 client: the next request needs a new connection.
    jwtgate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    assert_eq!(client.get(h.url("/public/x")).send().await.unwrap().status(), 200);
    // The response's stream may still be finishing when the clock first moves: step it on.
    advance_until(h.manual_clock(), Duration::from_millis(500), "the idle HTTP/2 connection is closed", || async {
        metric(&h.metrics().await, "jwtgate_open_connections") == 0.0
    })
    .await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 0.0, "{m}");
    assert!(metric(&m, "jwtgate_connections_closed_total{reason=\"idle_timeout\"}") >= 1.0, "{m}");
    assert_eq!(client.get(h.url("/public/x")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_idle_connections_are_all_closed() {
    let h = Harness::start_manual("", SHORT).await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        conns.push(TcpStream::connect(h.gw.proxy_addr).await.unwrap());
    }
    wait_until("all 300 are accepted", || async { metric(&h.metrics().await, "jwtgate_open_connections") == 300.0 })
        .await;
    h.advance(Duration::from_millis(1300));
    for c in conns.iter_mut() {
        until_closed(c).await;
    }
    wait_until("every connection task ended", || async {
        metric(&h.metrics().await, "jwtgate_open_connections") == 0.0
    })
    .await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"header_timeout\"}"), 300.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_clients_wait_their_turn() {
    let h = Harness::start_manual("", &format!("{SHORT}\nmax_connections = 2")).await;
    let _a = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    let _b = TcpStream::connect(h.gw.proxy_addr).await.unwrap();
    wait_until("both are accepted", || async { metric(&h.metrics().await, "jwtgate_open_connections") == 2.0 }).await;
    // The third waits in the backlog: not served while the first two hold the cap.
    let third = tokio::spawn(raw(h.gw.proxy_addr, "GET /public/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    wait_until("the accept loop waits for the cap", || async {
        metric(&h.metrics().await, "jwtgate_connection_limit_waits_total") >= 1.0
    })
    .await;
    assert!(!third.is_finished(), "served beyond max_connections");
    assert_eq!(h.upstream.hits(), 0);
    // One of the first two times out (header read, 1 s): the third gets its turn. (Stepped:
    // a watchdog may not have armed its sleep yet when the clock first moves.)
    advance_until(h.manual_clock(), Duration::from_millis(500), "the third client is served", || async {
        third.is_finished()
    })
    .await;
    let (status, _, _) = third.await.unwrap();
    assert_eq!(status, 200);
}
