//! Every way jwtgate says no, as one value — status, error code, description, challenge and the
//! metric outcome — rendered into a response in exactly one place, so the proxy, the decision
//! listener and `validate` cannot drift apart. Bodies are small JSON documents
//! (`{"error", "error_description"}`), challenges follow RFC 6750 §3 (`Bearer`) or RFC 9449 §7.1
//! (`DPoP`, with the accepted `algs`). Descriptions are fixed ASCII sentences without quotes:
//! nothing a client sent ever reaches a header.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::auth::AuthError;
use crate::metrics::Outcome;
use crate::phase::Phase;
use crate::routes::Route;

static GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// The gRPC status code for a refusal's HTTP status: gRPC's own HTTP mapping for 401, 403,
/// 404, 429, 502, 503 and 504; the closest code for the refusals it does not list.
fn grpc_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "3",              // INVALID_ARGUMENT
        401 => "16",             // UNAUTHENTICATED
        403 => "7",              // PERMISSION_DENIED
        404 | 405 | 501 => "12", // UNIMPLEMENTED
        408 | 504 => "4",        // DEADLINE_EXCEEDED
        413 | 431 => "8",        // RESOURCE_EXHAUSTED
        429 | 502 | 503 => "14", // UNAVAILABLE
        _ => "2",                // UNKNOWN
    }
}

/// How jwtgate's own answers to a request are shaped: decided once per request, from its
/// `content-type`, and used for every synthetic answer to it (refusals, upstream failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON body.
    Http,
    /// gRPC's Trailers-Only answer.
    Grpc,
}

impl Shape {
    /// The shape a request with these headers reads.
    pub fn of(headers: &http::HeaderMap) -> Shape {
        if is_grpc(headers) {
            Shape::Grpc
        } else {
            Shape::Http
        }
    }
}

/// True for a gRPC request (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// The parameters of an RFC 9470 challenge: the error, and what the route asks for
/// (`acr_values` space-separated, `max_age` in seconds).
fn step_up_params(route: &Route) -> String {
    let err = AuthError::InsufficientUserAuthentication;
    let mut v = format!("error=\"{}\", error_description=\"{}\"", err.code(), err.description());
    if let Some(s) = &route.cfg.step_up {
        if !s.acr_values.is_empty() {
            v.push_str(&format!(", acr_values=\"{}\"", s.acr_values.join(" ")));
        }
        if let Some(age) = s.max_age_seconds {
            v.push_str(&format!(", max_age={age}"));
        }
    }
    v
}

/// A refusal, ready to be answered and counted.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `error` code of the body (and of the challenge, where it has one).
    pub code: &'static str,
    /// The `error_description`.
    pub description: &'static str,
    /// `WWW-Authenticate`, for refusals about credentials.
    pub challenge: Option<HeaderValue>,
    /// The `outcome` label it counts under.
    pub outcome: Outcome,
    /// The pipeline phase that refused (logged as `phase`).
    pub phase: Phase,
    /// The authentication failure behind it, when it is one (`validate` explains it).
    pub auth_error: Option<AuthError>,
    /// More headers: a 429's `Retry-After` and `RateLimit` fields; CORS headers on a route with
    /// `[routes.cors]`, so a page can read why it was refused (boxed: refusals travel in every
    /// request's future, and these are rare).
    pub extra_headers: Option<Box<crate::cors::CorsHeaders>>,
}

impl Refusal {
    /// 431: the request's headers (names, values and separators, counted by
    /// [`crate::proxy::meaning::header_bytes`]) exceed `max_header_bytes` — the same budget and
    /// the same answer on the proxy and the decision listener.
    pub fn headers_too_large() -> Refusal {
        Refusal::plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
            "the request headers exceed the configured maximum",
            Outcome::HeadersTooLarge,
            Phase::Framing,
        )
    }

    /// A refusal without a challenge (400, 404, 405, 408, 429, 431, 501, 502, 503, 504) by `phase`.
    pub fn plain(
        status: StatusCode,
        code: &'static str,
        description: &'static str,
        outcome: Outcome,
        phase: Phase,
    ) -> Refusal {
        Refusal { status, code, description, challenge: None, outcome, phase, auth_error: None, extra_headers: None }
    }

    /// The refusal for an authentication failure on `route`. With `dpop_algs` (the request used
    /// the DPoP scheme, or the route requires it) the challenge is a `DPoP` one naming the
    /// accepted proof algorithms; otherwise `Bearer`.
    pub fn auth(err: AuthError, route: &Route, dpop_algs: Option<&str>) -> Refusal {
        let outcome = match err {
            AuthError::MissingToken => Outcome::MissingToken,
            AuthError::InvalidRequest(_) => Outcome::InvalidRequest,
            AuthError::InvalidToken(_) | AuthError::InvalidDpopProof(_) => Outcome::InvalidToken,
            AuthError::InsufficientScope => Outcome::InsufficientScope,
            AuthError::InsufficientClaims => Outcome::InsufficientClaims,
            AuthError::InsufficientUserAuthentication => Outcome::InsufficientUserAuthentication,
            AuthError::Unavailable
            | AuthError::IntrospectionUnavailable
            | AuthError::SharedStateUnavailable
            | AuthError::ReplayCacheFull => Outcome::Unavailable,
        };
        let challenge = match (err, dpop_algs) {
            // An IdP outage is not a credentials problem: `Retry-After`, no challenge.
            (
                AuthError::Unavailable
                | AuthError::IntrospectionUnavailable
                | AuthError::SharedStateUnavailable
                | AuthError::ReplayCacheFull,
                _,
            ) => None,
            (AuthError::MissingToken, None) => Some(HeaderValue::from_static("Bearer realm=\"jwtgate\"")),
            (AuthError::InvalidRequest(_), None) => Some(HeaderValue::from_static("Bearer error=\"invalid_request\"")),
            (AuthError::InsufficientScope, None) => Some(route.scope_challenge.clone()),
            (AuthError::InsufficientUserAuthentication, None) => {
                let v = format!("Bearer {}", step_up_params(route));
                Some(
                    HeaderValue::from_str(&v)
                        .unwrap_or(HeaderValue::from_static("Bearer error=\"insufficient_user_authentication\"")),
                )
            }
            (other, None) => {
                let v = format!("Bearer error=\"{}\", error_description=\"{}\"", other.code(), other.description());
                Some(HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\"")))
            }
            (other, Some(algs)) => {
                let v = match other {
                    AuthError::MissingToken => format!("DPoP algs=\"{algs}\""),
                    AuthError::InsufficientUserAuthentication => {
                        format!("DPoP {}, algs=\"{algs}\"", step_up_params(route))
                    }
                    AuthError::InsufficientScope => format!(
                        "DPoP error=\"insufficient_scope\", scope=\"{}\", algs=\"{algs}\"",
                        route.cfg.scopes.join(" ")
                    ),
                    other => format!(
                        "DPoP error=\"{}\", error_description=\"{}\", algs=\"{algs}\"",
                        other.code(),
                        other.description()
                    ),
                };
                Some(HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("DPoP error=\"invalid_token\"")))
            }
        };
        Refusal {
            status: err.status(),
            code: err.code(),
            description: err.description(),
            challenge,
            outcome,
            phase: err.phase(),
            auth_error: Some(err),
            extra_headers: None,
        }
    }

    /// The answer in the shape the request reads — the one renderer every synthetic answer
    /// goes through.
    pub fn render(&self, shape: Shape) -> Response<Full<Bytes>> {
        match shape {
            Shape::Http => self.response(),
            Shape::Grpc => self.grpc_response(),
        }
    }

    /// The response: the JSON body, `no-store`, the challenge, and `Retry-After` on a 503.
    fn response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.code, "error_description": self.description }).to_string();
        self.with_body(Bytes::from(body), HeaderValue::from_static("application/json"))
    }

    /// The response to a gRPC request (`content-type: application/grpc…`): a Trailers-Only
    /// answer — the same HTTP status (gRPC's HTTP-to-status mapping turns 401 into
    /// UNAUTHENTICATED and 403 into PERMISSION_DENIED for clients that look only at it),
    /// `grpc-status` and `grpc-message` for those that read them, no body (a JSON body would
    /// be read as a malformed gRPC frame).
    fn grpc_response(&self) -> Response<Full<Bytes>> {
        let mut resp = self.with_body(Bytes::new(), HeaderValue::from_static("application/grpc"));
        let h = resp.headers_mut();
        h.insert(&GRPC_STATUS, HeaderValue::from_static(grpc_code(self.status)));
        // Descriptions are fixed ASCII sentences; anything else is percent-encoded as gRPC asks.
        let mut message = String::with_capacity(self.description.len());
        for b in self.description.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                message.push(b as char);
            } else {
                message.push_str(&format!("%{b:02X}"));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&message) {
            h.insert(&GRPC_MESSAGE, v);
        }
        resp
    }

    fn with_body(&self, body: Bytes, content_type: HeaderValue) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = &self.challenge {
            h.insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let Some(extra) = &self.extra_headers {
            crate::cors::apply(extra, h);
        }
        resp
    }
}
