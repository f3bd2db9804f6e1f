//! One request, one meaning: requests a backend could read differently from jwtgate are refused
//! or cleaned, over raw sockets, with an echo upstream that shows exactly what arrived.

use crate::support::*;
use serde_json::Value;

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n")
}

/// The header names the echo upstream received.
fn received_names(echo_body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(echo_body).unwrap_or_else(|_| panic!("echo json: {echo_body}"));
    v["headers"].as_object().unwrap().keys().cloned().collect()
}

fn folds_to_claim_header(name: &str) -> bool {
    let folded = name.to_ascii_lowercase().replace(['_', '.'], "-");
    folded == "x-jwt-sub" || folded == "x-jwt-payload"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_header_aliases_never_reach_the_upstream() {
    let h = Harness::start().await;
    let spoof =
        "x_jwt_sub: admin\r\nX_JWT_PAYLOAD: e30\r\nx-jwt_sub: admin\r\nx.jwt.sub: admin\r\nx.jwt-payload: e30\r\n\
                 x-jwt-sub: admin\r\n";
    // Anonymous route: none of them, under any spelling.
    let (status, _, body) = raw(h.gw.proxy_addr, &get("/public/x", spoof)).await;
    assert_eq!(status, 200, "{body}");
    let names = received_names(&body);
    assert!(!names.iter().any(|n| folds_to_claim_header(n)), "{names:?}");
    // Authenticated route: only the verified values, under the canonical names.
    let token = h.token("");
    let (status, _, body) =
        raw(h.gw.proxy_addr, &get("/api/x", &format!("{spoof}Authorization: Bearer {token}\r\n"))).await;
    assert_eq!(status, 200, "{body}");
    let names = received_names(&body);
    let claim: Vec<&String> = names.iter().filter(|n| folds_to_claim_header(n)).collect();
    assert_eq!(claim, ["x-jwt-payload", "x-jwt-sub"], "{names:?}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(upstream_header(&v, "x-jwt-sub"), ["alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_parameters_cannot_hide_a_dot_segment_or_dodge_a_route() {
    let h = Harness::start().await;
    for path in ["/public/..;/orders/42", "/public/.;/orders/42", "/public/%2e%2e;/orders/42", "/public/..;x=1/orders"]
    {
        let (status, _, body) = raw(h.gw.proxy_addr, &get(path, "")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("invalid_request"), "{body}");
    }
    assert_eq!(h.upstream.hits(), 0);
    // `;params` elsewhere are ignored for routing (as Java servers read them): still /orders.
    for path in ["/orders;x/42", "/orders;jsessionid=abc", "/%6frders;x/42"] {
        let (status, _, _) = raw(h.gw.proxy_addr, &get(path, "")).await;
        assert_eq!(status, 401, "{path} is under /orders");
    }
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_judged_as_get_and_non_canonical_methods_are_refused() {
    let h = Harness::start().await;
    let (status, _, _) =
        raw(h.gw.proxy_addr, "HEAD /orders/42 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 401, "HEAD is covered by the GET route");
    let token = h.token("orders:read");
    let req =
        format!("HEAD /orders/42 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(h.gw.proxy_addr, &req).await.0, 200);
    let no_scope = h.token("");
    let req = format!(
        "HEAD /orders/42 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {no_scope}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw(h.gw.proxy_addr, &req).await.0, 403);
    let hits = h.upstream.hits();
    for m in ["get", "Get", "pOST", "delete"] {
        let req =
            format!("{m} /api/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw(h.gw.proxy_addr, &req).await;
        assert_eq!(status, 400, "{m}: {body}");
    }
    assert_eq!(h.upstream.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_override_headers_never_reach_the_upstream() {
    let h = Harness::start().await;
    let spoof = "X-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nX-Original-URI: /admin/x\r\n\
                 X-Forwarded-Uri: /admin/x\r\nx_original_url: /admin/x\r\nx.rewrite.url: /admin/x\r\n\
                 x_forwarded_uri: /admin/x\r\nx-original_uri: /admin/x\r\n";
    let token = h.token("");
    for (path, extra) in
        [("/public/x", spoof.to_string()), ("/api/x", format!("{spoof}Authorization: Bearer {token}\r\n"))]
    {
        let (status, _, body) = raw(h.gw.proxy_addr, &get(path, &extra)).await;
        assert_eq!(status, 200, "{body}");
        let names = received_names(&body);
        let left: Vec<&String> = names
            .iter()
            .filter(|n| {
                let f = n.to_ascii_lowercase().replace(['_', '.'], "-");
                ["x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-uri"].contains(&f.as_str())
            })
            .collect();
        assert!(left.is_empty(), "{path}: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_headers_are_removed_unless_the_route_opts_in() {
    let h =
        Harness::start_with("\n[[routes]]\nname = \"rpc\"\npath_prefix = \"/rpc\"\nmethod_override = true\n", "").await;
    let token = h.token("");
    let overrides = "X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n\
                     x_http_method_override: DELETE\r\n";
    let auth = format!("{overrides}Authorization: Bearer {token}\r\n");
    let (status, _, body) = raw(h.gw.proxy_addr, &get("/api/x", &auth)).await;
    assert_eq!(status, 200);
    let names = received_names(&body);
    assert!(!names.iter().any(|n| n.replace('_', "-").contains("method")), "{names:?}");
    let (status, _, body) = raw(h.gw.proxy_addr, &get("/rpc/x", &auth)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(upstream_header(&v, "x-http-method-override"), ["DELETE"], "the route opted in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_be_one_and_present() {
    let h = Harness::start().await;
    let (status, _, _) =
        raw(h.gw.proxy_addr, "GET /public/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "two Host headers");
    let (status, _, _) = raw(h.gw.proxy_addr, "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 400, "HTTP/1.1 without Host");
    assert_eq!(h.upstream.hits(), 0);
    let (status, _, _) = raw(h.gw.proxy_addr, "GET /public/x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "HTTP/1.0 may omit Host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_host_must_agree_with_authority() {
    let h = Harness::start().await;
    jwtgate::tls::install_crypto_provider();
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = client.get(h.url("/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.get(h.url("/public/x")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 400, "a host header that disagrees with :authority");
    assert_eq!(h.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_unless_a_route_lists_it() {
    let h = Harness::start().await;
    for req in [
        "CONNECT /public/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    ] {
        let (status, _, body) = raw(h.gw.proxy_addr, req).await;
        assert_eq!(status, 405, "{req}: {body}");
    }
    assert_eq!(h.upstream.hits(), 0);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "jwtgate_requests_total{listener=\"proxy\",outcome=\"method_not_allowed\",route=\"\"}"),
        2.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_and_backslashes_are_refused() {
    let h = Harness::start().await;
    for (what, req) in [
        (
            "CL+TE",
            "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /orders/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "two different lengths",
            "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\nConnection: close\r\n\r\nabc",
        ),
        ("obs-fold", "GET /public/x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\nConnection: close\r\n\r\n"),
        ("backslash dot segment", "GET /public\\..\\orders/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ] {
        let (status, head, body) = raw(h.gw.proxy_addr, req).await;
        if what == "CL+TE" {
            // RFC 9112 §6.3: Transfer-Encoding wins and the connection is closed after the
            // response, so the bytes after the 0-chunk are never read as a second request.
            assert_eq!(status, 200, "{what}");
            assert!(!body.contains("HTTP/1.1 "), "one response only: {head}{body}");
            let echo: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(echo["body_bytes"], 0);
            assert!(upstream_header(&echo, "content-length").iter().all(|v| v == "0"), "{echo}");
        } else {
            assert_eq!(status, 400, "{what}");
        }
    }
    assert_eq!(h.upstream.hits(), 1, "only the CL+TE request's outer POST reached the upstream");
}
