//! The small JSON error answers and RFC 6750 challenges, exactly as the contract spells them.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use super::ProxyBody;
use crate::auth::AuthError;
use crate::routes::Route;

/// `{"error": code, "error_description": description}` with `status`.
pub fn error_response(status: StatusCode, code: &str, description: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "error": code, "error_description": description }).to_string();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The refusal for `err` on `route`, with its challenge. With `dpop_algs` (the request used
/// the DPoP scheme, or the route requires it) the challenge is a `DPoP` one naming the
/// accepted proof algorithms (RFC 9449 §7.1); otherwise `Bearer` (RFC 6750 §3).
pub fn reject(err: AuthError, route: &Route, dpop_algs: Option<&str>) -> Response<ProxyBody> {
    let mut resp = error_response(err.status(), err.code(), err.description());
    if err == AuthError::Unavailable {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    }
    let challenge = match dpop_algs {
        None => match err {
            AuthError::MissingToken => HeaderValue::from_static("Bearer realm=\"jwtgate\""),
            AuthError::InvalidRequest(_) => HeaderValue::from_static("Bearer error=\"invalid_request\""),
            AuthError::InsufficientScope => route.scope_challenge.clone(),
            // Descriptions are fixed ASCII sentences without quotes.
            other => {
                let v = format!("Bearer error=\"{}\", error_description=\"{}\"", other.code(), other.description());
                HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
            }
        },
        Some(algs) => {
            let v = match err {
                AuthError::MissingToken => format!("DPoP algs=\"{algs}\""),
                AuthError::InsufficientScope => {
                    format!(
                        "DPoP error=\"insufficient_scope\", scope=\"{}\", algs=\"{algs}\"",
                        route.cfg.scopes.join(" ")
                    )
                }
                other => format!(
                    "DPoP error=\"{}\", error_description=\"{}\", algs=\"{algs}\"",
                    other.code(),
                    other.description()
                ),
            };
            HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("DPoP error=\"invalid_token\""))
        }
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}
