//! The admin listener: `/healthz` (the process is up), `/readyz` (200 only once every issuer
//! has a usable key set), `/metrics` (Prometheus text) and `/status` (issuers, keys, the
//! key-manager sync, the configuration's hash and reload history), and `POST /reload` (re-read
//! the configuration file: 200 with what changed, or 400 with the problems and nothing
//! changed). It never shows a token or a secret. It listens on loopback by default: whoever
//! reaches it can make jwtgate re-read its file, nothing more.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::km_sync::status::SyncStatus;
use crate::metrics::Metrics;
use crate::serve::Reloader;

/// What the admin listener reads.
pub struct AdminState {
    /// The current generation (key stores, configuration) and the reload entry point.
    pub reloader: Arc<Reloader>,
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
        let keys = self.reloader.current().keys.clone();
        let list: Vec<_> = keys
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
                    "seconds_since_refresh": loaded.as_ref().map(|l| k.age(l).as_secs()),
                    "max_stale_seconds": k.cfg.max_stale.as_secs(),
                    "last_error": k.last_error(),
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// The configuration's identity and reload history.
    fn config_json(&self) -> serde_json::Value {
        let generation = self.reloader.current();
        let history = self.reloader.history();
        let loaded_at = generation.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        json!({
            "file": generation.config.source.as_ref().map(|p| p.display().to_string()),
            "sha256": generation.config.sha256,
            "loaded_at": loaded_at,
            "reloads": {"ok": history.ok, "failed": history.failed},
            "last_reload_error": history.last_error,
            "restart_needed": history.restart_needed,
        })
    }

    /// Answers one admin request.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() == Method::POST && req.uri().path() == "/reload" {
            return match self.reloader.reload().await {
                Ok(r) => json_response(
                    StatusCode::OK,
                    json!({"status": "reloaded", "sha256": r.sha256, "restart_needed": r.restart_needed}),
                ),
                Err(problems) => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_config", "problems": problems, "status": "unchanged"}),
                ),
            };
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"}));
        }
        match req.uri().path() {
            "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => {
                let ready = self.reloader.current().keys.all_usable();
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
                    "config": self.config_json(),
                }),
            ),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }
}

/// Admin connections drain quickly: nothing long-running is served here.
pub const ADMIN_DRAIN: Duration = Duration::from_secs(2);
