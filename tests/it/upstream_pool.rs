//! The upstream keep-alive pool, seen from a raw HTTP/1.1 upstream that counts its
//! connections: reuse, upstreams that close (politely or not), the idle timeout, and a
//! response abandoned half-way never leaking into the next request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jwtgate::clock::ManualClock;
use jwtgate::config::Config;
use jwtgate::serve::{start, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// How the raw upstream treats its connections.
#[derive(Clone, Copy)]
enum Mode {
    /// Keeps every connection open.
    KeepAlive,
    /// Answers with `Connection: close` and closes.
    CloseHeader,
    /// Closes the connection this long after each answer, without saying so.
    SilentClose(Duration),
    /// Answers the first request of a connection; closes it, unanswered, on the second (an
    /// upstream whose keep-alive timeout fired just as the request arrived).
    DropSecondRequest,
}

struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections the gateway closed (EOF seen by the upstream).
    closed_by_gateway: Arc<AtomicUsize>,
    /// The head of the last request, as it came over the wire.
    last_head: Arc<std::sync::Mutex<String>>,
    /// Connections the upstream is done with (closed, by either side).
    ended: Arc<AtomicUsize>,
}

impl RawUpstream {
    async fn start(mode: Mode) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let last_head = Arc::new(std::sync::Mutex::new(String::new()));
        let ended = Arc::new(AtomicUsize::new(0));
        let (a, c, l, e) = (accepted.clone(), closed.clone(), last_head.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (c, l, e) = (c.clone(), l.clone(), e.clone());
                tokio::spawn(async move {
                    serve_conn(stream, mode, c, l).await;
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        RawUpstream { addr, accepted, closed_by_gateway: closed, last_head, ended }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_conn(mut stream: TcpStream, mode: Mode, closed: Arc<AtomicUsize>, last: Arc<std::sync::Mutex<String>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut served = 0;
    loop {
        // Requests here are GETs without a body: read up to the end of the head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        *last.lock().unwrap() = head.clone();
        served += 1;
        if matches!(mode, Mode::DropSecondRequest) && served == 2 {
            return;
        }
        if head.starts_with("GET /public/held ") {
            // Held until the test lets every held request go.
            HELD.notified().await;
        }
        if head.starts_with("GET /public/large ") {
            // 64 MiB, more than any socket buffers hold: a client that reads nothing blocks it.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n").await;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..64 {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            continue;
        }
        if head.starts_with("GET /public/slow ") {
            // Half the body now, the rest much later.
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = stream.write_all(b"world").await;
            continue;
        }
        let close = matches!(mode, Mode::CloseHeader);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n{}\r\nok",
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        match mode {
            Mode::KeepAlive | Mode::DropSecondRequest => {}
            Mode::CloseHeader => return,
            Mode::SilentClose(after) => {
                tokio::time::sleep(after).await;
                return;
            }
        }
    }
}

/// Lets every request to `/public/held` go (`notify_waiters`).
static HELD: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A gateway in front of `upstream`, on a manual clock (returned through [`clock_of`]).
async fn gateway(upstream: SocketAddr, upstream_extra: &str) -> (FakeIssuer, Running) {
    let (idp, gw, _) = gateway_on_clock(upstream, upstream_extra).await;
    (idp, gw)
}

async fn gateway_on_clock(upstream: SocketAddr, upstream_extra: &str) -> (FakeIssuer, Running, Arc<ManualClock>) {
    gateway_with(upstream, upstream_extra, "").await
}

async fn gateway_with(
    upstream: SocketAddr,
    upstream_extra: &str,
    server_extra: &str,
) -> (FakeIssuer, Running, Arc<ManualClock>) {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let text = config_text(&idp.discovery_url(), upstream, "", server_extra).replacen(
        "timeout_seconds = 2\n",
        &format!("timeout_seconds = 2\n{upstream_extra}\n"),
        1,
    );
    let config = Config::parse(&text, None).expect("config");
    let clock = Arc::new(ManualClock::at_system_now());
    let gw = start(config, clock.clone()).await.expect("gateway");
    (idp, gw, clock)
}

/// The gateway's `/metrics` text.
async fn gateway_metrics(gw: &Running) -> String {
    let r = http_client().get(format!("http://{}/metrics", gw.admin_addr)).send().await.unwrap();
    r.text().await.unwrap()
}

/// The reaper tick of the gateway's upstream pool.
fn pool_ticks(gw: &Running) -> u64 {
    gw.reloader.current().gateway.pool().ticks()
}

async fn get_ok(client: &reqwest::Client, gw: &Running, path: &str) {
    let resp = client.get(format!("http://{}{path}", gw.proxy_addr)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw) = gateway(up.addr, "").await;
    let client = http_client();
    for _ in 0..30 {
        get_ok(&client, &gw, "/public/a").await;
    }
    assert_eq!(up.accepted(), 1, "sequential requests share one upstream connection");

    let many: Vec<_> = (0..16)
        .map(|_| {
            let (client, gw_addr) = (http_client(), gw.proxy_addr);
            tokio::spawn(async move { client.get(format!("http://{gw_addr}/public/b")).send().await.unwrap().status() })
        })
        .collect();
    for t in many {
        assert_eq!(t.await.unwrap(), 200);
    }
    let after_burst = up.accepted();
    assert!((1..=17).contains(&after_burst), "{after_burst} connections for 16 concurrent requests");
    for _ in 0..30 {
        get_ok(&client, &gw, "/public/c").await;
    }
    assert_eq!(up.accepted(), after_burst, "idle connections from the burst are reused, not reopened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_every_connection_still_gets_every_request() {
    let up = RawUpstream::start(Mode::CloseHeader).await;
    let (_idp, gw) = gateway(up.addr, "").await;
    let client = http_client();
    for _ in 0..10 {
        get_ok(&client, &gw, "/public/a").await;
    }
    assert_eq!(up.accepted(), 10, "Connection: close is honoured: a new connection per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_upstream_closed_is_not_used_again() {
    let up = RawUpstream::start(Mode::SilentClose(Duration::from_millis(50))).await;
    let (_idp, gw) = gateway(up.addr, "").await;
    let client = http_client();
    for i in 1..=5 {
        get_ok(&client, &gw, "/public/a").await;
        wait_until("the upstream closed the connection", || async { up.ended.load(Ordering::SeqCst) == i }).await;
    }
    assert_eq!(up.accepted(), 5);
    let m = gateway_metrics(&gw).await;
    let failed: f64 = ["connect", "timeout", "other"]
        .iter()
        .map(|k| metric(&m, &format!("jwtgate_upstream_errors_total{{kind=\"{k}\"}}")))
        .sum();
    assert_eq!(failed, 0.0, "no request failed: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw, clock) = gateway_on_clock(up.addr, "pool_idle_timeout_seconds = 1").await;
    let client = http_client();
    get_ok(&client, &gw, "/public/a").await;
    // Three quarters of the idle timeout: the reaper looks (its tick moves) and keeps it.
    advance_until(&clock, Duration::from_millis(50), "the reaper looked", || async { pool_ticks(&gw) >= 3 }).await;
    get_ok(&client, &gw, "/public/a2").await;
    assert_eq!(up.accepted(), 1, "an idle connection younger than the timeout is reused");
    assert_eq!(up.closed_by_gateway.load(Ordering::SeqCst), 0);
    // Past the idle timeout: closed.
    advance_until(&clock, Duration::from_millis(250), "the idle connection is closed", || async {
        up.closed_by_gateway.load(Ordering::SeqCst) == 1
    })
    .await;
    get_ok(&client, &gw, "/public/b").await;
    assert_eq!(up.accepted(), 2, "a fresh connection after the idle one was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_abandoned_half_way_never_leaks_into_the_next_request() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw) = gateway(up.addr, "").await;
    let client = http_client();
    let resp = client.get(format!("http://{}/public/slow", gw.proxy_addr)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp); // the client goes away with half the body unread
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        get_ok(&client, &gw, "/public/a").await;
    }
    assert_eq!(up.accepted(), 2, "the half-read connection was not put back in the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_origin_form_http_1_1_with_a_host() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw) = gateway(up.addr, "").await;

    // Absolute-form from the client: origin-form to the upstream, Host kept.
    let (status, _, body) = raw(
        gw.proxy_addr,
        "GET http://api.example/public/a?x=1 HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let head = up.last_head.lock().unwrap().clone();
    assert!(head.starts_with("GET /public/a?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\nhost: api.example\r\n"), "{head}");

    // HTTP/1.0 without Host: the upstream still gets a Host (HTTP/1.1 requires one).
    let (status, _, body) = raw(gw.proxy_addr, "GET /public/b HTTP/1.0\r\n\r\n").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let head = up.last_head.lock().unwrap().clone();
    assert!(head.starts_with("GET /public/b HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("\r\nhost: {}\r\n", up.addr)), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_lost_on_an_idle_connection_is_sent_again() {
    let up = RawUpstream::start(Mode::DropSecondRequest).await;
    // A 1 s idle timeout makes the pool's clock tick every 250 ms.
    let (_idp, gw, clock) = gateway_on_clock(up.addr, "pool_idle_timeout_seconds = 1").await;
    let client = http_client();
    get_ok(&client, &gw, "/public/a").await;
    // The connection sits idle across a reaper tick.
    let tick = pool_ticks(&gw);
    advance_until(&clock, Duration::from_millis(100), "the reaper ticked", || async { pool_ticks(&gw) > tick }).await;
    // Goes out on the idle connection, which the upstream then closes without answering:
    // the GET is sent again on a new connection instead of becoming a 502.
    get_ok(&client, &gw, "/public/b").await;
    assert_eq!(up.accepted(), 2);
    assert!(up.last_head.lock().unwrap().starts_with("GET /public/b "));

    // A POST is not idempotent: the same failure is a 502, never a second delivery.
    let tick = pool_ticks(&gw);
    advance_until(&clock, Duration::from_millis(100), "the reaper ticked", || async { pool_ticks(&gw) > tick }).await;
    let resp = client.post(format!("http://{}/public/c", gw.proxy_addr)).body("x").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(up.accepted(), 2, "the POST was not sent a second time");
    let m = gateway_metrics(&gw).await;
    assert_eq!(metric(&m, "jwtgate_upstream_errors_total{kind=\"other\"}"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_upstream_max_connections_a_request_gets_503_not_another_connection() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw, clock) = gateway_on_clock(up.addr, "max_connections = 2").await;
    let client = http_client();
    let url = |p: &str| format!("http://{}{p}", gw.proxy_addr);
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(client.get(url("/public/held")).send())).collect();
    wait_until("both held requests reached the upstream", || async { up.accepted() == 2 }).await;
    // A third: no connection comes free within connect_timeout_seconds (1 s of the gateway's clock).
    let third = client.get(url("/public/x")).send();
    let r = advance_until_answered(&clock, Duration::from_millis(250), "the third request is answered", third)
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(up.accepted(), 2, "no third upstream connection");
    HELD.notify_waiters();
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    // Freed connections serve again.
    get_ok(&client, &gw, "/public/x").await;
    assert_eq!(up.accepted(), 2);
    let m = gateway_metrics(&gw).await;
    assert_eq!(metric(&m, "jwtgate_upstream_errors_total{kind=\"saturated\"}"), 1.0, "{m}");
    let busy = "jwtgate_requests_total{listener=\"proxy\",outcome=\"upstream_busy\",route=\"public\"}";
    assert_eq!(metric(&m, busy), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_client_does_not_read_is_cut_after_the_send_timeout() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw, clock) = gateway_with(up.addr, "", "send_timeout_seconds = 5").await;
    let mut client = TcpStream::connect(gw.proxy_addr).await.unwrap();
    client.write_all(b"GET /public/large HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    wait_until("the upstream is sending", || async { up.accepted() == 1 }).await;
    // The client reads nothing. Before the timeout the connection stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    clock.advance(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.ended.load(Ordering::SeqCst), 0, "cut before the send timeout");
    advance_until(&clock, Duration::from_secs(1), "the stalled response is cut", || async {
        let m = gateway_metrics(&gw).await;
        metric(&m, "jwtgate_connections_closed_total{reason=\"send_timeout\"}") == 1.0
    })
    .await;
    // Its upstream side is released: the upstream's connection ends.
    wait_until("the upstream connection is closed", || async { up.ended.load(Ordering::SeqCst) == 1 }).await;
    let m = gateway_metrics(&gw).await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 0.0, "{m}");
}

/// An HTTP/2 client over a raw h2 connection with the given initial stream window, its
/// connection driven (pings answered) in the background.
async fn h2_client(
    addr: SocketAddr,
    window: u32,
) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = h2::client::Builder::new().initial_window_size(window).handshake(tcp).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (tx, driver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_bounded_and_a_zero_window_does_not_hold_them_forever() {
    let up = RawUpstream::start(Mode::KeepAlive).await;
    let (_idp, gw, clock) = gateway_with(up.addr, "", "send_timeout_seconds = 5\nmax_concurrent_streams = 3").await;
    // The client advertises a window of 0 and answers pings: nothing can be sent to it.
    let (tx, driver) = h2_client(gw.proxy_addr, 0).await;
    let mut tx = tx.ready().await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{}/public/x", gw.proxy_addr)).body(()).unwrap();
        let (resp, _) = tx.send_request(req, true).unwrap();
        pending.push(resp);
        tx = tx.ready().await.unwrap();
    }
    // The server's SETTINGS say three streams at most.
    let heads: Vec<_> = futures_util::future::join_all(pending).await;
    assert!(heads.iter().all(|r| r.as_ref().is_ok_and(|r| r.status() == 200)), "heads come through");
    let m = gateway_metrics(&gw).await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 1.0, "{m}");
    advance_until(&clock, Duration::from_secs(1), "the stalled HTTP/2 connection is cut", || async {
        let m = gateway_metrics(&gw).await;
        metric(&m, "jwtgate_connections_closed_total{reason=\"send_timeout\"}") == 1.0
    })
    .await;
    wait_until("the client's connection ends", || async { driver.is_finished() }).await;
    // A fourth stream beyond the limit is refused by the client's own h2 (it honours SETTINGS);
    // a raw check of the advertised value:
    let (tx, _driver) = h2_client(gw.proxy_addr, 65_535).await;
    let mut tx = tx.ready().await.unwrap();
    let req = http::Request::get(format!("http://{}/public/x", gw.proxy_addr)).body(()).unwrap();
    let (resp, _) = tx.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    tx = tx.ready().await.unwrap();
    assert_eq!(tx.current_max_send_streams(), 3);
}
