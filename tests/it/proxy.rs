//! What the upstream receives and what the client gets back: header hygiene, forwarding
//! headers, streaming bodies, HTTP/2 cleartext, header limits.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let h = Harness::start().await;
    let t = h.token("");
    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: api.example:8443\r\nAuthorization: Bearer {t}\r\n\
         Connection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\n\
         Proxy-Authorization: Basic eA==\r\nUpgrade: websocket\r\nX-Forwarded-For: 10.1.2.3\r\nX-Custom: kept\r\n\r\n"
    );
    let (status, _, body) = raw(h.gw.proxy_addr, &req).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    for gone in ["x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"] {
        assert!(upstream_header(&echo, gone).is_empty(), "{gone} was forwarded: {echo}");
    }
    assert_eq!(upstream_header(&echo, "x-custom"), vec!["kept"]);
    assert_eq!(upstream_header(&echo, "host"), vec!["api.example:8443"], "Host forwarded unchanged");
    assert_eq!(upstream_header(&echo, "x-forwarded-host"), vec!["api.example:8443"]);
    assert_eq!(upstream_header(&echo, "x-forwarded-proto"), vec!["http"]);
    assert_eq!(upstream_header(&echo, "x-forwarded-for"), vec!["10.1.2.3, 127.0.0.1"]);
    assert_eq!(upstream_header(&echo, "authorization"), vec![format!("Bearer {t}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_stream_through() {
    let h = Harness::start().await;
    let size = 8 * 1024 * 1024;
    let chunks = futures_util::stream::iter((0..size / 65536).map(|_| Ok::<_, std::io::Error>(vec![7u8; 65536])));
    let resp = h
        .client
        .post(h.url("/orders"))
        .bearer_auth(h.token("orders:read orders:write"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let echo = echoed(resp).await;
    assert_eq!(echo["body_bytes"], size);
    assert_eq!(echo["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_request_with_a_body_never_reaches_the_upstream() {
    let h = Harness::start().await;
    let resp = h.client.post(h.url("/orders")).body(vec![1u8; 100_000]).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works() {
    let h = Harness::start().await;
    jwtgate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let resp = client.get(h.url("/orders/3")).bearer_auth(h.token("orders:read")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo = echoed(resp).await;
    assert_eq!(echo["version"], "HTTP/1.1", "upstream hop is HTTP/1.1");
    assert_eq!(upstream_header(&echo, "host"), vec![h.gw.proxy_addr.to_string()]);
    let resp = client.get(h.url("/orders/3")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let h = Harness::start_with("", "max_header_bytes = 4096\nmax_token_bytes = 2048").await;
    let resp = h.client.get(h.url("/public/x")).header("x-big", "a".repeat(5000)).send().await.unwrap();
    assert_eq!(resp.status(), 431);
    let resp = h.client.get(h.url("/public/x")).header("x-big", "a".repeat(30_000)).send().await.unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused_to_the_upstream() {
    let h = Harness::start().await;
    let t = h.token("");
    for _ in 0..20 {
        echoed(h.get_with("/api/x", &t).await).await;
    }
    let m = h.metrics().await;
    assert_eq!(metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"allowed\",route=\"any\"}"), 20.0);
    assert!(metric(&m, "jwtgate_token_cache_total{result=\"hit\"}") >= 19.0, "{m}");
    assert!(m.contains("jwtgate_request_duration_seconds_bucket{listener=\"proxy\",route=\"any\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_answer() {
    let h = Harness::start().await;
    assert_eq!(h.client.get(h.admin("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(h.client.get(h.admin("/readyz")).send().await.unwrap().status(), 200);
    let status: serde_json::Value = h.client.get(h.admin("/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status["issuers"][0]["issuer"], h.idp.issuer());
    assert_eq!(status["issuers"][0]["kids"][0], "k1_RS256");
    assert_eq!(status["key_manager_sync"]["state"], "disabled");
    let m = h.metrics().await;
    assert!(m.contains("jwtgate_jwks_keys{issuer=\"asgardeo\"} 1"), "{m}");
    assert_eq!(h.client.get(h.admin("/nope")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = Harness::start().await;
    h.upstream.set_delay(Duration::from_millis(800));
    let url = h.url("/public/slow");
    let client = h.client.clone();
    let in_flight = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Harness { gw, upstream: _upstream, idp: _idp, .. } = h;
    let proxy = gw.proxy_addr;
    gw.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err(), "still accepting after shutdown");
}
