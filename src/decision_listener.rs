//! The decision listener: answers auth subrequests for the front proxies users already run
//! (nginx `auth_request`, ingress-nginx `auth-url`, Traefik ForwardAuth, Caddy `forward_auth`,
//! Envoy `ext_authz`). Each request is judged exactly as the proxy would judge the *original*
//! request — same routes, same rules, the one [`Judge`] — and is never forwarded anywhere. The
//! original method and URI come only from the headers the configured `front_proxy` sets
//! (`nginx`: `X-Original-Method` + `X-Original-URI`; `ingress-nginx`: `X-Original-URL` +
//! `X-Original-Method`; `traefik`/`caddy`: `X-Forwarded-Method/Uri/Proto/Host`; `envoy`: the
//! decision request's own method and path). Traefik and Caddy copy every client header into the
//! subrequest, so a header of another convention is the client's: `auto` accepts exactly one
//! convention and refuses (400) a request carrying two. Allowed: `200`, empty, with
//! `x-jwt-payload`, `x-jwt-sub` and the configured claim headers for the front proxy to copy
//! (none on an anonymous route). Refused: the proxy's status, challenge and JSON body.
//! It trusts the front proxy's headers: it must listen where only the front proxy can reach it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::config::FrontProxy;
use crate::decision::{Allowed, FramingFault, Judge, Origin, RequestFacts};
use crate::proxy::{X_JWT_PAYLOAD, X_JWT_SUB};
use crate::refusal::{Refusal, Shape};

static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client's address as the front proxy saw it: the last `X-Forwarded-For` entry (the one
/// the front proxy itself added; earlier ones are whatever the client sent).
fn forwarded_client(headers: &http::HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// The original request a subrequest asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    /// Its method.
    pub method: Method,
    /// Its path (no query).
    pub path: String,
    /// `scheme://authority` when the headers say it (for DPoP's `htu`).
    pub origin: Option<String>,
}

/// The one value of `name`, if any; two copies are ambiguous.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, &'static str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err("a header naming the original request appears more than once"),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| "a header naming the original request is not text"),
    }
}

const ORIGINAL_METHOD_MISSING: &str = "the front proxy's X-Original-Method header is missing";

/// The original method, which every header convention must name: nginx's subrequest is a
/// `GET` whatever the client sent, so falling back to the decision request's own method would
/// judge a `DELETE` as a `GET`.
fn required_method(text: Option<&str>, missing: &'static str) -> Result<Method, &'static str> {
    match text {
        None => Err(missing),
        Some(m) => Method::from_bytes(m.trim().as_bytes()).map_err(|_| "the original method is not a method"),
    }
}

/// `/path?query` → `/path`; anything but origin-form is refused.
fn origin_form_path(uri: &str) -> Result<String, &'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    if path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Err("the original URI must be a path (origin-form)")
    }
}

/// The three header conventions (Envoy's is the absence of all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convention {
    /// `X-Original-URI` + `X-Original-Method`.
    OriginalUri,
    /// `X-Original-URL` + `X-Original-Method`.
    OriginalUrl,
    /// `X-Forwarded-Uri` + `X-Forwarded-Method` (+ `-Proto`, `-Host`).
    Forwarded,
    /// The decision request's own method and path.
    Own,
}

/// The convention `front` reads; for `auto`, the one whose URI header is present, and a
/// refusal when two are: a client behind Traefik or Caddy can add `X-Original-URI`, and one
/// behind ingress-nginx can add it beside `X-Original-URL`.
fn convention(h: &HeaderMap, front: FrontProxy) -> Result<Convention, &'static str> {
    Ok(match front {
        FrontProxy::Nginx => Convention::OriginalUri,
        FrontProxy::IngressNginx => Convention::OriginalUrl,
        FrontProxy::Traefik | FrontProxy::Caddy => Convention::Forwarded,
        FrontProxy::Envoy => Convention::Own,
        FrontProxy::Auto => {
            let present = [
                (h.contains_key(&X_ORIGINAL_URI), Convention::OriginalUri),
                (h.contains_key(&X_ORIGINAL_URL), Convention::OriginalUrl),
                (h.contains_key(&X_FORWARDED_URI), Convention::Forwarded),
            ];
            let mut found = present.iter().filter(|(p, _)| *p).map(|(_, c)| *c);
            match (found.next(), found.next()) {
                (None, _) => Convention::Own,
                (Some(c), None) => c,
                (Some(_), Some(_)) => {
                    return Err("the request names the original request in two front-proxy conventions \
                                (X-Original-URI, X-Original-URL, X-Forwarded-Uri); set [decision] front_proxy")
                }
            }
        }
    })
}

/// Reads the original method and URI from the headers `front` sets, and from no other.
pub fn original_request<B>(req: &Request<B>, front: FrontProxy) -> Result<OriginalRequest, &'static str> {
    let h = req.headers();
    match convention(h, front)? {
        Convention::OriginalUri => {
            let uri = single(h, &X_ORIGINAL_URI)?.ok_or("the front proxy's X-Original-URI header is missing")?;
            Ok(OriginalRequest {
                method: required_method(single(h, &X_ORIGINAL_METHOD)?, ORIGINAL_METHOD_MISSING)?,
                path: origin_form_path(uri)?,
                origin: None,
            })
        }
        Convention::OriginalUrl => {
            let url = single(h, &X_ORIGINAL_URL)?.ok_or("the front proxy's X-Original-URL header is missing")?;
            let parsed = url::Url::parse(url).map_err(|_| "X-Original-URL is not an absolute URL")?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err("X-Original-URL is not an absolute http(s) URL");
            }
            // The raw path as sent (`Url` would resolve dot segments the judge must see).
            let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
            let raw_path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
            Ok(OriginalRequest {
                method: required_method(single(h, &X_ORIGINAL_METHOD)?, ORIGINAL_METHOD_MISSING)?,
                path: origin_form_path(raw_path)?,
                origin: Some(parsed.origin().ascii_serialization()),
            })
        }
        Convention::Forwarded => {
            let uri = single(h, &X_FORWARDED_URI)?.ok_or("the front proxy's X-Forwarded-Uri header is missing")?;
            let origin = match (single(h, &X_FORWARDED_PROTO)?, single(h, &X_FORWARDED_HOST)?) {
                (Some(proto), Some(host)) => Some(format!("{proto}://{host}")),
                _ => None,
            };
            Ok(OriginalRequest {
                method: required_method(
                    single(h, &X_FORWARDED_METHOD)?,
                    "the front proxy's X-Forwarded-Method header is missing",
                )?,
                path: origin_form_path(uri)?,
                origin,
            })
        }
        Convention::Own => {
            Ok(OriginalRequest { method: req.method().clone(), path: req.uri().path().to_string(), origin: None })
        }
    }
}

/// The decision listener's handler state.
pub struct DecisionService {
    judge: Judge,
    front_proxy: FrontProxy,
}

/// The answer when no decision service is configured in the running generation (cannot
/// happen while `[decision]` stays; adding or removing it needs a restart): there is no route
/// table to judge with.
pub fn unavailable() -> Response<Full<Bytes>> {
    Refusal::plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the decision listener is being reconfigured; restart jwtgate",
        crate::metrics::Outcome::Unavailable,
        crate::phase::Phase::Route,
    )
    .render(Shape::Http)
}

impl DecisionService {
    /// A service judging with `judge` (whose metrics say `listener="decision"`, and whose header
    /// budget and `htu` base are the proxy's).
    pub fn new(judge: Judge, front_proxy: FrontProxy) -> DecisionService {
        DecisionService { front_proxy, judge }
    }

    /// Answers one subrequest: the decision listener's adapter builds the original request's
    /// facts from the front proxy's headers, and the judge runs the phases on them.
    #[allow(clippy::disallowed_methods)] // latency metrics are real time; a test clock must not bend them
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let original = original_request(&req, self.front_proxy);
        let host = crate::proxy::meaning::host(&req);
        // Headers that do not name an original request are refused in the framing phase; the
        // subrequest's own method and path stand in for it until then (never judged).
        let (method, path, framing, named) = match &original {
            Ok(o) => (&o.method, o.path.as_str(), None, o.origin.as_deref()),
            Err(why) => (req.method(), req.uri().path(), Some(FramingFault::Invalid(why)), None),
        };
        let origin = || named.map_or_else(|| format!("http://{host}"), str::to_string);
        let facts = RequestFacts {
            method,
            path,
            headers: req.headers(),
            header_bytes: crate::proxy::meaning::header_bytes(req.headers()),
            framing,
            origin: Origin::Request(&origin),
            client: Some(forwarded_client(req.headers()).unwrap_or(peer.ip())),
        };
        // The front proxy reads an HTTP answer, whatever the original request was.
        let (resp, metrics) = match self.judge.judge(&facts).await {
            Ok(allowed) => {
                allowed.route.metrics.count(allowed.outcome());
                let metrics = &allowed.route.metrics;
                (allowed_response(allowed), metrics)
            }
            Err(r) => (r.refusal.render(Shape::Http), r.metrics),
        };
        metrics.duration.observe(started.elapsed().as_secs_f64());
        resp
    }
}

/// `200`, empty, with the headers the front proxy copies to the upstream.
fn allowed_response(a: Allowed<'_>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A route's CORS headers (a preflight's grant included). nginx can put them on the client's
    // answer (auth_request_set + add_header); Traefik and Caddy copy auth-answer headers only into
    // the request to the API.
    if let Some(cors) = &a.cors {
        crate::cors::apply(cors, h);
    }
    if let Some(v) = a.verified {
        h.insert(&X_JWT_PAYLOAD, v.payload_header);
        if let Some(sub) = v.verdict.sub_header.clone() {
            h.insert(&X_JWT_SUB, sub);
        }
        for (name, value) in a.claim_headers {
            h.insert(name, value);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn each_front_proxy_reads_its_own_headers_only() {
        use FrontProxy::*;
        let nginx = req("GET", "/_auth", &[("x-original-uri", "/orders/1?x=1"), ("x-original-method", "POST")]);
        for front in [Nginx, Auto] {
            assert_eq!(
                original_request(&nginx, front).unwrap(),
                OriginalRequest { method: Method::POST, path: "/orders/1".into(), origin: None }
            );
        }
        let ingress = req(
            "GET",
            "/auth",
            &[("x-original-url", "https://api.example.com/orders/../admin?q"), ("x-original-method", "DELETE")],
        );
        for front in [IngressNginx, Auto] {
            let o = original_request(&ingress, front).unwrap();
            assert_eq!(
                (o.method, o.path.as_str(), o.origin.as_deref()),
                (Method::DELETE, "/orders/../admin", Some("https://api.example.com"))
            );
        }
        let traefik = req(
            "GET",
            "/",
            &[
                ("x-forwarded-method", "PUT"),
                ("x-forwarded-uri", "/orders/2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com"),
            ],
        );
        for front in [Traefik, Caddy, Auto] {
            let o = original_request(&traefik, front).unwrap();
            assert_eq!(
                (o.method, o.path.as_str(), o.origin.as_deref()),
                (Method::PUT, "/orders/2", Some("https://api.example.com"))
            );
        }
        let envoy = req("PATCH", "/orders/3?y", &[("x-original-uri", "/public/x"), ("x-original-method", "GET")]);
        let o = original_request(&envoy, Envoy).unwrap();
        assert_eq!((o.method, o.path.as_str()), (Method::PATCH, "/orders/3"));
        assert_eq!(original_request(&req("PATCH", "/orders/3", &[]), Auto).unwrap().path, "/orders/3");
        // A named proxy reads nothing else: Traefik with a client's X-Original-URI.
        let spoofed = req(
            "GET",
            "/",
            &[("x-forwarded-method", "DELETE"), ("x-forwarded-uri", "/admin/x"), ("x-original-uri", "/public/x")],
        );
        assert_eq!(original_request(&spoofed, Traefik).unwrap().path, "/admin/x");
        // Auto refuses two conventions, whichever pair.
        assert!(original_request(&spoofed, Auto).is_err());
        let both = req(
            "GET",
            "/",
            &[("x-original-uri", "/a"), ("x-original-url", "http://h/b"), ("x-original-method", "GET")],
        );
        assert!(original_request(&both, Auto).is_err());
        assert_eq!(original_request(&both, IngressNginx).unwrap().path, "/b");
        // A named proxy's headers must be there, method included.
        assert!(original_request(&req("GET", "/x", &[]), Nginx).is_err());
        assert!(original_request(&req("GET", "/", &[("x-original-uri", "/a")]), Nginx).is_err());
        assert!(original_request(&req("GET", "/", &[("x-forwarded-uri", "/a")]), Caddy).is_err());
        assert!(original_request(
            &req("GET", "/", &[("x-original-uri", "http://x/a"), ("x-original-method", "GET")]),
            Auto
        )
        .is_err());
        let twice = Request::builder()
            .uri("/")
            .header("x-original-uri", "/a")
            .header("x-original-uri", "/b")
            .header("x-original-method", "GET")
            .body(())
            .unwrap();
        assert!(original_request(&twice, Nginx).is_err());
    }
}
