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

/// The refusal for `err` on `route`, with its challenge.
pub fn reject(err: AuthError, route: &Route) -> Response<ProxyBody> {
    let mut resp = error_response(err.status(), err.code(), err.description());
    let challenge = match err {
        AuthError::MissingToken => HeaderValue::from_static("Bearer realm=\"jwtgate\""),
        AuthError::InvalidRequest(_) => HeaderValue::from_static("Bearer error=\"invalid_request\""),
        AuthError::InvalidToken(t) => {
            // Descriptions are fixed ASCII sentences without quotes.
            let v = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", t.description());
            HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
        }
        AuthError::InsufficientScope => route.scope_challenge.clone(),
        AuthError::Unavailable => {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    resp
}
