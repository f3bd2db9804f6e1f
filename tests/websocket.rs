//! WebSockets through jwtgate with a real client and server (tokio-tungstenite): an allowed
//! upgrade is tunnelled both ways; a token without the scope gets 403 and no tunnel; the
//! tunnel's lifetime is bounded and everything is counted.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jwtgate::auth::alg::Alg;
use support::*;
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
    let key = idp.add_key(SigningKey::generate(Alg::RS256, "k1_RS256").unwrap());
    let upstream = ws_upstream().await;
    let text = config_text(&idp.discovery_url(), upstream, "", server_extra)
        + "\n[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\nmethods = [\"GET\"]\nscopes = [\"chat\"]\n";
    let gw = start_gateway(&text).await;
    let client = http_client();
    for _ in 0..200 {
        if client.get(format!("http://{}/readyz", gw.admin_addr)).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
