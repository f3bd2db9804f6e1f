//! The proxy: a hyper 1 server (HTTP/1.1 and h2c) whose handler routes, authenticates and
//! forwards to the upstream over the keep-alive pool of the `jwtgate-upstream` crate. Bodies stream both ways
//! and are never buffered. Hop-by-hop headers (RFC 9110 §7.6.1, and those named in
//! `Connection`) are dropped, `x-forwarded-*` set, and the claim headers replaced by the
//! verified values. A refused request never reaches the upstream. Nothing here panics on input.

pub mod meaning;
pub mod request_id;
pub mod tunnel;
// The listeners and the upstream client are crates of their own; the proxy composes them.
pub use jwtgate_edge as server;
pub use jwtgate_upstream as upstream;
pub use jwtgate_upstream::client_body;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::auth::{Authenticator, Verified};
use crate::config::Upstream;
use crate::decision::{Allowed, FramingFault, Judge, Origin, Refused, RequestFacts};
use crate::metrics::{Metrics, Outcome};
use crate::phase::Phase;
use crate::refusal::{Refusal, Shape};
use client_body::{BodyFailure, BodyProgress, ClientBody};
use upstream::{UpstreamBody, UpstreamError, UpstreamPool};

/// The body of every response: the upstream's, streamed, or a small error document.
pub type ProxyBody = Either<UpstreamBody, Full<Bytes>>;

/// `x-jwt-payload`: the verified payload, base64url.
pub static X_JWT_PAYLOAD: HeaderName = HeaderName::from_static("x-jwt-payload");
/// `x-jwt-sub`: the verified `sub`.
pub static X_JWT_SUB: HeaderName = HeaderName::from_static("x-jwt-sub");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A request's id and what its access-log line needs (both opt-in).
struct Extras {
    request_id: Option<HeaderValue>,
    logged: Option<(http::Method, String, Option<u64>)>,
}

/// How a request ended, for its duration metric and its access-log line.
struct Served<'a> {
    /// The metrics of the route it took (or of "no route").
    metrics: &'a crate::metrics::RouteMetrics,
    /// Its outcome.
    outcome: Outcome,
    /// The phase that refused it (`None`: it was answered by the upstream, or tunnelled).
    phase: Option<Phase>,
    /// Why, for a refusal (the metric reason, or the error code).
    reason: &'static str,
    /// `x-jwt-sub`, captured only when the access log asks for it.
    sub: Option<HeaderValue>,
}

/// A refusal as the proxy answers it, in the request's shape, with how it ended.
fn refused(refused: Refused<'_>, shape: Shape) -> (Response<ProxyBody>, Served<'_>) {
    let r = refused.refusal;
    let reason = r.auth_error.map_or(r.code, |e| e.reason());
    let served = Served { metrics: refused.metrics, outcome: r.outcome, phase: Some(r.phase), reason, sub: None };
    (r.render(shape).map(Either::Right), served)
}

/// The answer to a CORS preflight on a route with `[routes.cors]`: 204 and its headers.
#[cold]
fn preflight_answer(cors: Option<Box<crate::cors::CorsHeaders>>) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    if let Some(cors) = cors {
        crate::cors::apply(&cors, resp.headers_mut());
    }
    resp
}

/// The upstream did not answer in time.
struct Elapsed;

/// How the upstream exchange is answered: when it was sent, and the shape jwtgate's own
/// answers take.
struct Answered {
    asked: Instant,
    shape: Shape,
}

/// What an exchange with the upstream gave: its response head, its failure, or nothing in time.
type Exchanged = Result<Result<Response<UpstreamBody>, UpstreamError>, Elapsed>;

/// The proxy's handler state as a reload swaps it.
pub type Swapped = Arc<arc_swap::ArcSwap<Gateway>>;

/// Everything the request handler needs, shared by all connections.
pub struct Gateway {
    /// `http` or `https`: how clients reach this listener.
    scheme: &'static str,
    judge: Judge,
    pool: Arc<UpstreamPool>,
    upstream: Upstream,
    /// `Host` for requests that arrive without one (HTTP/1.0).
    upstream_host: HeaderValue,
    body_read_timeout: std::time::Duration,
    tunnel_limits: tunnel::TunnelLimits,
    protected: meaning::ProtectedNames,
    /// One `jwtgate::access` log line per request.
    access_log: bool,
    /// The access log names the token's `sub`.
    access_log_subject: bool,
    /// `server.request_id`.
    request_ids: bool,
    metrics: Arc<Metrics>,
    /// Upstream failures are logged at most once a second (the metrics count each).
    upstream_warnings: jwtgate_base::log_limit::EverySecond,
}

/// The peer address as a header value. IPv4, the common case, is formatted by hand: going
/// through `Display` cost about a thousand instructions a request.
fn ip_header(ip: std::net::IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; 64];
    let n = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        std::net::IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cur = std::io::Cursor::new(&mut buf[..]);
            write!(cur, "{v6}").ok()?;
            cur.position() as usize
        }
    };
    HeaderValue::from_bytes(&buf[..n]).ok()
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the old `Keep-Alive`/`Proxy-Connection`).
/// `TE` is handled apart: `TE: trailers` is end to end (gRPC relies on it). `Trailer` is end to
/// end too: hyper sends trailer fields only when `Trailer` declares them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names notes which are present: most messages carry none, and the
    // usual one is a bare `Connection: keep-alive`, which costs one removal, not nine.
    let mut present: [Option<HeaderName>; 8] = Default::default();
    let mut count = 0;
    // `keys()` yields each name once, and there are only eight such names.
    for name in headers.keys() {
        if count < present.len() && is_hop_by_hop(name) {
            present[count] = Some(name.clone());
            count += 1;
        }
    }
    if count == 0 {
        return;
    }
    // `Connection: keep-alive` / `close` (the usual values) name no header: skip the parsing.
    let names_headers = |v: &HeaderValue| {
        let b = v.as_bytes();
        !(b.eq_ignore_ascii_case(b"keep-alive") || b.eq_ignore_ascii_case(b"close"))
    };
    if present[..count].iter().any(|n| n.as_ref() == Some(&header::CONNECTION))
        && headers.get_all(header::CONNECTION).iter().any(names_headers)
    {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `close` and `keep-alive` are options, not header names (a `Keep-Alive` header
            // is hop-by-hop anyway).
            .filter(|n| !n.eq_ignore_ascii_case("close") && !n.eq_ignore_ascii_case("keep-alive") && !n.is_empty())
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for name in present.into_iter().flatten() {
        // `TE: trailers` is meaningful end to end (gRPC); anything else is hop-by-hop.
        if name == header::TE && headers.get(header::TE).is_none_or(|v| v.as_bytes() == b"trailers") {
            continue;
        }
        headers.remove(name);
    }
}

impl Gateway {
    /// Builds the handler state around `pool` (from [`UpstreamPool::start`], kept across
    /// reloads while `[upstream]` does not change). `tls`: the proxy listener serves TLS, so
    /// forwarded requests say `X-Forwarded-Proto: https`.
    pub fn new(
        judge: Judge,
        upstream: Upstream,
        pool: Arc<UpstreamPool>,
        server: &crate::config::ServerSection,
        tls: bool,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        let body_read_timeout = std::time::Duration::from_secs(server.body_read_timeout_seconds);
        let tunnel_limits = tunnel::TunnelLimits {
            lifetime: std::time::Duration::from_secs(server.tunnel_max_lifetime_seconds),
            idle: std::time::Duration::from_secs(server.tunnel_idle_timeout_seconds),
        };
        let upstream_host =
            HeaderValue::from_str(&upstream.authority).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let configured = judge
            .auth()
            .keys()
            .issuers
            .iter()
            .flat_map(|k| k.cfg.claim_headers.iter())
            .chain(judge.routes().routes().iter().flat_map(|r| r.cfg.claim_headers.iter()))
            .map(|c| c.name.as_str());
        let protected = meaning::ProtectedNames::new(configured);
        Gateway {
            scheme: if tls { "https" } else { "http" },
            access_log: server.access_log,
            access_log_subject: server.access_log_subject,
            request_ids: server.request_id,
            protected,
            judge,
            pool,
            upstream,
            upstream_host,
            body_read_timeout,
            tunnel_limits,
            metrics,
            upstream_warnings: jwtgate_base::log_limit::EverySecond::new(),
        }
    }

    /// The upstream pool, for the next generation on reload.
    pub fn pool(&self) -> &Arc<UpstreamPool> {
        &self.pool
    }

    /// The authenticator (shared with `validate` and the admin listener).
    pub fn auth(&self) -> &Arc<Authenticator> {
        self.judge.auth()
    }

    /// Handles one request end to end; every request, refusals included, is observed in
    /// `jwtgate_request_duration_seconds` (so its `_count` equals `jwtgate_requests_total`).
    ///
    /// It takes the swapped gateway, not one gateway, and loads it as the request starts: the
    /// request runs to its end on the gateway it started on, and the code building this future
    /// (run per request by hyper) stays small enough to be inlined there — loading in the
    /// caller made hyper copy the 3.7 KB request future twice more (about 400 instructions).
    #[allow(clippy::disallowed_methods)] // latency metrics are real time; a test clock must not bend them
    pub async fn handle(live: Swapped, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let this = live.load_full();
        let started = Instant::now();
        // What the opt-in request id and access log need, boxed: one pointer in the request
        // future when they are off (a few dozen bytes more there cost hyper's inlining).
        let extras = (this.request_ids || this.access_log).then(|| {
            Box::new(Extras {
                request_id: this.request_ids.then(|| request_id::ensure(req.headers_mut())),
                logged: this.access_log.then(|| {
                    let length: Option<u64> = req
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    (req.method().clone(), req.uri().path().to_string(), length)
                }),
            })
        });
        let (mut resp, served) = this.handle_inner(req, peer).await;
        let elapsed = started.elapsed();
        served.metrics.duration.observe(elapsed.as_secs_f64());
        if let Some(extras) = extras {
            if let Some(id) = &extras.request_id {
                resp.headers_mut().insert(&request_id::X_REQUEST_ID, id.clone());
            }
            if let Some((method, path, request_bytes)) = &extras.logged {
                let forwarded = matches!(served.outcome, Outcome::Allowed | Outcome::Anonymous);
                tracing::info!(
                    target: "jwtgate::access",
                    method = %method,
                    path = %path,
                    client = %peer.ip(),
                    request_id = extras.request_id.as_ref().and_then(|id| id.to_str().ok()),
                    route = %served.metrics.route,
                    status = resp.status().as_u16(),
                    outcome = served.outcome.label(),
                    phase = served.phase.map(Phase::label),
                    reason = served.reason,
                    upstream_status = forwarded.then(|| resp.status().as_u16()),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    request_bytes,
                    response_bytes = http_body::Body::size_hint(resp.body()).exact(),
                    sub = served.sub.as_ref().and_then(|s| s.to_str().ok()),
                    "access"
                );
            }
        }
        resp
    }

    #[allow(clippy::disallowed_methods)] // latency metrics are real time; a test clock must not bend them
    async fn handle_inner(&self, mut req: Request<Incoming>, peer: SocketAddr) -> (Response<ProxyBody>, Served<'_>) {
        // The proxy's adapter: the request's facts, and its shape (HTTP or gRPC), decided once.
        let scan = meaning::HeaderScan::of(req.headers(), &self.protected);
        let shape = Shape::of(req.headers());
        let websocket = tunnel::is_websocket_upgrade(&req);
        let meaning = meaning::check(&req, websocket).err();
        let origin = || format!("{}://{}", self.scheme, meaning::host(&req));
        let facts = RequestFacts {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
            header_bytes: scan.bytes,
            framing: meaning.map(|e| match e {
                meaning::MeaningError::UnsupportedTransferCoding => FramingFault::NotImplemented(e.description()),
                _ => FramingFault::Invalid(e.description()),
            }),
            origin: Origin::Request(&origin),
            client: Some(peer.ip()),
        };
        let allowed = match self.judge.judge(&facts).await {
            Ok(a) => a,
            Err(r) => {
                let framing_in_doubt = meaning.is_some() && r.refusal.outcome != Outcome::HeadersTooLarge;
                let (mut resp, served) = refused(r, shape);
                if framing_in_doubt && req.version() < Version::HTTP_2 {
                    // The framing is in doubt: whatever follows on this connection is not read
                    // as another request (nginx closes here too).
                    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return (resp, served);
            }
        };
        let Allowed { route, verified, claim_headers, cors, preflight } = allowed;
        if preflight {
            route.metrics.count(Outcome::Preflight);
            return (
                preflight_answer(cors),
                Served { metrics: &route.metrics, outcome: Outcome::Preflight, phase: None, reason: "", sub: None },
            );
        }
        let outcome = if verified.is_some() { Outcome::Allowed } else { Outcome::Anonymous };
        let sub = if self.access_log_subject { verified.as_ref().and_then(|v| v.sub_header().cloned()) } else { None };
        scan.scrub(req.headers_mut(), &self.protected, route.cfg.method_override);
        for (name, value) in claim_headers {
            req.headers_mut().insert(name, value);
        }
        if websocket {
            // Boxed: waiting for an upstream connection's slot (a timer and a semaphore wait)
            // would otherwise sit in, and be copied with, every request's future.
            let (resp, outcome, phase, reason) =
                Box::pin(self.upgrade(req, peer, verified, route, outcome, shape)).await;
            return (resp, Served { metrics: &route.metrics, outcome, phase, reason, sub });
        }
        self.upstream_request(&mut req, peer, verified);
        let (parts, body) = req.into_parts();
        let (body, progress) = ClientBody::new(body, self.body_read_timeout);
        let mut req = Request::from_parts(parts, body);
        if progress.is_some() && !req.headers().contains_key(header::CONTENT_LENGTH) {
            // A body of unknown length (chunked, or HTTP/2 without content-length) goes on
            // chunked; without the header hyper would send a GET or HEAD body as empty.
            req.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        let asked = Instant::now();
        let sent = self.exchange(req, progress.as_deref()).await;
        let client_fault = progress.as_deref().and_then(|p| p.failure());
        let (mut resp, outcome, phase, reason) =
            self.answer(sent, client_fault, route, outcome, Answered { asked, shape });
        if let Some(cors) = &cors {
            crate::cors::apply(cors, resp.headers_mut());
        }
        (resp, Served { metrics: &route.metrics, outcome, phase, reason, sub })
    }

    /// A judged and allowed WebSocket upgrade: sent upstream on a connection of its own; a
    /// `101` joins the two connections (see `tunnel`), anything else is passed back.
    #[allow(clippy::disallowed_methods)] // latency metrics are real time; a test clock must not bend them
    async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        verified: Option<Verified>,
        route: &crate::routes::Route,
        outcome: Outcome,
        shape: Shape,
    ) -> (Response<ProxyBody>, Outcome, Option<Phase>, &'static str) {
        let client_upgrade = hyper::upgrade::on(&mut req);
        self.upstream_request(&mut req, peer, verified);
        tunnel::restore_upgrade_headers(req.headers_mut());
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, ClientBody::new(body, self.body_read_timeout).0);
        let asked = Instant::now();
        let clock = &**self.auth().clock();
        let sent = jwtgate_base::clock::timeout(clock, self.upstream.timeout, self.pool.send_upgrade(req))
            .await
            .ok_or(Elapsed);
        let sent = match sent {
            Ok(Ok((mut resp, upstream_slot))) if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                let upstream_upgrade = hyper::upgrade::on(&mut resp);
                tunnel::spawn_tunnel(
                    client_upgrade,
                    upstream_upgrade,
                    self.tunnel_limits,
                    upstream_slot,
                    self.metrics.clone(),
                );
                self.metrics.upgrades.with_label_values(&["tunnelled"]).inc();
                self.metrics.count_upstream_response(resp.status());
                route.metrics.count(outcome);
                route.metrics.observe_upstream(asked);
                return (tunnel::switching_protocols(&resp, Either::Right(Full::new(Bytes::new()))), outcome, None, "");
            }
            Ok(Ok((resp, _))) => {
                self.metrics.upgrades.with_label_values(&["declined"]).inc();
                Ok(Ok(resp.map(UpstreamBody::unpooled)))
            }
            Ok(Err(e)) => {
                self.metrics.upgrades.with_label_values(&["failed"]).inc();
                Ok(Err(e))
            }
            Err(_) => {
                self.metrics.upgrades.with_label_values(&["failed"]).inc();
                Err(Elapsed)
            }
        };
        self.answer(sent, None, route, outcome, Answered { asked, shape })
    }

    /// The client's answer for an exchange with the upstream: its response, or the refusal for
    /// a body the client broke, or 502/503/504 — the upstream phase's refusals, in the request's
    /// shape.
    fn answer(
        &self,
        sent: Exchanged,
        client_fault: Option<BodyFailure>,
        route: &crate::routes::Route,
        outcome: Outcome,
        Answered { asked, shape }: Answered,
    ) -> (Response<ProxyBody>, Outcome, Option<Phase>, &'static str) {
        let render = |r: Refusal| r.render(shape).map(Either::Right);
        let upstream = Some(Phase::Upstream);
        match (self.upstream_outcome(sent), client_fault) {
            (Ok(resp), _) => {
                route.metrics.count(outcome);
                route.metrics.observe_upstream(asked);
                self.metrics.count_upstream_response(resp.status());
                (resp.map(Either::Left), outcome, None, "")
            }
            (Err(_), Some(fault)) => {
                let (status, outcome, code, desc) = match fault {
                    BodyFailure::Malformed => (
                        http::StatusCode::BAD_REQUEST,
                        Outcome::InvalidRequest,
                        "invalid_request",
                        "the request body is malformed",
                    ),
                    BodyFailure::Stalled => (
                        http::StatusCode::REQUEST_TIMEOUT,
                        Outcome::RequestTimeout,
                        "request_timeout",
                        "the request body stopped arriving",
                    ),
                };
                route.metrics.count(outcome);
                crate::decision::refusal_line!(
                    self.access_log,
                    route = %route.cfg.name,
                    phase = Phase::Upstream.label(),
                    status = status.as_u16(),
                    "request refused: {desc}; the upstream request was aborted"
                );
                (render(Refusal::plain(status, code, desc, outcome, Phase::Upstream)), outcome, upstream, code)
            }
            (Err(failure), None) => {
                route.metrics.count(failure);
                let (status, code, desc) = match failure {
                    Outcome::UpstreamTimeout => {
                        (http::StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", "the upstream did not answer in time")
                    }
                    Outcome::UpstreamBusy => (
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "every upstream connection is in use; retry later",
                    ),
                    _ => (http::StatusCode::BAD_GATEWAY, "bad_gateway", "the upstream could not be reached"),
                };
                (render(Refusal::plain(status, code, desc, failure, Phase::Upstream)), failure, upstream, code)
            }
        }
    }

    /// Sends the request and waits for the response head. The upstream timeout counts from when
    /// the request has been sent: while a body is still arriving, only a body that makes no
    /// progress for that long (the upstream stopped reading) ends the wait early; a client that
    /// stops sending is the body-read timeout's business (see `client_body`).
    async fn exchange(&self, req: Request<ClientBody>, progress: Option<&BodyProgress>) -> Exchanged {
        let send = if self.pool.is_h2() {
            // Boxed: the HTTP/1.1 path's future stays as small as it was.
            futures_util::future::Either::Left(Box::pin(self.pool.send_h2(req)))
        } else {
            futures_util::future::Either::Right(self.pool.send(req))
        };
        tokio::pin!(send);
        // On the gateway's clock; the system clock's sleep is tokio's timer, inline: no allocation.
        let clock = &**self.auth().clock();
        if let Some(p) = progress {
            loop {
                let checked = p.progress_count();
                tokio::select! {
                    r = &mut send => return Ok(r),
                    _ = p.finished() => break,
                    _ = clock.sleep(self.upstream.timeout) => {
                        if p.progress_count() == checked {
                            return Err(Elapsed);
                        }
                    }
                }
            }
        }
        jwtgate_base::clock::timeout(clock, self.upstream.timeout, send).await.ok_or(Elapsed)
    }

    /// The request as the upstream gets it: hop-by-hop headers gone, forwarding and claim
    /// headers set, origin-form URI, HTTP/1.1.
    fn upstream_request(&self, req: &mut Request<Incoming>, peer: SocketAddr, verified: Option<Verified>) {
        // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1 and sees it as Host.
        let authority_host = match req.headers().contains_key(header::HOST) {
            true => None,
            false => req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        *req.version_mut() = Version::HTTP_11;
        // Origin-form (`/path?query`) whatever form the client used; HTTP/2 and absolute-form
        // requests carry a scheme and authority. The usual origin-form request is left as is.
        let uri = req.uri();
        if uri.scheme().is_some() || uri.authority().is_some() || uri.path_and_query().is_none() {
            let pq = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(pq);
        }
        let h = req.headers_mut();
        strip_hop_by_hop(h);
        if let Some(host) = authority_host {
            h.insert(header::HOST, host);
        }
        match h.get(header::HOST) {
            Some(host) => {
                let host = host.clone();
                h.insert(&X_FORWARDED_HOST, host);
            }
            // HTTP/1.1 requires a Host; an HTTP/1.0 client may have sent none.
            None => {
                h.insert(header::HOST, self.upstream_host.clone());
            }
        }
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", peer.ip())).ok(),
            None => ip_header(peer.ip()),
        };
        match xff {
            Some(v) => h.insert(&X_FORWARDED_FOR, v),
            None => h.remove(&X_FORWARDED_FOR),
        };
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(self.scheme));
        // Client copies of the claim headers are never trusted, on any route: `insert`
        // replaces them, and on anonymous routes they are removed.
        match verified {
            Some(v) => {
                h.insert(&X_JWT_PAYLOAD, v.payload_header);
                match v.verdict.sub_header.clone() {
                    Some(sub) => h.insert(&X_JWT_SUB, sub),
                    None => h.remove(&X_JWT_SUB),
                };
            }
            None => {
                h.remove(&X_JWT_PAYLOAD);
                h.remove(&X_JWT_SUB);
            }
        }
    }

    /// Maps the exchange's result to the response head or the failure to count and answer.
    fn upstream_outcome(&self, sent: Exchanged) -> Result<Response<UpstreamBody>, Outcome> {
        let (kind, outcome, status, what) = match sent {
            Ok(Ok(mut resp)) if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS => {
                strip_hop_by_hop(resp.headers_mut());
                return Ok(resp);
            }
            Err(_) => (
                "timeout",
                Outcome::UpstreamTimeout,
                504,
                format!("upstream timed out (timeout_seconds = {})", self.upstream.timeout.as_secs()),
            ),
            Ok(Err(UpstreamError::Saturated)) => {
                ("saturated", Outcome::UpstreamBusy, 503, UpstreamError::Saturated.to_string())
            }
            Ok(Err(e)) => {
                let kind = if matches!(e, UpstreamError::Connect(_)) { "connect" } else { "other" };
                (kind, Outcome::UpstreamError, 502, format!("upstream request failed: {e}"))
            }
            // Only an upgrade jwtgate asked for may switch protocols (that path never comes
            // here): a bare 101 would leave the client speaking to nothing it knows.
            Ok(Ok(_)) => (
                "unexpected_101",
                Outcome::UpstreamError,
                502,
                "the upstream switched protocols for a request that did not ask to".to_string(),
            ),
        };
        self.metrics.upstream_errors.with_label_values(&[kind]).inc();
        if let Some(held_back) = self.upstream_warnings.admit() {
            tracing::warn!(status, kind, held_back, "{what}");
        }
        Err(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_matches_display() {
        let samples: Vec<std::net::IpAddr> = vec![
            "0.0.0.0".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
            "10.9.99.100".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "1.20.203.4".parse().unwrap(),
            "::1".parse().unwrap(),
            "2001:db8::ff00:42:8329".parse().unwrap(),
        ];
        for ip in samples {
            assert_eq!(ip_header(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = std::net::IpAddr::from([octet, 255 - octet, octet / 3, 7]);
            assert_eq!(ip_header(ip).unwrap().to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn hop_by_hop_headers_and_connection_tokens_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret, close"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "te"]);

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic eDp5"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }
}
