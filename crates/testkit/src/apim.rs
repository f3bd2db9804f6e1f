//! A fake WSO2 API Manager that behaves like the real server as `shared/research/apim-asgardeo.md`
//! describes it: client registration (idempotent by `clientName`, 200), the token endpoint
//! (password and client-credentials grants, expiring tokens), and `/api/am/admin/v4/key-managers`
//! with an in-memory store: 401 without a valid token or scope (Basic admin credentials also
//! work), 409 on a duplicate name, 400 with the real error shape when a required connector key
//! or endpoint is missing, the name immutable on PUT, the secret masked as `*****` on GET and
//! kept when `*****` is sent back, standard fields folded into `additionalProperties` on write
//! and lifted out again on GET. **Every request body is validated against the `KeyManager`
//! schema of admin-api.json** (tightened: no unknown top-level fields); a violation is
//! answered 400 and recorded, and `assert_clean()` fails the test. Faults can be injected.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-pw";
const MASK: &str = "*****";
const SCOPES: [&str; 3] = ["apim:admin", "apim:admin_operations", "apim:keymanagers_manage"];

/// Standard fields folded into `additionalProperties` on write, lifted out on GET.
const LIFTED: [(&str, &str); 22] = [
    ("clientRegistrationEndpoint", "client_registration_endpoint"),
    ("introspectionEndpoint", "introspection_endpoint"),
    ("tokenEndpoint", "token_endpoint"),
    ("displayTokenEndpoint", "display_token_endpoint"),
    ("revokeEndpoint", "revoke_endpoint"),
    ("displayRevokeEndpoint", "display_revoke_endpoint"),
    ("scopeManagementEndpoint", "scope_endpoint"),
    ("availableGrantTypes", "grant_types"),
    ("issuer", "issuer"),
    ("wellKnownEndpoint", "well_known_endpoint"),
    ("userInfoEndpoint", "userinfo_endpoint"),
    ("authorizeEndpoint", "authorize_endpoint"),
    ("enableOAuthAppCreation", "enable_oauth_app_creation"),
    ("enableMapOAuthConsumerApps", "enable_map_oauth_consumer_apps"),
    ("enableTokenGeneration", "enable_token_generation"),
    ("enableTokenHashing", "enable_token_hash"),
    ("enableTokenEncryption", "enable_token_encryption"),
    ("enableSelfValidationJWT", "self_validate_jwt"),
    ("tokenValidation", "token_format_string"),
    ("claimMapping", "claim_mappings"),
    ("consumerKeyClaim", "consumer_key_claim"),
    ("scopesClaim", "scopes_claim"),
];
/// The Asgardeo connector's required configuration keys.
const REQUIRED_CONNECTOR_KEYS: [&str; 6] = [
    "org_name",
    "mgmt_client_id",
    "mgmt_client_secret",
    "APIM_GLOBAL_SCOPES",
    "asgardeo_api_resource_management_endpoint",
    "asgardeo_roles_endpoint",
];
/// Required endpoint configurations (the connector keeps the interface default).
const REQUIRED_ENDPOINTS: [(&str, &str); 4] = [
    ("clientRegistrationEndpoint", "client_registration_endpoint"),
    ("introspectionEndpoint", "introspection_endpoint"),
    ("tokenEndpoint", "token_endpoint"),
    ("revokeEndpoint", "revoke_endpoint"),
];
const INSTALLED_TYPES: [&str; 3] = ["Asgardeo", "default", "WSO2-IS"];
/// What APIM stores for a boolean a create or update body omits: `KeyManagerDTO`'s field
/// initialisers (admin-api.yaml's `default:`), written into the configuration by
/// `KeyManagerMappingUtil` whether the client sent them or not. `enableTokenGeneration` has no
/// default and stays unset. With `enable_oauth_app_creation` false the Developer Portal refuses
/// "Generate Keys" (901405).
const OMITTED_DEFAULTS: [(&str, bool); 5] = [
    ("enable_oauth_app_creation", false),
    ("enable_map_oauth_consumer_apps", false),
    ("enable_token_hash", false),
    ("enable_token_encryption", false),
    ("self_validate_jwt", true),
];

/// One fault to inject into the next matching requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer 500.
    ServerError,
    /// Close the connection without an answer.
    Drop,
    /// Wait this long, then answer normally.
    Slow(Duration),
}

#[derive(Default)]
struct Store {
    clients: HashMap<String, (String, String)>,
    tokens: HashMap<String, (Instant, Vec<String>)>,
    key_managers: Vec<Map<String, Value>>,
    next_id: u64,
}

#[derive(Default)]
pub struct ApimState {
    store: Mutex<Store>,
    pub violations: Mutex<Vec<String>>,
    pub log: Mutex<Vec<(String, String)>>,
    faults: Mutex<Vec<Fault>>,
    pub token_life: Mutex<u64>,
    race: Mutex<Option<Value>>,
    posts: AtomicUsize,
    puts: AtomicUsize,
    schema: Option<jsonschema::Validator>,
}

pub struct FakeApim {
    pub addr: SocketAddr,
    tls: bool,
    pub state: Arc<ApimState>,
    task: tokio::task::JoinHandle<()>,
}

fn load_schema() -> jsonschema::Validator {
    let text = include_str!("apim/admin-api.json");
    let doc: Value = serde_json::from_str(text).expect("admin-api.json");
    let mut schemas = doc["components"]["schemas"].clone();
    // Field for field: an unknown top-level field in a KeyManager body is a client bug.
    schemas["KeyManager"]["additionalProperties"] = json!(false);
    let root = json!({ "$ref": "#/components/schemas/KeyManager", "components": { "schemas": schemas } });
    jsonschema::validator_for(&root).expect("KeyManager schema compiles")
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(if body.is_null() { String::new() } else { body.to_string() })));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// The real server's error shape: `code` is the WSO2 error code, not the HTTP status.
fn error(status: StatusCode, code: i64, message: &str, description: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"code": code, "message": message, "description": description, "moreInfo": "", "error": []}))
}

fn unauthenticated() -> Response<Full<Bytes>> {
    reply(
        StatusCode::UNAUTHORIZED,
        json!({"code": 401, "message": "", "description": "Unauthenticated request", "moreInfo": "", "error": []}),
    )
}

fn basic_credentials(req: &Request<Incoming>) -> Option<(String, String)> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let b = v.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(b).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl FakeApim {
    pub async fn start() -> FakeApim {
        FakeApim::start_inner(None).await
    }

    /// Serves HTTPS with `cert_chain` and `key` (PKCS#8 DER) instead of plain HTTP.
    pub async fn start_tls(cert_chain: Vec<Vec<u8>>, key: Vec<u8>) -> FakeApim {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                cert_chain.into_iter().map(rustls::pki_types::CertificateDer::from).collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
        FakeApim::start_inner(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeApim {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state =
            Arc::new(ApimState { schema: Some(load_schema()), token_life: Mutex::new(3600), ..Default::default() });
        let st = state.clone();
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { st.handle(req).await }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            // A client that refuses the certificate ends the handshake: nothing to serve.
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        FakeApim { addr, tls: is_tls, state, task }
    }

    pub fn url(&self) -> String {
        if self.tls {
            // The certificate names localhost; the listener is on 127.0.0.1.
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Injects faults for the next requests (one fault per request, in order).
    pub fn inject(&self, faults: &[Fault]) {
        self.state.faults.lock().unwrap().extend_from_slice(faults);
    }

    /// Expires every issued token now.
    pub fn expire_tokens(&self) {
        let mut s = self.state.store.lock().unwrap();
        for (exp, _) in s.tokens.values_mut() {
            *exp = Instant::now() - Duration::from_secs(1);
        }
    }

    pub fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    pub fn puts(&self) -> usize {
        self.state.puts.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> usize {
        self.posts() + self.puts()
    }

    /// The stored (write-format) key manager named `name`, with the secret in clear.
    pub fn stored(&self, name: &str) -> Option<Map<String, Value>> {
        self.state.store.lock().unwrap().key_managers.iter().find(|k| k["name"] == name).cloned()
    }

    /// The GET representation of the key manager named `name`.
    pub fn get_view(&self, name: &str) -> Option<Value> {
        self.stored(name).map(|k| to_view(&k))
    }

    /// Changes the stored key manager as an administrator would through the portal.
    pub fn admin_edit(&self, name: &str, f: impl FnOnce(&mut Map<String, Value>)) {
        let mut s = self.state.store.lock().unwrap();
        let km = s.key_managers.iter_mut().find(|k| k["name"] == name).expect("key manager");
        f(km);
    }

    /// Inserts a key manager directly (e.g. one of another type).
    pub fn seed(&self, km: Value) {
        let mut s = self.state.store.lock().unwrap();
        s.next_id += 1;
        let mut m = to_stored(km.as_object().unwrap().clone(), None);
        m.insert("id".into(), json!(format!("seed-{}", s.next_id)));
        s.key_managers.push(m);
    }

    /// Just before the next POST is processed, a concurrent writer creates `km`.
    pub fn race_next_post(&self, km: Value) {
        *self.state.race.lock().unwrap() = Some(km);
    }

    /// The Developer Portal's "Generate Keys" for application `app` against key manager
    /// `key_manager`, as the portal sends it (Basic admin credentials): status and body.
    pub async fn generate_keys(&self, app: &str, key_manager: &str) -> (u16, Value) {
        jwtgate_tls::install_crypto_provider();
        let r = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .post(format!("{}/api/am/devportal/v3/applications/{app}/generate-keys", self.url()))
            .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
            .json(&json!({"keyType": "PRODUCTION", "keyManager": key_manager,
                "grantTypesToBeSupported": ["client_credentials"], "callbackUrl": "", "scopes": ["default"]}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Fails the test if any request body violated the spec.
    pub fn assert_clean(&self) {
        let v = self.state.violations.lock().unwrap();
        assert!(v.is_empty(), "requests violated admin-api.json: {v:#?}");
    }
}

impl Drop for FakeApim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Folds the lifted top-level fields into `additionalProperties`, trims strings, keeps a
/// stored secret when `*****` is sent back. `endpoints` are copied into the endpoint keys.
fn to_stored(mut body: Map<String, Value>, previous: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut props = match body.remove("additionalProperties") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (top, key) in LIFTED {
        if let Some(v) = body.remove(top) {
            let v = if top == "tokenValidation" { json!(v.to_string()) } else { v };
            props.insert(key.to_string(), v);
        }
    }
    if let Some(Value::Object(c)) = body.remove("certificates") {
        if let Some(t) = c.get("type") {
            props.insert("certificate_type".into(), t.clone());
        }
        if let Some(v) = c.get("value") {
            props.insert("certificate_value".into(), v.clone());
        }
    }
    if let Some(Value::Array(eps)) = body.remove("endpoints") {
        for ep in eps {
            if let (Some(n), Some(v)) = (ep["name"].as_str(), ep.get("value")) {
                props.insert(n.to_string(), v.clone());
            }
        }
    }
    for (key, default) in OMITTED_DEFAULTS {
        props.entry(key).or_insert(json!(default));
    }
    for v in props.values_mut() {
        if let Value::String(s) = v {
            *s = s.trim().to_string();
        }
    }
    if props.get("mgmt_client_secret").and_then(Value::as_str) == Some(MASK) {
        match previous.and_then(|p| p.get("additionalProperties")).and_then(|a| a.get("mgmt_client_secret")) {
            Some(old) => {
                props.insert("mgmt_client_secret".into(), old.clone());
            }
            None => {
                props.remove("mgmt_client_secret");
            }
        }
    }
    body.insert("additionalProperties".into(), Value::Object(props));
    body
}

/// The GET view: lifted keys back at the top (`self_validate_jwt` also stays behind, as the
/// real mapper leaves it), the secret masked, `endpoints` never filled in.
fn to_view(stored: &Map<String, Value>) -> Value {
    let mut out = stored.clone();
    let mut props = match out.remove("additionalProperties") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (top, key) in LIFTED {
        let v = if key == "self_validate_jwt" { props.get(key).cloned() } else { props.remove(key) };
        if let Some(v) = v {
            let v = if top == "tokenValidation" {
                v.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(v)
            } else {
                v
            };
            out.insert(top.to_string(), v);
        }
    }
    let ct = props.remove("certificate_type");
    let cv = props.remove("certificate_value");
    if ct.is_some() || cv.is_some() {
        out.insert("certificates".into(), json!({"type": ct, "value": cv}));
    }
    if props.contains_key("mgmt_client_secret") {
        props.insert("mgmt_client_secret".into(), json!(MASK));
    }
    out.insert("additionalProperties".into(), Value::Object(props));
    Value::Object(out)
}

fn info(km: &Map<String, Value>) -> Value {
    json!({"id": km["id"], "name": km["name"], "type": km["type"], "description": km.get("description"),
        "enabled": km.get("enabled").cloned().unwrap_or(json!(true)), "isGlobal": false, "isUsed": false,
        "tokenType": km.get("tokenType").cloned().unwrap_or(json!("DIRECT"))})
}

impl ApimState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
        let fault = {
            let mut f = self.faults.lock().unwrap();
            if f.is_empty() {
                None
            } else {
                Some(f.remove(0))
            }
        };
        match fault {
            Some(Fault::ServerError) => {
                return Ok(error(StatusCode::INTERNAL_SERVER_ERROR, 500, "Internal Server Error", "injected"))
            }
            Some(Fault::Drop) => return Err(std::io::Error::other("injected connection drop")),
            Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        self.log.lock().unwrap().push((method.to_string(), path.clone()));
        let basic = basic_credentials(&req);
        let bearer = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok(match (method, path.as_str()) {
            (Method::POST, "/client-registration/v0.17/register") => self.register(basic, &body),
            (Method::POST, "/oauth2/token") => self.token(basic, &content_type, &body),
            (m, p) if p.starts_with("/api/am/admin/v4/key-managers") => {
                if !self.authorized(basic, bearer) {
                    return Ok(unauthenticated());
                }
                let id =
                    p.strip_prefix("/api/am/admin/v4/key-managers").unwrap_or("").trim_start_matches('/').to_string();
                match (m, id.is_empty()) {
                    (Method::GET, true) => self.list(),
                    (Method::POST, true) => self.create(&body),
                    (Method::GET, false) => self.get(&id),
                    (Method::PUT, false) => self.update(&id, &body),
                    _ => error(StatusCode::METHOD_NOT_ALLOWED, 405, "Method Not Allowed", ""),
                }
            }
            (Method::POST, p) if p.starts_with("/api/am/devportal/v3/applications/") => {
                if !self.authorized(basic, bearer) {
                    return Ok(unauthenticated());
                }
                match p
                    .strip_prefix("/api/am/devportal/v3/applications/")
                    .and_then(|r| r.strip_suffix("/generate-keys"))
                {
                    Some(app) if !app.is_empty() && !app.contains('/') => self.generate_keys(app, &body),
                    _ => error(StatusCode::NOT_FOUND, 404, "Not Found", "no such resource"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, 404, "Not Found", "no such resource"),
        })
    }

    /// The Developer Portal's "Generate Keys" (devportal v3 `ApplicationKeyGenerateRequest`):
    /// the named key manager must exist, be enabled and allow OAuth app creation; the OAuth
    /// client is then created through the connector (here: made up) and the keys returned.
    fn generate_keys(&self, app: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(StatusCode::BAD_REQUEST, 400, "Bad Request", "invalid JSON");
        };
        let key_type = v["keyType"].as_str().unwrap_or("");
        if !matches!(key_type, "PRODUCTION" | "SANDBOX") || !v["grantTypesToBeSupported"].is_array() {
            return error(
                StatusCode::BAD_REQUEST,
                400,
                "Bad Request",
                "keyType and grantTypesToBeSupported are required",
            );
        }
        let km_name = v["keyManager"].as_str().unwrap_or("Resident Key Manager");
        let s = self.store.lock().unwrap();
        let Some(km) = s.key_managers.iter().find(|k| k["name"] == km_name || k["id"] == km_name) else {
            return error(
                StatusCode::BAD_REQUEST,
                900967,
                "Key Manager not found",
                &format!("Key Manager {km_name} not found"),
            );
        };
        let props = km.get("additionalProperties").cloned().unwrap_or(json!({}));
        if km.get("enabled") == Some(&json!(false)) {
            return error(
                StatusCode::BAD_REQUEST,
                900968,
                "Key Manager is disabled",
                &format!("Key Manager {km_name} is not enabled"),
            );
        }
        if props.get("enable_oauth_app_creation") != Some(&json!(true)) {
            return error(
                StatusCode::BAD_REQUEST,
                901405,
                "Key Manager doesn't support generating OAuth applications",
                &format!("Key Manager {km_name} doesn't support to generate Client Application"),
            );
        }
        let n = rand::random::<u32>();
        let mut out = json!({
            "keyMappingId": format!("map-{n:08x}"), "keyManager": km["name"], "consumerKey": format!("ck-{app}-{n:08x}"),
            "consumerSecret": format!("cs-{n:08x}"), "supportedGrantTypes": v["grantTypesToBeSupported"],
            "keyState": "COMPLETED", "keyType": key_type, "mode": "CREATED", "groupId": null,
        });
        if props.get("enable_token_generation") == Some(&json!(true)) {
            out["token"] =
                json!({"accessToken": format!("at-{n:08x}"), "tokenScopes": ["default"], "validityTime": 3600});
        }
        reply(StatusCode::OK, out)
    }

    fn register(&self, basic: Option<(String, String)>, body: &[u8]) -> Response<Full<Bytes>> {
        if basic != Some((ADMIN_USER.into(), ADMIN_PASSWORD.into())) {
            return unauthenticated();
        }
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return error(StatusCode::BAD_REQUEST, 400, "Bad Request", "invalid JSON");
        };
        let Some(name) = v["clientName"].as_str() else {
            return error(StatusCode::BAD_REQUEST, 400, "Bad Request", "clientName is required");
        };
        match v["owner"].as_str() {
            Some(o) if o == ADMIN_USER => {}
            Some("") | None => return error(StatusCode::BAD_REQUEST, 400, "Bad Request", "owner is required"),
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    400,
                    "Bad Request",
                    "owner and the authenticated user should be same.",
                )
            }
        }
        let mut s = self.store.lock().unwrap();
        let n = s.clients.len();
        let (id, secret) =
            s.clients.entry(name.to_string()).or_insert_with(|| (format!("client-{n}"), format!("secret-{n}"))).clone();
        reply(
            StatusCode::OK,
            json!({"clientId": id, "clientName": name, "callBackURL": v["callbackUrl"], "clientSecret": secret,
            "isSaasApplication": true, "appOwner": ADMIN_USER, "jsonString": "{}", "jsonAppAttribute": "{}", "tokenType": "DEFAULT"}),
        )
    }

    fn token(&self, basic: Option<(String, String)>, content_type: &str, body: &[u8]) -> Response<Full<Bytes>> {
        let Some((cid, csecret)) = basic else {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": "Client Authentication failed."}),
            );
        };
        let mut s = self.store.lock().unwrap();
        if !s.clients.values().any(|(i, sec)| *i == cid && *sec == csecret) {
            return reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_client", "error_description": "Client Authentication failed."}),
            );
        }
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
        match form.get("grant_type").map(String::as_str) {
            Some("password") => {
                if form.get("username").map(String::as_str) != Some(ADMIN_USER)
                    || form.get("password").map(String::as_str) != Some(ADMIN_PASSWORD)
                {
                    return reply(
                        StatusCode::BAD_REQUEST,
                        json!({"error": "invalid_grant", "error_description": "Authentication failed for admin"}),
                    );
                }
            }
            Some("client_credentials") => {}
            _ => return reply(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"})),
        }
        let granted: Vec<String> = form
            .get("scope")
            .map(|s| s.split(' ').filter(|x| SCOPES.contains(x)).map(str::to_string).collect())
            .unwrap_or_default();
        let life = *self.token_life.lock().unwrap();
        let token = format!("tok-{:x}", rand::random::<u64>());
        s.tokens.insert(token.clone(), (Instant::now() + Duration::from_secs(life), granted.clone()));
        reply(
            StatusCode::OK,
            json!({"access_token": token, "refresh_token": "r", "scope": granted.join(" "), "token_type": "Bearer", "expires_in": life}),
        )
    }

    fn authorized(&self, basic: Option<(String, String)>, bearer: Option<String>) -> bool {
        if basic == Some((ADMIN_USER.into(), ADMIN_PASSWORD.into())) {
            return true;
        }
        let s = self.store.lock().unwrap();
        bearer
            .and_then(|t| s.tokens.get(&t).cloned())
            .is_some_and(|(exp, scopes)| Instant::now() < exp && !scopes.is_empty())
    }

    #[allow(clippy::result_large_err)] // the Err is the answer itself, built once per request
    fn validate(&self, body: &[u8]) -> Result<Map<String, Value>, Response<Full<Bytes>>> {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            self.violations.lock().unwrap().push("body is not JSON".into());
            return Err(error(StatusCode::BAD_REQUEST, 400, "Bad Request", "invalid JSON"));
        };
        if let Some(schema) = &self.schema {
            let errors: Vec<String> = schema.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path)).collect();
            if !errors.is_empty() {
                self.violations.lock().unwrap().extend(errors.iter().cloned());
                return Err(error(StatusCode::BAD_REQUEST, 400, "Bad Request", &errors.join("; ")));
            }
        }
        let m = v.as_object().cloned().unwrap_or_default();
        let ty = m["type"].as_str().unwrap_or("");
        if !INSTALLED_TYPES.contains(&ty) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                901400,
                "Key Manager Type not configured",
                &format!("Key Manager Type {ty} not configured"),
            ));
        }
        if ty == "Asgardeo" && m.get("tokenType").and_then(Value::as_str) != Some("EXCHANGED") {
            let props = m.get("additionalProperties").cloned().unwrap_or(json!({}));
            let missing: Vec<&str> = REQUIRED_CONNECTOR_KEYS
                .iter()
                .copied()
                .filter(|k| props.get(*k).is_none_or(|v| v.as_str() == Some("")))
                .collect();
            if !missing.is_empty() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    901401,
                    "Required Key Manager configuration missing",
                    &format!("Key Manager Configuration value for {} is/are required", missing.join(",")),
                ));
            }
            let eps: Vec<&str> = m
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|e| e["name"].as_str()).collect())
                .unwrap_or_default();
            let missing: Vec<&str> = REQUIRED_ENDPOINTS
                .iter()
                .filter(|(top, key)| m.get(*top).is_none() && !eps.contains(key))
                .map(|(_, key)| *key)
                .collect();
            if !missing.is_empty() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    901401,
                    "Required Key Manager configuration missing",
                    &format!("Key Manager Endpoint Configuration value for {} is/are required", missing.join(",")),
                ));
            }
        }
        Ok(m)
    }

    fn list(&self) -> Response<Full<Bytes>> {
        let s = self.store.lock().unwrap();
        let list: Vec<Value> = s.key_managers.iter().map(info).collect();
        reply(StatusCode::OK, json!({"count": list.len(), "list": list}))
    }

    fn get(&self, id: &str) -> Response<Full<Bytes>> {
        let s = self.store.lock().unwrap();
        match s.key_managers.iter().find(|k| k["id"] == id) {
            Some(k) => reply(StatusCode::OK, to_view(k)),
            None => error(
                StatusCode::NOT_FOUND,
                901411,
                "Key Manager not found",
                &format!("Key Manager not found for id {id}"),
            ),
        }
    }

    fn create(&self, body: &[u8]) -> Response<Full<Bytes>> {
        self.posts.fetch_add(1, Ordering::SeqCst);
        if let Some(other) = self.race.lock().unwrap().take() {
            let mut s = self.store.lock().unwrap();
            s.next_id += 1;
            let mut m = to_stored(other.as_object().cloned().unwrap_or_default(), None);
            m.insert("id".into(), json!(format!("raced-{}", s.next_id)));
            s.key_managers.push(m);
        }
        let m = match self.validate(body) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let mut s = self.store.lock().unwrap();
        if s.key_managers.iter().any(|k| k["name"] == m["name"]) {
            return error(
                StatusCode::CONFLICT,
                901402,
                "Key manager Already Exist",
                &format!("Key Manager {} already exists", m["name"]),
            );
        }
        if m.get("additionalProperties").and_then(|a| a.get("mgmt_client_secret")).and_then(Value::as_str) == Some(MASK)
        {
            return error(
                StatusCode::BAD_REQUEST,
                901401,
                "Required Key Manager configuration missing",
                "mgmt_client_secret is required",
            );
        }
        s.next_id += 1;
        let id = format!("00000000-0000-0000-0000-{:012}", s.next_id);
        let mut stored = to_stored(m, None);
        stored.insert("id".into(), json!(id));
        stored.entry("enabled").or_insert(json!(true));
        s.key_managers.push(stored.clone());
        let mut r = reply(StatusCode::CREATED, to_view(&stored));
        r.headers_mut().insert("location", format!("/key-managers/{id}").parse().unwrap());
        r
    }

    fn update(&self, id: &str, body: &[u8]) -> Response<Full<Bytes>> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        let m = match self.validate(body) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let mut s = self.store.lock().unwrap();
        let Some(pos) = s.key_managers.iter().position(|k| k["id"] == id) else {
            return error(
                StatusCode::NOT_FOUND,
                901411,
                "Key Manager not found",
                &format!("Key Manager not found for id {id}"),
            );
        };
        if s.key_managers[pos]["name"] != m["name"] {
            return error(
                StatusCode::BAD_REQUEST,
                901412,
                "Key Manager update violation",
                "Key Manager name couldn't able to change",
            );
        }
        let mut stored = to_stored(m, Some(&s.key_managers[pos]));
        stored.insert("id".into(), json!(id));
        s.key_managers[pos] = stored.clone();
        reply(StatusCode::OK, to_view(&stored))
    }
}
