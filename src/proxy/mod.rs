//! The proxy: a hyper 1 server (HTTP/1.1 and h2c) whose handler routes, authenticates and
//! forwards to the upstream over a pooled hyper-util client. Bodies stream both ways and are
//! never buffered. Hop-by-hop headers (RFC 9110 §7.6.1, and those named in `Connection`) are
//! dropped, `x-forwarded-*` set, and the claim headers replaced by the verified values. A
//! refused request never reaches the upstream. Nothing here panics on input.

pub mod response;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::auth::{AuthError, Authenticator, Verified};
use crate::config::Upstream;
use crate::metrics::{Metrics, Outcome};
use crate::routes::{self, RouteTable};
use response::{error_response, reject};

/// The body of every response: the upstream's, streamed, or a small error document.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// `x-jwt-payload`: the verified payload, base64url.
pub static X_JWT_PAYLOAD: HeaderName = HeaderName::from_static("x-jwt-payload");
/// `x-jwt-sub`: the verified `sub`.
pub static X_JWT_SUB: HeaderName = HeaderName::from_static("x-jwt-sub");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Everything the request handler needs, shared by all connections.
pub struct Gateway {
    routes: RouteTable,
    auth: Arc<Authenticator>,
    client: Client<HttpConnector, Incoming>,
    upstream: Upstream,
    authority: Authority,
    max_header_bytes: usize,
    metrics: Arc<Metrics>,
}

/// The peer address as a header value, formatted without a heap `String`.
fn ip_header(ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    write!(cur, "{ip}").ok()?;
    let n = cur.position() as usize;
    HeaderValue::from_bytes(&buf[..n]).ok()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names instead of nine removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        headers.remove(n);
    }
    // `TE: trailers` is meaningful end to end (gRPC); anything else is hop-by-hop.
    if headers.get(header::TE).is_some_and(|v| v.as_bytes() != b"trailers") {
        headers.remove(header::TE);
    }
}

impl Gateway {
    /// Builds the handler state and the upstream connection pool.
    pub fn new(
        routes: RouteTable,
        auth: Arc<Authenticator>,
        upstream: Upstream,
        max_header_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(upstream.pool_idle_timeout)
            .pool_max_idle_per_host(upstream.pool_max_idle)
            .build(connector);
        // Validated at config load as host:port; an invalid one would fail every request (502).
        let authority =
            Authority::try_from(upstream.authority.as_str()).unwrap_or_else(|_| Authority::from_static("invalid"));
        Gateway { routes, auth, client, upstream, authority, max_header_bytes, metrics }
    }

    /// The authenticator (shared with `validate` and the admin listener).
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Handles one request end to end.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let header_bytes: usize = req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if header_bytes > self.max_header_bytes {
            self.routes.unmatched.count(Outcome::HeadersTooLarge);
            tracing::info!(status = 431, bytes = header_bytes, "request headers too large");
            return error_response(
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request_header_fields_too_large",
                "the request headers exceed the configured maximum",
            );
        }
        let form = match routes::match_form(req.uri().path()) {
            Ok(f) => f,
            Err(e) => {
                self.routes.unmatched.count(Outcome::InvalidRequest);
                tracing::info!(status = 400, reason = e.description(), "path refused");
                return error_response(http::StatusCode::BAD_REQUEST, "invalid_request", e.description());
            }
        };
        let Some(route) = self.routes.find(&form, req.method()) else {
            self.routes.unmatched.count(Outcome::NoRoute);
            tracing::debug!(status = 404, method = %req.method(), "no route");
            return error_response(http::StatusCode::NOT_FOUND, "no_route", "no route matches this path and method");
        };
        drop(form);
        // Client copies of the claim headers are never trusted, on any route.
        req.headers_mut().remove(&X_JWT_PAYLOAD);
        req.headers_mut().remove(&X_JWT_SUB);

        let verified = if route.cfg.anonymous {
            None
        } else {
            match self.auth.authorize(req.headers(), &route.cfg.scopes).await {
                Ok(v) => Some(v),
                Err(r) => {
                    self.auth.count_rejection(&r);
                    let outcome = match r.error {
                        AuthError::MissingToken => Outcome::MissingToken,
                        AuthError::InvalidRequest(_) => Outcome::InvalidRequest,
                        AuthError::InvalidToken(_) => Outcome::InvalidToken,
                        AuthError::InsufficientScope => Outcome::InsufficientScope,
                        AuthError::Unavailable => Outcome::Unavailable,
                    };
                    route.metrics.count(outcome);
                    tracing::info!(
                        route = %route.cfg.name,
                        status = r.error.status().as_u16(),
                        error = r.error.code(),
                        reason = r.error.reason(),
                        issuer = r.issuer.and_then(|i| self.auth.keys().issuers.get(i)).map(|k| k.name()).unwrap_or(""),
                        "request refused: {}",
                        r.error.description()
                    );
                    return reject(r.error, route);
                }
            }
        };
        let outcome = if verified.is_some() { Outcome::Allowed } else { Outcome::Anonymous };
        let resp = match self.forward(req, peer, verified).await {
            Ok(resp) => {
                route.metrics.count(outcome);
                resp.map(Either::Left)
            }
            Err(failure) => {
                route.metrics.count(failure);
                let (status, code, desc) = if failure == Outcome::UpstreamTimeout {
                    (http::StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", "the upstream did not answer in time")
                } else {
                    (http::StatusCode::BAD_GATEWAY, "bad_gateway", "the upstream could not be reached")
                };
                error_response(status, code, desc)
            }
        };
        route.metrics.duration.observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        verified: Option<Verified>,
    ) -> Result<Response<Incoming>, Outcome> {
        let (mut parts, body) = req.into_parts();
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        strip_hop_by_hop(&mut parts.headers);
        let h = &mut parts.headers;
        if let Some(host) = &host {
            // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1 and sees it as Host.
            if !h.contains_key(header::HOST) {
                h.insert(header::HOST, host.clone());
            }
            h.insert(&X_FORWARDED_HOST, host.clone());
        }
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", peer.ip())).ok(),
            None => ip_header(peer.ip()),
        };
        if let Some(v) = xff {
            h.insert(&X_FORWARDED_FOR, v);
        }
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(v) = verified {
            h.insert(&X_JWT_PAYLOAD, v.payload_header);
            if let Some(sub) = v.verdict.sub_header.clone() {
                h.insert(&X_JWT_SUB, sub);
            }
        }
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(_) => return Err(Outcome::UpstreamError),
        };
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, body);
        match tokio::time::timeout(self.upstream.timeout, self.client.request(req)).await {
            Err(_) => {
                self.metrics.upstream_errors.with_label_values(&["timeout"]).inc();
                tracing::warn!(status = 504, timeout_s = self.upstream.timeout.as_secs(), "upstream timed out");
                Err(Outcome::UpstreamTimeout)
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() { "connect" } else { "other" };
                self.metrics.upstream_errors.with_label_values(&[kind]).inc();
                tracing::warn!(status = 502, kind, "upstream request failed: {}", crate::fetch::error_chain(&e));
                Err(Outcome::UpstreamError)
            }
            Ok(Ok(mut resp)) => {
                strip_hop_by_hop(resp.headers_mut());
                Ok(resp)
            }
        }
    }
}
