//! A small client for the parts of WSO2 API Manager's Admin REST API v4 the sync needs:
//! client registration (DCR v0.17), the token endpoint, and `/key-managers` list, get, create
//! and update. Tokens are cached and renewed before they expire; a 401 from the Admin API
//! fetches a new token once and retries. Errors are classified: transient (5xx, timeouts,
//! connection errors) are retried by the caller with backoff, rejections (4xx) are reported
//! with APIM's `code`, `message` and `description`. No secret ever appears in an error.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::settings::{AdminAuth, Secrets, Settings};
use jwtgate_base::error_chain;

/// The scopes requested for the Admin API token (APIM accepts any one of them per operation).
pub const ADMIN_SCOPES: &str = "apim:admin apim:admin_operations apim:keymanagers_manage";
/// The client name registered with APIM (DCR is idempotent by name).
pub const CLIENT_NAME: &str = "jwtgate_km_sync";

/// Why an APIM call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApimError {
    /// Worth retrying: 5xx, timeout, connection error.
    #[error("{what}: {detail}")]
    Transient {
        /// The call.
        what: String,
        /// Status or transport error.
        detail: String,
        /// The HTTP status, if one came back.
        status: Option<u16>,
    },
    /// APIM refused the request (4xx): not retried until the next pass.
    #[error("{what}: HTTP {status}{}{}{}", .code.map(|c| format!(", code {c}")).unwrap_or_default(),
        if .message.is_empty() { String::new() } else { format!(": {}", .message) },
        if .description.is_empty() { String::new() } else { format!(" ({})", .description) })]
    Rejected {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// APIM's error code (e.g. 901402).
        code: Option<i64>,
        /// APIM's message.
        message: String,
        /// APIM's description.
        description: String,
    },
    /// A local problem: a secret cannot be read, an answer cannot be parsed.
    #[error("{0}")]
    Local(String),
}

impl ApimError {
    /// True for errors worth retrying with backoff.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApimError::Transient { .. })
    }

    /// The HTTP status, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApimError::Transient { status, .. } => *status,
            ApimError::Rejected { status, .. } => Some(*status),
            ApimError::Local(_) => None,
        }
    }
}

struct CachedToken {
    value: String,
    /// On the client's clock's monotonic time.
    renew_at: Duration,
}

/// The Admin API client; one per sync task (it caches the registration and the token).
pub struct ApimClient {
    http: reqwest::Client,
    settings: Settings,
    client_credentials: tokio::sync::Mutex<Option<(String, String)>>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    clock: Arc<dyn jwtgate_base::clock::Clock>,
}

/// What a create returned.
#[derive(Debug)]
pub enum Created {
    /// 201 with the new object.
    Created(Value),
    /// 409: someone else created it first.
    AlreadyExists,
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn rejected(what: &str, status: StatusCode, body: &[u8]) -> ApimError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    ApimError::Rejected {
        what: what.to_string(),
        status: status.as_u16(),
        code: v.get("code").and_then(Value::as_i64),
        message: text("message"),
        description: text("description"),
    }
}

impl ApimClient {
    /// Builds the HTTP client (custom CA, optional loopback-only insecure mode, timeouts); the
    /// Admin API token's lifetime is kept on `clock`.
    pub fn new(settings: Settings, clock: Arc<dyn jwtgate_base::clock::Clock>) -> Result<ApimClient, String> {
        jwtgate_tls::install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("key_manager_sync.ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("key_manager_sync.ca_file {}: not a PEM bundle: {e}", ca.display()))?;
            if certs.is_empty() {
                // Trusting nothing would fail every APIM call later, far from the cause.
                return Err(format!("key_manager_sync.ca_file {}: contains no PEM certificate", ca.display()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if settings.insecure_skip_verify {
            tracing::warn!(
                "key_manager_sync.insecure_skip_verify: APIM's TLS certificate is not verified (loopback only)"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| format!("cannot build the APIM HTTP client: {e}"))?;
        Ok(ApimClient {
            http,
            settings,
            client_credentials: tokio::sync::Mutex::new(None),
            token: tokio::sync::Mutex::new(None),
            clock,
        })
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<(StatusCode, bytes::Bytes), ApimError> {
        let resp = req.send().await.map_err(|e| {
            let detail = error_chain(&e);
            // An untrusted certificate will not fix itself: fail now, and say what to do.
            if detail.to_ascii_lowercase().contains("certificate") {
                return ApimError::Local(format!(
                    "{what}: APIM's TLS certificate is not trusted ({detail}); set key_manager_sync.ca_file to its CA bundle"
                ));
            }
            ApimError::Transient {
                what: what.to_string(),
                detail: if e.is_timeout() { "timed out".into() } else { detail },
                status: None,
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ApimError::Transient {
            what: what.to_string(),
            detail: format!("reading the answer: {}", error_chain(&e)),
            status: Some(status.as_u16()),
        })?;
        if status.is_server_error() {
            return Err(ApimError::Transient {
                what: what.to_string(),
                detail: format!("HTTP {}", status.as_u16()),
                status: Some(status.as_u16()),
            });
        }
        Ok((status, body))
    }

    /// Registers (or finds, by name) jwtgate's OAuth client in APIM.
    async fn registration(&self, secrets: &Secrets, fresh: bool) -> Result<(String, String), ApimError> {
        let mut guard = self.client_credentials.lock().await;
        if let (Some(c), false) = (guard.as_ref(), fresh) {
            return Ok(c.clone());
        }
        let body = json!({
            "callbackUrl": "www.example.com",
            "clientName": CLIENT_NAME,
            "owner": self.settings.username,
            "grantType": "client_credentials password refresh_token",
            "saasApp": true,
        });
        let req = self
            .http
            .post(self.settings.dcr_url.clone())
            .header(reqwest::header::AUTHORIZATION, basic(&self.settings.username, &secrets.admin_password))
            .json(&body);
        let what = "client registration";
        let (status, bytes) = self.send(what, req).await?;
        if !status.is_success() {
            return Err(rejected(what, status, &bytes));
        }
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|_| ApimError::Local(format!("{what}: the answer is not JSON")))?;
        let (Some(id), Some(secret)) =
            (v.get("clientId").and_then(Value::as_str), v.get("clientSecret").and_then(Value::as_str))
        else {
            return Err(ApimError::Local(format!("{what}: the answer lacks clientId/clientSecret")));
        };
        let c = (id.to_string(), secret.to_string());
        *guard = Some(c.clone());
        Ok(c)
    }

    /// A valid Admin API token, from the cache or the token endpoint.
    async fn bearer(&self, secrets: &Secrets, fresh: bool) -> Result<String, ApimError> {
        let mut guard = self.token.lock().await;
        if let (Some(t), false) = (guard.as_ref(), fresh) {
            if self.clock.monotonic() < t.renew_at {
                return Ok(t.value.clone());
            }
        }
        let mut attempt = 0;
        loop {
            let (id, secret) = self.registration(secrets, attempt > 0).await?;
            let mut form = vec![("scope", ADMIN_SCOPES.to_string())];
            if self.settings.auth == AdminAuth::Password {
                form.push(("grant_type", "password".into()));
                form.push(("username", self.settings.username.clone()));
                form.push(("password", secrets.admin_password.clone()));
            } else {
                form.push(("grant_type", "client_credentials".into()));
            }
            let req = self
                .http
                .post(self.settings.token_url.clone())
                .header(reqwest::header::AUTHORIZATION, basic(&id, &secret))
                .form(&form);
            let what = "token request";
            let (status, bytes) = self.send(what, req).await?;
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                // The registered client may have been deleted: register again, once.
                attempt += 1;
                continue;
            }
            if !status.is_success() {
                return Err(rejected(what, status, &bytes));
            }
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|_| ApimError::Local(format!("{what}: the answer is not JSON")))?;
            let Some(token) = v.get("access_token").and_then(Value::as_str) else {
                return Err(ApimError::Local(format!("{what}: the answer has no access_token")));
            };
            let life = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
            let margin = (life / 10).min(60);
            *guard = Some(CachedToken {
                value: token.to_string(),
                renew_at: self.clock.monotonic() + Duration::from_secs(life.saturating_sub(margin)),
            });
            return Ok(token.to_string());
        }
    }

    fn admin_url(&self, path: &str) -> String {
        format!("{}{}", self.settings.admin_api_url.as_str().trim_end_matches('/'), path)
    }

    /// One Admin API call; on 401 a fresh token is fetched once and the call retried.
    async fn admin(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        secrets: &Secrets,
    ) -> Result<(StatusCode, Value), ApimError> {
        for attempt in 0..2 {
            let auth = match self.settings.auth {
                AdminAuth::Basic => basic(&self.settings.username, &secrets.admin_password),
                _ => format!("Bearer {}", self.bearer(secrets, attempt > 0).await?),
            };
            let mut req =
                self.http.request(method.clone(), self.admin_url(path)).header(reqwest::header::AUTHORIZATION, auth);
            req = req.header(reqwest::header::ACCEPT, "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let (status, bytes) = self.send(what, req).await?;
            if status == StatusCode::UNAUTHORIZED && attempt == 0 && self.settings.auth != AdminAuth::Basic {
                tracing::info!("APIM answered 401 to {what}; fetching a new token and retrying once");
                continue;
            }
            if status.is_client_error() {
                return Err(rejected(what, status, &bytes));
            }
            let v = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|_| ApimError::Local(format!("{what}: the answer is not JSON")))?
            };
            return Ok((status, v));
        }
        Err(ApimError::Local(format!("{what}: unauthorized twice")))
    }

    /// `GET /key-managers`: the `list` of `KeyManagerInfo`.
    pub async fn list(&self, secrets: &Secrets) -> Result<Vec<Value>, ApimError> {
        let (_, v) = self.admin("listing key managers", Method::GET, "/key-managers", None, secrets).await?;
        match v.get("list") {
            Some(Value::Array(a)) => Ok(a.clone()),
            _ => Err(ApimError::Local("listing key managers: the answer has no \"list\" array".into())),
        }
    }

    /// `GET /key-managers/{id}`.
    pub async fn get(&self, id: &str, secrets: &Secrets) -> Result<Value, ApimError> {
        let (_, v) =
            self.admin("reading the key manager", Method::GET, &format!("/key-managers/{id}"), None, secrets).await?;
        if !v.is_object() {
            return Err(ApimError::Local("reading the key manager: the answer is not an object".into()));
        }
        Ok(v)
    }

    /// `POST /key-managers`; a 409 is [`Created::AlreadyExists`].
    pub async fn create(&self, body: &Value, secrets: &Secrets) -> Result<Created, ApimError> {
        match self.admin("creating the key manager", Method::POST, "/key-managers", Some(body), secrets).await {
            Ok((_, v)) => Ok(Created::Created(v)),
            Err(ApimError::Rejected { status: 409, .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// `PUT /key-managers/{id}` (APIM replaces the whole object).
    pub async fn update(&self, id: &str, body: &Value, secrets: &Secrets) -> Result<Value, ApimError> {
        let (_, v) = self
            .admin("updating the key manager", Method::PUT, &format!("/key-managers/{id}"), Some(body), secrets)
            .await?;
        Ok(v)
    }
}
