//! WebSockets through jwtgate with a real client and server (tokio-tungstenite): an allowed
//! upgrade is tunnelled both ways; a token without the scope gets 403 and no tunnel; the
//! tunnel's lifetime is bounded and everything is counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket server that answers every text frame with "echo: <text>", and reports the
/// `x-jwt-sub` its handshake carried as its first message.
async fn ws_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sub = String::new();
                // The callback's signature is tungstenite's (its error is a whole response).
                #[allow(clippy::result_large_err)]
                let callback =
                    |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                     resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        sub = req.headers().get("x-jwt-sub").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        Ok(resp)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
                let _ = ws.send(Message::text(format!("hello {sub}"))).await;
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("echo: {t}")),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

struct Ws {
    idp: FakeIssuer,
    key: Arc<SigningKey>,
    gw: jwtgate::serve::Running,
}

async fn start(server_extra: &str) -> Ws {
    let idp = FakeIssuer::start("acme").await.unwrap();
    let key = idp.add_shared_key(harness_key());
    let upstream = ws_upstream().await;
    let text = config_text(&idp.discovery_url(), upstream, "", server_extra)
        + "\n[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\nmethods = [\"GET\"]\nscopes = [\"chat\"]\n";
    let gw = start_gateway(&text).await;
    let client = http_client();
    wait_until("ready", || async {
        client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    Ws { idp, key, gw }
}

impl Ws {
    fn request(&self, token: Option<&str>) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let mut req = format!("ws://{}/chat/room1", self.gw.proxy_addr).into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    }

    fn token(&self, scope: &str) -> String {
        self.key.token(&self.idp.claims(now(), "alice", AUD, scope))
    }

    async fn metrics(&self) -> String {
        http_client().get(format!("http://{}/metrics", self.gw.admin_addr)).send().await.unwrap().text().await.unwrap()
    }
}

fn refused_status(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorised_websocket_is_tunnelled_both_ways() {
    let ws = start("").await;
    let (mut conn, resp) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = conn.next().await.unwrap().unwrap();
    assert_eq!(hello.into_text().unwrap().as_str(), "hello alice", "the upstream saw the verified x-jwt-sub");
    for i in 0..20 {
        conn.send(Message::text(format!("frame {i}"))).await.unwrap();
        let back = conn.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), format!("echo: frame {i}"));
    }
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_tunnels"), 1.0, "{m}");
    conn.close(None).await.unwrap();
    drop(conn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_upgrades_total{result=\"tunnelled\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_open_tunnels"), 0.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"allowed\",route=\"chat\"}"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_the_scope_or_a_token_gets_no_tunnel() {
    let ws = start("").await;
    let e = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("other")))).await.unwrap_err();
    assert_eq!(refused_status(e), 403);
    let e = tokio_tungstenite::connect_async(ws.request(None)).await.unwrap_err();
    assert_eq!(refused_status(e), 401);
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_upgrades_total{result=\"tunnelled\"}"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_is_closed_at_its_maximum_lifetime() {
    let ws = start("tunnel_max_lifetime_seconds = 1").await;
    let (mut conn, _) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    conn.next().await.unwrap().unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match conn.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel outlived its lifetime");
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_tunnels_expired_total"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_count_as_open_connections_until_they_close() {
    let ws = start("max_connections = 2").await;
    let (mut a, _) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    a.next().await.unwrap().unwrap();
    b.next().await.unwrap().unwrap();
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_open_connections"), 2.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_open_tunnels"), 2.0, "{m}");
    // A third client waits: two tunnels hold both places.
    let addr = ws.gw.proxy_addr;
    let third =
        tokio::spawn(async move { raw(addr, "GET /chat/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!third.is_finished(), "a third connection was served beside two tunnels with max_connections = 2");
    // One tunnel closes: its place goes to the waiting client.
    a.close(None).await.unwrap();
    drop(a);
    let (status, _, _) =
        tokio::time::timeout(Duration::from_secs(5), third).await.expect("served once a tunnel closed").unwrap();
    assert_eq!(status, 401);
    b.send(Message::text("still here")).await.unwrap();
    assert_eq!(b.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "echo: still here");
    drop(b);
    wait_until("every connection closed", || async { metric(&ws.metrics().await, "jwtgate_open_connections") == 0.0 })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tunnel_is_closed_after_its_idle_timeout() {
    let ws = start("tunnel_idle_timeout_seconds = 1").await;
    let (mut busy, _) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    let (mut silent, _) = tokio_tungstenite::connect_async(ws.request(Some(&ws.token("chat")))).await.unwrap();
    busy.next().await.unwrap().unwrap();
    silent.next().await.unwrap().unwrap();
    // The busy one talks every 300 ms for 2.4 s and stays open; the silent one is closed.
    for i in 0..8 {
        busy.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(busy.next().await.unwrap().unwrap().into_text().unwrap().as_str(), format!("echo: {i}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a tunnel silent for 2.4 s outlived a 1 s idle timeout");
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_connections_closed_total{reason=\"tunnel_idle_timeout\"}"), 1.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_open_tunnels"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_body_is_refused_before_it_is_judged() {
    let ws = start("").await;
    let smuggled = "GET /admin/x HTTP/1.1\r\nHost: x\r\n\r\n";
    for framing in [format!("Content-Length: {}\r\n", smuggled.len()), "Transfer-Encoding: chunked\r\n".to_string()] {
        let body = if framing.starts_with("Content") {
            smuggled.to_string()
        } else {
            format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len())
        };
        let req = format!(
            "GET /chat/room1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {}\r\n{framing}\r\n{body}",
            ws.token("chat")
        );
        let (status, _, body) = raw(ws.gw.proxy_addr, &req).await;
        assert_eq!(status, 400, "{framing}: {body}");
        assert!(body.contains("upgrade request must not carry a body"), "{body}");
    }
    let m = ws.metrics().await;
    assert_eq!(metric(&m, "jwtgate_upgrades_total{result=\"tunnelled\"}"), 0.0, "{m}");
    assert_eq!(metric(&m, "jwtgate_upgrades_total{result=\"declined\"}"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_101_to_a_plain_request_is_a_502() {
    // An upstream that switches protocols whatever it is asked.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw bytes")
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
        }
    });
    let h = Harness::start().await;
    let idp_url = h.idp.discovery_url();
    let gw = start_gateway(&config_text(&idp_url, upstream, "", "")).await;
    let client = http_client();
    wait_until("ready", || async {
        client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (status, head, _) = raw(
        gw.proxy_addr,
        &format!(
            "GET /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            h.token("")
        ),
    )
    .await;
    assert_eq!(status, 502, "{head}");
}
