//! The admin listener: `/healthz` (the process is up), `/readyz` (200 only once every issuer
//! has a usable key set), `/metrics` (Prometheus text) and `/status` (issuers, keys, the
//! key-manager sync, the configuration's hash and reload history), and `POST /reload` (re-read
//! the configuration file: 200 with what changed, or 400 with the problems and nothing
//! changed). It never shows a token or a secret. It listens on loopback by default: whoever
//! reaches it can make jwtgate re-read its file, nothing more. A browser is not such a caller:
//! a request with an `Origin` other than the listener's own is 403 (a page on another site
//! posting to `/reload`), and one whose `Host` is not an IP literal, `localhost` or a name in
//! `server.admin_hosts` is 421 (DNS rebinding). `health_listen`, when set, serves the probe and
//! scrape paths only, for callers outside the pod.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::km_sync::status::SyncStatus;
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// Which paths a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminScope {
    /// Everything: `admin_listen`.
    Full,
    /// `/healthz`, `/readyz`, `/metrics`: `health_listen`.
    Health,
}

/// The host part of a `Host` value (`name:port`, `[v6]:port`), lower case, no trailing dot.
fn host_of(value: &str) -> String {
    let host = match value.strip_prefix('[') {
        Some(rest) => return rest.split_once(']').map(|(h, _)| format!("[{h}]")).unwrap_or_default(),
        None => match value.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => value,
        },
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// True when `host` may name this listener: an IP literal, `localhost`, or a configured name.
fn host_allowed(host: &str, names: &[String]) -> bool {
    host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        || host == "localhost"
        || names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(host))
}

/// The refusal for a request a browser was made to send: another site's page (403), or a
/// name that resolves here only through DNS rebinding (421).
fn browser_refusal<B>(req: &Request<B>, names: &[String]) -> Option<Response<Full<Bytes>>> {
    let host = crate::proxy::meaning::host(req);
    if !host.is_empty() && !host_allowed(&host_of(host), names) {
        return Some(json_response(
            StatusCode::MISDIRECTED_REQUEST,
            json!({"error": "misdirected_request", "error_description": "the admin listener does not answer to this Host; add it to server.admin_hosts"}),
        ));
    }
    let own_origin = |origin: &[u8]| {
        let own = format!("http://{host}");
        !host.is_empty() && origin.eq_ignore_ascii_case(own.as_bytes())
    };
    let cross_site = req.headers().get(header::ORIGIN).is_some_and(|o| !own_origin(o.as_bytes()))
        || req.headers().get("sec-fetch-site").is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"));
    cross_site.then(|| {
        json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "forbidden", "error_description": "cross-origin requests to the admin listener are refused"}),
        )
    })
}

/// What the admin listener reads.
pub struct AdminState {
    /// The current generation (key stores, configuration) and the reload entry point.
    pub reloader: Arc<Reloader>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Key-manager sync status.
    pub km_sync: Arc<SyncStatus>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
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
        let generation = self.reloader.current();
        let keys = generation.keys.clone();
        let introspector = generation.gateway.auth().introspector();
        let list: Vec<_> = keys
            .issuers
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let loaded = k.loaded();
                let mut issuer = json!({
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
                });
                if let Some(x) = introspector.filter(|x| x.issuer().position() == i) {
                    issuer["introspection"] = x.status_json();
                }
                issuer
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

    /// Answers one admin request on a listener serving `scope`.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, scope: AdminScope) -> Response<Full<Bytes>> {
        let generation = self.reloader.current();
        if let Some(refused) = browser_refusal(&req, &generation.config.server.admin_hosts) {
            return refused;
        }
        drop(generation);
        let path = req.uri().path();
        if scope == AdminScope::Health && !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
        }
        if req.method() == Method::POST && req.uri().path() == "/reload" {
            return match self.reloader.reload().await {
                Ok(r) => json_response(
                    StatusCode::OK,
                    json!({"status": "reloaded", "sha256": r.sha256, "restart_needed": r.restart_needed}),
                ),
                Err(refused) => json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_config", "problems": refused.problems(), "status": "unchanged"}),
                ),
            };
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "method_not_allowed"}));
        }
        match req.uri().path() {
            "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => {
                if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"ready": false, "stopping": true, "issuers": self.issuers_json()}),
                    );
                }
                let keys = self.reloader.current().keys.clone();
                // Two issuers that discovered the same `iss` cannot both judge its tokens (`validate`
                // refuses them too): not ready, so a rollout with that mistake never takes traffic.
                let conflict = keys.duplicate_issuer();
                let ready = keys.all_usable() && conflict.is_none();
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                let mut body = json!({"ready": ready, "issuers": self.issuers_json()});
                if let Some(problem) = conflict {
                    tracing::error!(problem = %problem, "not ready: two issuers judge the same iss");
                    body["problem"] = json!(problem);
                }
                json_response(status, body)
            }
            "/metrics" => {
                for k in &self.reloader.current().keys.issuers {
                    let left = match k.loaded() {
                        Some(l) => k.cfg.max_stale.as_secs_f64() - k.age(&l).as_secs_f64(),
                        None => 0.0,
                    };
                    self.metrics.jwks_until_stale.with_label_values(&[k.name()]).set(left);
                }
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
                    "shared_state": self.reloader.current().gateway.auth().shared_state().map(|s| s.status_json()),
                }),
            ),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }
}

/// Admin connections drain quickly: nothing long-running is served here.
pub const ADMIN_DRAIN: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let names = vec!["jwtgate-admin".to_string()];
        for ok in ["127.0.0.1:9901", "10.0.0.7", "[::1]:9901", "localhost:9901", "LOCALHOST.", "jwtgate-admin:9901"] {
            assert!(host_allowed(&host_of(ok), &names), "{ok}");
        }
        for bad in
            ["evil.example:9901", "127.0.0.1.evil.example", "localhost.evil.example", "[::1", "jwtgate-admin.evil"]
        {
            assert!(!host_allowed(&host_of(bad), &names), "{bad}");
        }
    }
}
