//! An Asgardeo-like organization on loopback: the discovery document (under
//! `/t/{org}/oauth2/token/.well-known/openid-configuration`, and optionally the legacy
//! `/t/{org}/oauth2/.well-known/...` path) and the JWKS at `/t/{org}/oauth2/jwks`, in
//! Asgardeo's shape (issuer `.../t/{org}/oauth2/token`, `kid`s ending in `_RS256`), and the
//! RFC 7662 introspection endpoint at `/t/{org}/oauth2/introspect` for the opaque tokens it
//! issues (UUIDs, Asgardeo's default format), answering only an authenticated client. It backs
//! `jwtgate dev` and the integration tests, so it can rotate keys, revoke, fail, and count calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::mint::SigningKey;
use jwtgate_edge::{serve, ServerLimits};

#[derive(Default)]
struct State {
    keys: Mutex<Vec<Arc<SigningKey>>>,
    down: AtomicBool,
    legacy_path: AtomicBool,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
    requests_seen: AtomicUsize,
    jwks_answered: AtomicUsize,
    jwks_override: Mutex<Option<(u16, String)>>,
    discovery_extra: Mutex<Option<Value>>,
    cache_control: Mutex<Option<String>>,
    delay: Mutex<Duration>,
    next_jwks_delay: Mutex<Option<Duration>>,
    /// Opaque tokens issued and not revoked, with the claims introspection reports.
    opaque: Mutex<std::collections::HashMap<String, Value>>,
    /// The client allowed to introspect (`None`: every caller is refused, 401).
    introspection_client: Mutex<Option<(String, String)>>,
    introspection_override: Mutex<Option<(u16, String)>>,
    introspections: AtomicUsize,
    introspections_in_flight: AtomicUsize,
    introspections_in_flight_max: AtomicUsize,
}

/// Counts an introspection request in flight from its arrival (before any delay) to its answer.
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(st: &'a State) -> InFlight<'a> {
        let now = st.introspections_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.introspections_in_flight_max.fetch_max(now, Ordering::SeqCst);
        InFlight(st)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.introspections_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fake organization.
pub struct FakeIssuer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The organization name in its paths.
    pub org: String,
    /// `http://addr` or `https://addr`.
    origin: String,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    /// The accept loop, which ends once every connection is closed.
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

use jwtgate_base::sync::lock;

impl FakeIssuer {
    /// Starts on an ephemeral loopback port.
    pub async fn start(org: &str) -> std::io::Result<FakeIssuer> {
        FakeIssuer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), org).await
    }

    /// Starts on `addr` (must be loopback).
    pub async fn start_on(addr: SocketAddr, org: &str) -> std::io::Result<FakeIssuer> {
        FakeIssuer::start_with(addr, org, None).await
    }

    /// Starts on `addr` (must be loopback), over TLS with `tls` when given (an IdP behind a
    /// private CA).
    pub async fn start_with(
        addr: SocketAddr,
        org: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<FakeIssuer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let origin = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let state = Arc::new(State::default());
        let (stop, stop_rx) = watch::channel(false);
        let st = state.clone();
        let org_owned = org.to_string();
        let base = origin.clone();
        let serving = tokio::spawn(serve(
            listener,
            move |req, _| {
                let st = st.clone();
                let org = org_owned.clone();
                let base = base.clone();
                async move { answer(&st, &org, &base, req).await }
            },
            stop_rx,
            ServerLimits { drain: Duration::from_millis(200), ..ServerLimits::default() },
            None,
            tls.map(|c| Arc::new(arc_swap::ArcSwap::new(c))),
            Arc::new(jwtgate_base::clock::SystemClock),
        ));
        Ok(FakeIssuer { addr, org: org.to_string(), origin, state, stop, serving: Mutex::new(Some(serving)) })
    }

    /// The `iss` its tokens carry.
    pub fn issuer(&self) -> String {
        format!("{}/t/{}/oauth2/token", self.origin, self.org)
    }

    /// The discovery URL Asgardeo documents (`/oauth2/token/.well-known/...`).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// The legacy form APIM's docs print (`/oauth2/.well-known/...`); 404 unless enabled.
    pub fn legacy_discovery_url(&self) -> String {
        format!("{}/t/{}/oauth2/.well-known/openid-configuration", self.origin, self.org)
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/t/{}/oauth2/jwks", self.origin, self.org)
    }

    /// Publishes `key` in the JWKS.
    pub fn add_key(&self, key: SigningKey) -> Arc<SigningKey> {
        self.add_shared_key(Arc::new(key))
    }

    /// Publishes a key another issuer may publish too (a test process's one generated key:
    /// each issuer's tokens still carry its own `iss`).
    pub fn add_shared_key(&self, key: Arc<SigningKey>) -> Arc<SigningKey> {
        lock(&self.state.keys).push(key.clone());
        key
    }

    /// Removes the key with `kid` from the JWKS.
    pub fn remove_key(&self, kid: &str) {
        lock(&self.state.keys).retain(|k| k.kid != kid);
    }

    /// Makes every endpoint answer 503 (true) or work again (false).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Serves discovery under the legacy path as well.
    pub fn serve_legacy_path(&self, on: bool) {
        self.state.legacy_path.store(on, Ordering::SeqCst);
    }

    /// Replaces the JWKS answer with a fixed status and body (`None` restores the real one).
    pub fn override_jwks(&self, answer: Option<(u16, String)>) {
        *lock(&self.state.jwks_override) = answer;
    }

    /// Merges these members into the discovery document (`None` restores it).
    pub fn patch_discovery(&self, extra: Option<Value>) {
        *lock(&self.state.discovery_extra) = extra;
    }

    /// Sends this `Cache-Control` with the JWKS.
    pub fn set_cache_control(&self, v: Option<&str>) {
        *lock(&self.state.cache_control) = v.map(str::to_string);
    }

    /// Delays every answer.
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.state.delay) = d;
    }

    /// The next JWKS request gets the key set as it is when the request arrives, answered only
    /// after `d`: a slow answer carrying an old set, for tests of overtaking fetches.
    pub fn delay_next_jwks(&self, d: Duration) {
        *lock(&self.state.next_jwks_delay) = Some(d);
    }

    /// Requests that arrived so far (counted before any delay), whatever they asked for.
    pub fn requests_seen(&self) -> usize {
        self.state.requests_seen.load(Ordering::SeqCst)
    }

    /// JWKS key sets answered so far (a delayed answer counts once it is on its way).
    pub fn jwks_answered(&self) -> usize {
        self.state.jwks_answered.load(Ordering::SeqCst)
    }

    /// JWKS requests served so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery requests served so far.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Lets `client_id`/`secret` call the introspection endpoint (Basic or form-body auth).
    pub fn set_introspection_client(&self, client_id: &str, secret: &str) {
        *lock(&self.state.introspection_client) = Some((client_id.to_string(), secret.to_string()));
    }

    /// Issues an opaque token (a UUID, as Asgardeo does) that introspects as `claims`.
    pub fn issue_opaque(&self, claims: Value) -> String {
        let r: u128 = rand::random();
        let h = format!("{r:032x}");
        let token = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        lock(&self.state.opaque).insert(token.clone(), claims);
        token
    }

    /// Revokes an opaque token: introspection says `active: false` from now on.
    pub fn revoke_opaque(&self, token: &str) {
        lock(&self.state.opaque).remove(token);
    }

    /// Replaces every introspection answer with a fixed status and body (`None` restores it).
    pub fn override_introspection(&self, answer: Option<(u16, String)>) {
        *lock(&self.state.introspection_override) = answer;
    }

    /// Introspection requests served so far (counted before any delay).
    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    /// The most introspection requests it has had in flight at once.
    pub fn introspections_in_flight_max(&self) -> usize {
        self.state.introspections_in_flight_max.load(Ordering::SeqCst)
    }

    /// The introspection endpoint.
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/t/{}/oauth2/introspect", self.origin, self.org)
    }

    /// Stops listening and returns once every connection is closed: from then on connections
    /// are refused, and none kept alive by a client can still be answered.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            let _ = serving.await;
        }
    }

    /// Claims in Asgardeo's access-token shape, valid for an hour from `now`.
    pub fn claims(&self, now: i64, sub: &str, aud: &str, scope: &str) -> Value {
        json!({
            "iss": self.issuer(),
            "sub": sub,
            "aut": "APPLICATION_USER",
            "aud": aud,
            "azp": aud,
            "client_id": aud,
            "scope": scope,
            "nbf": now,
            "iat": now,
            "exp": now + 3600,
            "jti": format!("{:x}", rand::random::<u128>()),
        })
    }

    /// The discovery document it serves (before patches).
    pub fn discovery_document(&self) -> Value {
        discovery_doc(&self.org, &self.origin)
    }
}

fn discovery_doc(org: &str, origin: &str) -> Value {
    let base = format!("{origin}/t/{org}");
    json!({
        "issuer": format!("{base}/oauth2/token"),
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/oauth2/jwks"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "userinfo_endpoint": format!("{base}/oauth2/userinfo"),
        "end_session_endpoint": format!("{base}/oidc/logout"),
        "registration_endpoint": format!("{base}/api/identity/oauth2/dcr/v1.1/register"),
        "grant_types_supported": ["authorization_code", "implicit", "password", "client_credentials", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "response_types_supported": ["code", "id_token", "token"],
        "subject_types_supported": ["public", "pairwise"],
        "scopes_supported": ["openid", "profile", "email"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "code_challenge_methods_supported": ["S256", "plain"],
    })
}

fn reply(status: StatusCode, body: String, cache_control: Option<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    if let Some(cc) = cache_control.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::CACHE_CONTROL, cc);
    }
    r
}

async fn answer<B>(st: &State, org: &str, origin: &str, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    st.requests_seen.fetch_add(1, Ordering::SeqCst);
    let _in_flight = (req.uri().path() == format!("/t/{org}/oauth2/introspect")).then(|| {
        st.introspections.fetch_add(1, Ordering::SeqCst);
        InFlight::enter(st)
    });
    let delay = *lock(&st.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if st.down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"down\"}".into(), None);
    }
    let path = req.uri().path();
    let token_form = format!("/t/{org}/oauth2/token/.well-known/openid-configuration");
    let legacy = format!("/t/{org}/oauth2/.well-known/openid-configuration");
    if path == token_form || (path == legacy && st.legacy_path.load(Ordering::SeqCst)) {
        st.discovery_fetches.fetch_add(1, Ordering::SeqCst);
        let mut doc = discovery_doc(org, origin);
        if let (Some(Value::Object(extra)), Some(obj)) = (lock(&st.discovery_extra).clone(), doc.as_object_mut()) {
            obj.extend(extra);
        }
        return reply(StatusCode::OK, doc.to_string(), None);
    }
    if path == format!("/t/{org}/oauth2/introspect") {
        return introspect(st, req).await;
    }
    if path == format!("/t/{org}/oauth2/jwks") {
        st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        if let Some((status, body)) = lock(&st.jwks_override).clone() {
            return reply(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body, None);
        }
        let keys: Vec<Value> = lock(&st.keys).iter().map(|k| k.jwk()).collect();
        let cc = lock(&st.cache_control).clone();
        let held = lock(&st.next_jwks_delay).take();
        if let Some(d) = held {
            tokio::time::sleep(d).await;
        }
        let r = reply(StatusCode::OK, json!({ "keys": keys }).to_string(), cc);
        st.jwks_answered.fetch_add(1, Ordering::SeqCst);
        return r;
    }
    reply(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}".into(), None)
}

/// RFC 7662 §2: a form POST from an authenticated client (RFC 6749 §2.3.1, Basic with the
/// form-encoded id and secret, or both in the body); `{"active": false}` for anything unknown,
/// revoked or expired, else the token's claims with `active` and `token_type`.
async fn introspect<B>(st: &State, req: Request<B>) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use base64::Engine;
    use http_body_util::BodyExt;
    if req.method() != http::Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "invalid_request"}).to_string(), None);
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let dec =
                |x: &str| url::form_urlencoded::parse(format!("x={x}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((dec(id)?, dec(secret)?))
        });
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}).to_string(), None),
    };
    let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let presented = basic.or_else(|| Some((form.get("client_id")?.clone(), form.get("client_secret")?.clone())));
    let allowed = lock(&st.introspection_client).clone();
    if allowed.is_none() || presented != allowed {
        let mut r = reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}).to_string(), None);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"oauth2\""));
        return r;
    }
    if let Some((status, body)) = lock(&st.introspection_override).clone() {
        return reply(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body, None);
    }
    let Some(token) = form.get("token") else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}).to_string(), None);
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let claims = lock(&st.opaque).get(token).cloned();
    let answer = match claims {
        // No `exp`: a token that never expires (a server jwtgate must refuse to believe).
        Some(Value::Object(mut c)) if c.get("exp").and_then(Value::as_i64).is_none_or(|exp| exp > now) => {
            c.insert("active".into(), json!(true));
            c.entry("token_type").or_insert(json!("Bearer"));
            Value::Object(c)
        }
        _ => json!({"active": false}),
    };
    reply(StatusCode::OK, answer.to_string(), None)
}

impl Drop for FakeIssuer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
