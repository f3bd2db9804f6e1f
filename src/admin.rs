//! The admin listener: `/healthz` (the process is up), `/readyz` (200 only once every issuer
//! has a usable key set), `/metrics` (Prometheus text) and `/status` (issuers, keys, the
//! key-manager sync). It is read-only and never shows a token or a secret.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::keys::KeyRegistry;
use crate::km_sync::status::SyncStatus;
use crate::metrics::Metrics;

/// What the admin listener reads.
pub struct AdminState {
    /// Key stores.
    pub keys: Arc<KeyRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Key-manager sync status.
    pub km_sync: Arc<SyncStatus>,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl AdminState {
    /// Per-issuer key status.
    pub fn issuers_json(&self) -> serde_json::Value {
        let list: Vec<_> = self
            .keys
            .issuers
            .iter()
            .map(|k| {
                let loaded = k.loaded();
                json!({
                    "name": k.name(),
                    "discovery_url": k.discovery_url().as_str(),
                    "issuer": loaded.as_ref().map(|l| l.discovery.issuer.clone()),
                    "jwks_uri": loaded.as_ref().map(|l| l.discovery.jwks_uri.to_string()),
                    "usable": k.is_usable(),
                    "keys": loaded.as_ref().map_or(0, |l| l.keys.len()),
                    "kids": loaded.as_ref().map(|l| l.keys.keys().iter().filter_map(|x| x.kid.as_deref().map(str::to_string)).collect::<Vec<_>>()),
                    "generation": loaded.as_ref().map(|l| l.generation),
                    "seconds_since_refresh": loaded.as_ref().map(|l| l.confirmed_at.elapsed().as_secs()),
                    "max_stale_seconds": k.cfg.max_stale.as_secs(),
                    "last_error": k.last_error(),
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Answers one admin request.
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"}));
        }
        match req.uri().path() {
            "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => {
                let ready = self.keys.all_usable();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                json_response(status, json!({"ready": ready, "issuers": self.issuers_json()}))
            }
            "/metrics" => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                r
            }
            "/status" => json_response(
                StatusCode::OK,
                json!({
                    "issuers": self.issuers_json(),
                    "key_manager_sync": self.km_sync.snapshot(),
                }),
            ),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }
}

/// Admin connections drain quickly: nothing long-running is served here.
pub const ADMIN_DRAIN: Duration = Duration::from_secs(2);
