//! The TOML configuration: the file model (`serde`, `deny_unknown_fields`), its defaults and
//! its validation into typed, ready-to-use values. Every problem is reported with the key path
//! (`issuers[0].discovery_url: ...`) and never with a panic. Secrets are not read here; the
//! key-manager sync reads them when it starts.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::auth::alg::Alg;
use crate::km_sync::settings::Settings;
pub use crate::tls::ListenerTls;

/// The host of Asgardeo's cloud service; `organization = "x"` expands against it.
pub const ASGARDEO_ORIGIN: &str = "https://api.asgardeo.io";

/// One configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path, e.g. `issuers[0].discovery_url`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file, when one was read.
    pub file: Option<PathBuf>,
    /// The problems, in file order where possible.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "invalid configuration {}:", p.display())?,
            None => write!(f, "invalid configuration:")?,
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { path: path.into(), message: message.into() }
}

// === the file model ===

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`: listeners and request limits.
    #[serde(default)]
    pub server: ServerSection,
    /// `[upstream]`: the protected API.
    pub upstream: UpstreamSection,
    /// `[[issuers]]`: the token issuers trusted.
    #[serde(default)]
    pub issuers: Vec<IssuerSection>,
    /// `[[routes]]`: first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// `[key_manager_sync]`: the WSO2 APIM key-manager registration.
    pub key_manager_sync: Option<KmSyncSection>,
    /// `[decision]`: the listener answering auth subrequests (absent = off).
    pub decision: Option<DecisionSection>,
    /// `[shared_state]`: what every replica shares (absent = each process on its own).
    pub shared_state: Option<crate::shared_state::settings::SharedStateSection>,
}

/// `[decision]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionSection {
    /// Where the decision listener listens; only the front proxy should reach it.
    pub listen: SocketAddr,
    /// `[decision.tls]`: serve the decision listener over TLS (absent = plain HTTP).
    pub tls: Option<TlsSection>,
    /// Whose headers describe the original request.
    #[serde(default)]
    pub front_proxy: FrontProxy,
}

/// `decision.front_proxy`: which front proxy sends the auth subrequests, and so which headers
/// name the original request. Traefik and Caddy copy every client header into the subrequest
/// (ingress-nginx leaves `X-Original-URI` to the client), so reading a header another proxy
/// would set lets a client name the path that is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontProxy {
    /// `X-Original-Method` + `X-Original-URI` (nginx `auth_request`).
    Nginx,
    /// `X-Original-URL` (absolute) + `X-Original-Method` (ingress-nginx `auth-url`).
    IngressNginx,
    /// `X-Forwarded-Method`, `-Uri`, `-Proto`, `-Host` (Traefik ForwardAuth).
    Traefik,
    /// The same headers as Traefik (Caddy `forward_auth`).
    Caddy,
    /// The decision request's own method and path (Envoy `ext_authz`).
    Envoy,
    /// Whichever one convention is present; two together are refused.
    #[default]
    Auto,
}

impl FrontProxy {
    /// The name as written in the file.
    pub fn name(self) -> &'static str {
        match self {
            FrontProxy::Nginx => "nginx",
            FrontProxy::IngressNginx => "ingress-nginx",
            FrontProxy::Traefik => "traefik",
            FrontProxy::Caddy => "caddy",
            FrontProxy::Envoy => "envoy",
            FrontProxy::Auto => "auto",
        }
    }
}

/// `[server.tls]` / `[decision.tls]`: a listener's certificate and key, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first, relative to the config file.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), relative to the config file.
    pub key_file: String,
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `upstream.protocol`: how jwtgate talks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 keep-alive connections, over TCP or TLS (the default).
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP: how a gRPC server in the same pod listens.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub admin_listen: SocketAddr,
    /// A longer bearer token is an `invalid_token` without being decoded. Default 16384, or
    /// less when `max_header_bytes` is set below that (the token must fit in the headers);
    /// always `Some` once validated (read it through [`ServerSection::max_token_bytes`]).
    #[serde(rename = "max_token_bytes")]
    pub max_token_bytes_set: Option<usize>,
    /// Larger request headers (all names and values together) get 431. Default 65536, or more
    /// when `max_token_bytes` needs it; always `Some` once validated.
    #[serde(rename = "max_header_bytes")]
    pub max_header_bytes_set: Option<usize>,
    /// How long SIGTERM/SIGINT waits for in-flight requests before exiting anyway.
    pub drain_timeout_seconds: u64,
    /// After SIGTERM/SIGINT, how long `/readyz` answers 503 while every listener still serves,
    /// before the drain: the time load balancers and kube-proxy take to stop sending (what a
    /// `preStop` sleep does, for an image without a shell).
    pub shutdown_delay_seconds: u64,
    /// From accept to the end of the request head, whatever was sent (and for each later head
    /// once it started): slow or silent clients are closed after it.
    pub header_read_timeout_seconds: u64,
    /// Keep-alive and HTTP/2 connections with nothing in flight are closed after this long.
    pub idle_timeout_seconds: u64,
    /// A request body that stops arriving for this long ends the request (408) and aborts the
    /// upstream request.
    pub body_read_timeout_seconds: u64,
    /// A WebSocket tunnel is closed after this long, whatever passes through it.
    pub tunnel_max_lifetime_seconds: u64,
    /// Open client connections at most; beyond it new connections wait in the backlog.
    pub max_connections: usize,
    /// One `jwtgate::access` log line per request (method, route, status, outcome, reason,
    /// upstream status, duration, bytes; never the token).
    pub access_log: bool,
    /// Add the token's `sub` to the access log (personal data: off by default).
    pub access_log_subject: bool,
    /// Give every proxied request an `X-Request-Id` (the client's when usable, else a new
    /// one), forward it, return it, log it. Off by default: it costs about 8% of the
    /// anonymous hop's instructions (BENCHMARKS.md); a client's id is forwarded either way.
    pub request_id: bool,
    /// The scheme and authority clients use to reach jwtgate (`https://api.example.com`),
    /// for DPoP's `htu`; absent: `http://` and the request's own `Host`.
    pub public_base_url: Option<String>,
    /// Entries in the verified-token cache; 0 turns it off.
    pub token_cache_entries: u64,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// The default log filter (`RUST_LOG` overrides it).
    pub log_level: String,
    /// Runtime threads for `serve`: 0 = one per core (or `TOKIO_WORKER_THREADS`); 1 runs a
    /// single-threaded runtime, the cheapest for a sidecar pinned to one core.
    pub worker_threads: usize,
    /// `[server.tls]`: serve the proxy listener over TLS (absent = plain HTTP).
    pub tls: Option<TlsSection>,
    /// A WebSocket tunnel through which no byte moved either way for this long is closed.
    pub tunnel_idle_timeout_seconds: u64,
    /// A response the client does not read for this long is cut (the HTTP/2 stream, or the
    /// HTTP/1.1 connection), and the upstream side released.
    pub send_timeout_seconds: u64,
    /// Concurrent streams per HTTP/2 client connection (each may hold an upstream connection).
    pub max_concurrent_streams: u32,
    /// DPoP proof ids remembered at most; when full, new proofs are refused (503), never an
    /// unexpired one forgotten.
    pub dpop_replay_cache_entries: usize,
    /// An optional listener serving only `/healthz`, `/readyz` and `/metrics` (probes and
    /// scrapers from outside the pod); `/status` and `/reload` stay on `admin_listen`.
    pub health_listen: Option<SocketAddr>,
    /// Host names the admin listener answers besides IP literals and `localhost` (DNS
    /// rebinding: a browser tricked into calling it sends the attacker's name).
    pub admin_hosts: Vec<String>,
    /// Poll the configuration file and every file it names this often and reload when their
    /// content changes (0 = off): a ConfigMap or Secret update reaches the pod without a
    /// signal (kubelet swaps a symlink; a distroless image has no `kill`).
    pub watch_config_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            max_token_bytes_set: None,
            max_header_bytes_set: None,
            drain_timeout_seconds: 30,
            shutdown_delay_seconds: 0,
            header_read_timeout_seconds: 10,
            idle_timeout_seconds: 60,
            body_read_timeout_seconds: 60,
            tunnel_max_lifetime_seconds: 3600,
            max_connections: 10_000,
            public_base_url: None,
            access_log: false,
            access_log_subject: false,
            request_id: false,
            token_cache_entries: 100_000,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            worker_threads: 0,
            tls: None,
            tunnel_idle_timeout_seconds: 300,
            send_timeout_seconds: 60,
            max_concurrent_streams: 100,
            dpop_replay_cache_entries: 1_000_000,
            health_listen: None,
            admin_hosts: Vec::new(),
            watch_config_seconds: 0,
        }
    }
}

/// Room for `Bearer ` and the rest of a request's headers beside the longest token.
const HEADER_ROOM_FOR_TOKEN: usize = 8 * 1024;

impl ServerSection {
    /// The longest bearer token accepted.
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes_set.unwrap_or(16 * 1024)
    }

    /// The largest request head accepted (431 beyond).
    pub fn max_header_bytes(&self) -> usize {
        self.max_header_bytes_set.unwrap_or(64 * 1024)
    }

    /// Fills in the two dependent defaults: each follows the other one when only that one was
    /// written, so that a single value the user chose never conflicts with a default.
    fn resolve_limits(&mut self) {
        match (self.max_token_bytes_set, self.max_header_bytes_set) {
            (Some(t), None) => self.max_header_bytes_set = Some((64 * 1024).max(t + HEADER_ROOM_FOR_TOKEN)),
            (None, Some(h)) => self.max_token_bytes_set = Some((16 * 1024).min(h.saturating_sub(7))),
            (None, None) => {
                self.max_token_bytes_set = Some(16 * 1024);
                self.max_header_bytes_set = Some(64 * 1024);
            }
            (Some(_), Some(_)) => {}
        }
    }
}

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `http://host:port` or `https://host:port` of the protected API.
    pub url: String,
    /// `http1` (default), `h2c` (HTTP/2 over plain TCP, e.g. gRPC) or `h2` (HTTP/2 over TLS).
    #[serde(default = "default_protocol")]
    pub protocol: UpstreamProtocol,
    /// PEM bundle of the CAs trusted for an `https://` upstream (default: the public web PKI).
    pub ca_file: Option<String>,
    /// TCP connect timeout; a failed connect is 502.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Until the upstream's response headers arrive; then 504.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_seconds: u64,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout_seconds: u64,
    /// Idle pooled connections kept at most.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Upstream connections at most, of every kind (pooled, in use, HTTP/2, tunnels).
    #[serde(default = "default_upstream_max_connections")]
    pub max_connections: usize,
}

fn default_protocol() -> UpstreamProtocol {
    UpstreamProtocol::Http1
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_upstream_timeout() -> u64 {
    30
}
fn default_pool_idle() -> u64 {
    90
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_upstream_max_connections() -> usize {
    1024
}

/// One `[[issuers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// A short name used in logs, metrics and `validate --issuer`.
    pub name: String,
    /// The OIDC discovery document.
    pub discovery_url: Option<String>,
    /// Shorthand for an Asgardeo organization's discovery URL.
    pub organization: Option<String>,
    /// PEM bundle of the CAs trusted for this IdP's discovery and JWKS (an IdP behind a
    /// private CA; default: the public web PKI). Relative to the configuration file.
    pub ca_file: Option<String>,
    /// The token's `aud` must contain one of these; `[]` means no audience check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted JWS algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Re-read discovery, then the JWKS, this often (the upper bound for `Cache-Control`).
    /// Default 300, or half of `jwks_max_stale_seconds` when that is shorter (so that the set
    /// is refreshed before it goes stale), and never below a written `jwks_refresh_min_seconds`.
    pub jwks_refresh_seconds: Option<u64>,
    /// A `Cache-Control: max-age` never makes refreshes more frequent than this. Default
    /// `min(30, jwks_refresh_seconds)`.
    pub jwks_refresh_min_seconds: Option<u64>,
    /// At most one unknown-`kid` refetch per this many seconds.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// How long the last good key set keeps serving while the IdP fails. Default 86400, or
    /// twice `jwks_refresh_seconds` when that is longer (a set must be refreshed before it
    /// goes stale).
    pub jwks_max_stale_seconds: Option<u64>,
    /// Timeout of each discovery and JWKS request.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    /// The largest discovery or JWKS response accepted.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// `at+jwt` (default): only tokens whose `typ` is `at+jwt` / `application/at+jwt` (RFC
    /// 9068); `any` for IdPs that do not set it (an ID token, with `nonce`, is refused anyway).
    #[serde(default)]
    pub access_token_typ: AccessTokenTyp,
    /// How old a DPoP proof may be (plus the leeway).
    #[serde(default = "default_dpop_max_age")]
    pub dpop_max_age_seconds: u64,
    /// Algorithms a DPoP proof may be signed with: the client's key, not the IdP's, so not the
    /// token's list (an Asgardeo issuer signs RS256; oidc-provider's clients prove with ES256).
    pub dpop_algorithms: Option<Vec<String>>,
    /// Headers the upstream gets from this issuer's tokens: `{ "x-user" = "sub" }`, a dotted
    /// path reaching into objects (`"org.id"`).
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    /// Tokens revoked before they expire (`jti:`, `sub:`, `client_id:` lines).
    pub deny_list_file: Option<String>,
    /// Opaque tokens are judged by this issuer's RFC 7662 introspection endpoint.
    pub introspection: Option<IntrospectionSection>,
}

/// `[issuers.introspection]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSection {
    /// The endpoint; default: the discovery document's `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// The client jwtgate authenticates as (in Asgardeo, the management application).
    pub client_id: String,
    /// The environment variable holding its secret.
    pub client_secret_env: Option<String>,
    /// The file holding its secret (relative to the configuration file).
    pub client_secret_file: Option<String>,
    /// How the client authenticates (RFC 6749 §2.3.1).
    #[serde(default)]
    pub auth: IntrospectionAuth,
    /// How long an active answer is used, never past the token's `exp`.
    #[serde(default = "default_introspection_cache")]
    pub cache_seconds: u64,
    /// How long an inactive (or refused) answer is used.
    #[serde(default = "default_introspection_negative_cache")]
    pub negative_cache_seconds: u64,
    /// The whole call, waiting for a free slot included; then 503.
    #[serde(default = "default_fetch_timeout")]
    pub timeout_seconds: u64,
    /// Calls to the endpoint in flight at once.
    #[serde(default = "default_introspection_concurrency")]
    pub max_concurrent: usize,
    /// Answers kept (a fixed table: a flood of unknown tokens cannot grow memory).
    #[serde(default = "default_introspection_entries")]
    pub cache_entries: u64,
}

/// How jwtgate authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionAuth {
    /// HTTP Basic with the form-encoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

fn default_introspection_cache() -> u64 {
    60
}
fn default_introspection_negative_cache() -> u64 {
    5
}
fn default_introspection_concurrency() -> usize {
    64
}
fn default_introspection_entries() -> u64 {
    65_536
}

fn default_dpop_max_age() -> u64 {
    60
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}
fn default_leeway() -> u64 {
    60
}
fn default_min_refetch() -> u64 {
    10
}
/// `jwks_max_stale_seconds` unless written (or raised to twice a longer refresh interval).
const DEFAULT_MAX_STALE: u64 = 86_400;
fn default_fetch_timeout() -> u64 {
    5
}
fn default_max_response() -> usize {
    1024 * 1024
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The metric label; defaults to the path prefix.
    pub name: Option<String>,
    /// Matches whole path segments.
    pub path_prefix: String,
    /// Omitted: every method.
    pub methods: Option<Vec<String>>,
    /// Every scope listed is required.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `required` (default) or `anonymous`.
    #[serde(default)]
    pub auth: RouteAuth,
    /// Forward `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` (default
    /// false: they are removed, because a framework that honours them would run a request
    /// jwtgate judged as one method as another).
    #[serde(default)]
    pub method_override: bool,
    /// Claim headers for this route, added to (and overriding) the issuer's.
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    /// Only sender-constrained (DPoP-bound) tokens, presented with a proof.
    #[serde(default)]
    pub sender_constrained: bool,
    /// Overrides the issuer's `audiences` on this route.
    pub audiences: Option<Vec<String>>,
    /// Rules on claims other than scope; every one must hold (403 `insufficient_claims`).
    #[serde(default)]
    pub require_claims: Vec<ClaimRuleSection>,
    /// RFC 9470 step-up: the token's `acr` must be one of these.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// RFC 9470 step-up: the user authenticated at most this long ago (`auth_time`).
    pub max_age_seconds: Option<u64>,
    /// A token bucket per caller.
    pub rate_limit: Option<RateLimitSection>,
    /// CORS: preflights answered here, allowed origins on every answer.
    pub cors: Option<CorsSection>,
}

/// `[routes.cors]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    /// Origins (`https://app.example`) allowed to call the route, or `["*"]`.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for (default: the route's, or the usual ones).
    pub allowed_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for (default: authorization, content-type, dpop).
    pub allowed_headers: Option<Vec<String>>,
    /// Response headers a page may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight's answer.
    pub max_age_seconds: Option<u64>,
    /// Cookies and credentials allowed (never with `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

/// A route's validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins, as written (compared case-insensitively), or `*`.
    pub allowed_origins: Vec<String>,
    /// Methods, upper case.
    pub allowed_methods: Vec<String>,
    /// Request headers, lower case.
    pub allowed_headers: Vec<String>,
    /// Exposed response headers, lower case.
    pub expose_headers: Vec<String>,
    /// Preflight cache lifetime.
    pub max_age_seconds: Option<u64>,
    /// Credentials allowed.
    pub allow_credentials: bool,
}

/// `[routes.rate_limit]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Who a bucket belongs to.
    pub key: RateLimitKey,
    /// The sustained rate.
    pub requests_per_second: f64,
    /// The bucket size: requests allowed at once (default: the rate, rounded up, at least 1).
    pub burst: Option<u32>,
    /// Buckets kept at most (default 100,000).
    pub max_keys: Option<usize>,
}

/// Who a rate-limit bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The token's `sub`.
    Sub,
    /// The token's `client_id` (`azp` when it has none).
    ClientId,
    /// The client's address (the proxy's peer; at the decision listener, the last
    /// `X-Forwarded-For` entry its front proxy added).
    Ip,
    /// The token itself.
    Token,
}

/// A route's validated rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Who a bucket belongs to.
    pub key: RateLimitKey,
    /// The sustained rate.
    pub requests_per_second: f64,
    /// The bucket size.
    pub burst: u32,
    /// Buckets kept at most.
    pub max_keys: usize,
}

/// One `require_claims` entry, as written: a claim path and exactly one test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleSection {
    /// A dotted path into the payload (`realm.roles`).
    pub claim: String,
    /// The claim (a string, or an array of strings) holds at least one of these.
    pub any_of: Option<Vec<String>>,
    /// The claim (a string, or an array of strings) holds every one of these.
    pub all_of: Option<Vec<String>>,
    /// The claim equals this string, number or boolean.
    pub equals: Option<toml::Value>,
}

/// Whether a route checks tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuth {
    /// A valid token, meeting the route's rules.
    #[default]
    Required,
    /// Passed through with no token check.
    Anonymous,
}

/// `access_token_typ`: what a token's `typ` header must say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AccessTokenTyp {
    /// `at+jwt` (RFC 9068).
    #[default]
    #[serde(rename = "at+jwt")]
    AtJwt,
    /// Any `typ` (ID tokens still never pass).
    #[serde(rename = "any")]
    Any,
}

/// `[key_manager_sync]`, as written; see `km_sync::settings` for its validated form.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KmSyncSection {
    /// Run the sync inside `serve`.
    #[serde(default)]
    pub enabled: bool,
    /// APIM's base URL, e.g. `https://localhost:9443`.
    pub apim_url: Option<String>,
    /// Default `{apim_url}/api/am/admin/v4`.
    pub admin_api_url: Option<String>,
    /// Default `{apim_url}/oauth2/token`.
    pub token_url: Option<String>,
    /// Default `{apim_url}/client-registration/v0.17/register`.
    pub dcr_url: Option<String>,
    /// `password` (default), `client_credentials` or `basic`.
    pub auth: Option<String>,
    /// The admin user.
    pub username: Option<String>,
    /// Environment variable holding the admin password.
    pub password_env: Option<String>,
    /// File holding the admin password.
    pub password_file: Option<String>,
    /// Inline password: works, with a startup warning.
    pub password: Option<String>,
    /// PEM bundle trusted for APIM's certificate.
    pub ca_file: Option<String>,
    /// Skip TLS verification; refused unless `apim_url` is loopback.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The `[[issuers]]` name the registration describes.
    pub issuer: Option<String>,
    /// The registration's name (default `Asgardeo`).
    pub name: Option<String>,
    /// Managed only when set.
    pub display_name: Option<String>,
    /// Managed only when set.
    pub description: Option<String>,
    /// Default: discovery's `grant_types_supported`.
    pub grant_types: Option<Vec<String>>,
    /// Default: the `{org}` of the issuer's `/t/{org}/`.
    pub org_name: Option<String>,
    /// The Asgardeo management application's client id.
    pub mgmt_client_id: Option<String>,
    /// Environment variable holding the management application's secret.
    pub mgmt_client_secret_env: Option<String>,
    /// File holding the management application's secret.
    pub mgmt_client_secret_file: Option<String>,
    /// Default `{issuer origin}/t/{org}/api/server/v1/api-resources`.
    pub api_resource_management_endpoint: Option<String>,
    /// Default `{issuer origin}/t/{org}/scim2/v2/Roles`.
    pub roles_endpoint: Option<String>,
    /// `DIRECT` (default), `EXCHANGED` or `BOTH`.
    pub token_type: Option<String>,
    /// Seconds between passes (300).
    pub interval_seconds: Option<u64>,
    /// Random 0..jitter added to each interval (10% of the interval).
    pub jitter_seconds: Option<u64>,
    /// Cap of the retry backoff on 5xx and network errors (30).
    pub max_backoff_seconds: Option<u64>,
    /// Timeout of each APIM request (10).
    pub request_timeout_seconds: Option<u64>,
    /// `enableOAuthAppCreation` (true): the Developer Portal may create OAuth clients
    /// ("Generate Keys"). APIM stores `false` when a create body omits it.
    pub oauth_app_creation: Option<bool>,
    /// `enableMapOAuthConsumerApps` (true): existing OAuth clients may be mapped.
    pub map_oauth_consumer_apps: Option<bool>,
    /// `enableTokenGeneration` (true): the Developer Portal may generate tokens.
    pub token_generation: Option<bool>,
    /// The Asgardeo API resource holding the global scopes (`APIM_GLOBAL_SCOPES`); the
    /// connector looks it up by this name and fails when it does not exist.
    pub global_scopes_resource: Option<String>,
}

// === the validated model ===

/// A validated configuration, ready to build the gateway from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (relative paths inside it are relative to its folder).
    pub source: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerSection,
    /// `[upstream]`, validated.
    pub upstream: Upstream,
    /// `[[issuers]]`, validated.
    pub issuers: Vec<IssuerConfig>,
    /// `[[routes]]`, validated.
    pub routes: Vec<RouteConfig>,
    /// Every claim path a `claim_headers` entry names, each once; entries refer to it by index.
    pub claim_paths: Vec<Vec<String>>,
    /// Every claim path a route's `require_claims` or step-up reads, each once: a verified
    /// token keeps these values, so rules on a cached token parse nothing.
    pub rule_paths: Vec<Vec<String>>,
    /// `[key_manager_sync]`, validated.
    pub key_manager_sync: KmSyncConfig,
    /// `[decision]`, validated.
    pub decision: Option<Decision>,
    /// `[server.tls]`, resolved: the proxy listener serves TLS when present.
    pub server_tls: Option<ListenerTls>,
    /// `[shared_state]`, validated.
    pub shared_state: Option<crate::shared_state::settings::SharedStateConfig>,
    /// SHA-256 of the file's text, hex (shown on `/status`, logged on reload).
    pub sha256: String,
}

/// `[decision]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Where the decision listener listens.
    pub listen: SocketAddr,
    /// Its certificate and key, when it serves TLS.
    pub tls: Option<ListenerTls>,
    /// Whose headers describe the original request.
    pub front_proxy: FrontProxy,
}

/// `[key_manager_sync]`, validated once with the rest of the file. A switched-off section
/// must not block start-up, so its problems are kept (for `check-config`'s warnings and for
/// `km-sync --once`, which runs either way) instead of failing the file.
#[derive(Debug, Clone)]
pub enum KmSyncConfig {
    /// No `[key_manager_sync]` section.
    Absent,
    /// `enabled = false`: the settings if complete, or what they still lack.
    Off(Result<Box<Settings>, Vec<ConfigProblem>>),
    /// `enabled = true` (then the section is complete, or the file was refused).
    On(Box<Settings>),
}

impl KmSyncConfig {
    /// The settings the background sync inside `serve` runs with.
    pub fn for_serve(&self) -> Option<&Settings> {
        match self {
            KmSyncConfig::On(s) => Some(s),
            _ => None,
        }
    }

    /// The settings `km-sync --once` runs with, enabled or not; `Ok(None)`: no section.
    pub fn for_one_pass(&self) -> Result<Option<&Settings>, &[ConfigProblem]> {
        match self {
            KmSyncConfig::Absent => Ok(None),
            KmSyncConfig::Off(Ok(s)) | KmSyncConfig::On(s) => Ok(Some(s)),
            KmSyncConfig::Off(Err(problems)) => Err(problems),
        }
    }
}

/// `[upstream]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// The base URL: scheme `http` or `https`, a host and a port.
    pub url: Url,
    /// The host to connect to (an IPv6 address without brackets).
    pub host: String,
    /// The port to connect to.
    pub port: u16,
    /// `host:port` used as the authority of forwarded requests.
    pub authority: String,
    /// How requests are carried.
    pub protocol: UpstreamProtocol,
    /// TLS to the upstream, for an `https://` URL.
    pub tls: Option<UpstreamTls>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response-header timeout.
    pub timeout: Duration,
    /// Pool idle timeout.
    pub pool_idle_timeout: Duration,
    /// Pool size.
    pub pool_max_idle: usize,
    /// Every upstream connection at once, at most.
    pub max_connections: usize,
}

/// TLS to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Only these CAs are trusted (else the public web PKI).
    pub ca_file: Option<PathBuf>,
    /// SNI and the name the certificate must carry: the URL's host.
    pub server_name: String,
}

/// One issuer, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// Short name.
    pub name: String,
    /// The discovery URL to try first.
    pub discovery_url: Url,
    /// Accepted audiences; empty means no check.
    pub audiences: Vec<String>,
    /// The algorithm allow-list (never `none`, never HMAC).
    pub algorithms: Vec<Alg>,
    /// Clock skew allowance in seconds.
    pub leeway: i64,
    /// Refresh interval upper bound.
    pub refresh: Duration,
    /// Refresh interval lower bound (for `Cache-Control: max-age`).
    pub refresh_floor: Duration,
    /// Minimum spacing of unknown-`kid` refetches.
    pub min_refetch: Duration,
    /// Maximum age of the last good key set.
    pub max_stale: Duration,
    /// Per-request timeout for discovery and JWKS.
    pub fetch_timeout: Duration,
    /// Response size limit for discovery and JWKS.
    pub max_response_bytes: usize,
    /// Require `typ: at+jwt` (false with `access_token_typ = "any"`).
    pub require_access_token_typ: bool,
    /// Headers set from this issuer's tokens.
    pub claim_headers: Vec<ClaimHeader>,
    /// How old a DPoP proof may be, in seconds.
    pub dpop_max_age: i64,
    /// Algorithms a DPoP proof may be signed with.
    pub dpop_algorithms: Vec<Alg>,
    /// Only these CAs are trusted for discovery and JWKS (else the public web PKI).
    pub ca_file: Option<PathBuf>,
    /// Tokens revoked before they expire.
    pub deny_list: Option<DenyListConfig>,
    /// Opaque tokens are introspected at this issuer.
    pub introspection: Option<IntrospectionConfig>,
}

/// `[issuers.introspection]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    /// The endpoint written in the file (else the discovery document's).
    pub endpoint: Option<Url>,
    /// The client id.
    pub client_id: String,
    /// Where its secret is (read at start and on each reload, never logged).
    pub client_secret: crate::secret::SecretSource,
    /// Basic or form-body client authentication.
    pub auth: IntrospectionAuth,
    /// Active answers are used this long (seconds), never past `exp`.
    pub cache_seconds: i64,
    /// Inactive answers are used this long (seconds).
    pub negative_cache_seconds: i64,
    /// The whole call.
    pub timeout: Duration,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Answers kept.
    pub cache_entries: u64,
}

/// An issuer's deny list: the file, and where the claims it names are kept in a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyListConfig {
    /// The file (resolved against the configuration's folder).
    pub file: PathBuf,
    /// Index of `jti` in `Config::rule_paths`.
    pub jti: usize,
    /// Index of `sub`.
    pub sub: usize,
    /// Index of `client_id`.
    pub client_id: usize,
}

/// One configured claim header: the header name and the index of its claim path in
/// [`Config::claim_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// The header the upstream gets.
    pub name: http::HeaderName,
    /// Index into `Config::claim_paths`.
    pub path: usize,
}

/// One route, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The metric label.
    pub name: String,
    /// Normalised prefix: starts with `/`, no trailing `/` unless it is `/`.
    pub path_prefix: String,
    /// Upper-case method names; `None` = every method.
    pub methods: Option<Vec<http::Method>>,
    /// Required scopes.
    pub scopes: Vec<String>,
    /// Pass without a token check.
    pub anonymous: bool,
    /// Forward the method-override headers.
    pub method_override: bool,
    /// Headers set from the token on this route (beside the issuer's; a route's entry wins).
    pub claim_headers: Vec<ClaimHeader>,
    /// Plain bearer tokens are refused with a DPoP challenge.
    pub sender_constrained: bool,
    /// The audiences a token must name here, instead of its issuer's (`None`: the issuer's).
    pub audiences: Option<Vec<String>>,
    /// Rules on claims (indices into `Config::rule_paths`).
    pub require_claims: Vec<ClaimRule>,
    /// RFC 9470 step-up requirements.
    pub step_up: Option<StepUp>,
    /// A token bucket per caller.
    pub rate_limit: Option<RateLimitConfig>,
    /// Where `client_id` and `azp` are in a verdict's rule values (a `client_id` rate limit).
    pub client_id_paths: Option<(usize, usize)>,
    /// CORS.
    pub cors: Option<CorsConfig>,
}

/// A validated `require_claims` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRule {
    /// The path as written (for messages).
    pub claim: String,
    /// Index into `Config::rule_paths`.
    pub path: usize,
    /// What the value must satisfy.
    pub test: ClaimTest,
}

/// What a claim's value must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    /// A string in the list, or an array holding one of them.
    AnyOf(Vec<String>),
    /// An array holding every one of them (or a string, when the list has one entry).
    AllOf(Vec<String>),
    /// Exactly this JSON scalar (string, number or boolean).
    Equals(serde_json::Value),
}

/// A route's RFC 9470 requirements (indices into `Config::rule_paths` for `acr`, `auth_time`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepUp {
    /// Accepted `acr` values (empty: any).
    pub acr_values: Vec<String>,
    /// The longest time since `auth_time`.
    pub max_age_seconds: Option<u64>,
    /// Where `acr` is in the verdict's rule values.
    pub acr_path: usize,
    /// Where `auth_time` is.
    pub auth_time_path: usize,
}

impl Config {
    /// Every file the running gateway reads besides the configuration itself: the issuers' CA
    /// bundles, the listeners' certificates and keys, the upstream's CA bundle, the key-manager
    /// sync's CA bundle and secret files. `watch_config_seconds` watches these too.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.issuers.iter().filter_map(|i| i.ca_file.clone()).collect();
        for t in self.server_tls.iter().chain(self.decision.iter().filter_map(|d| d.tls.as_ref())) {
            files.push(t.cert_file.clone());
            files.push(t.key_file.clone());
        }
        if let Some(ca) = self.upstream.tls.as_ref().and_then(|t| t.ca_file.clone()) {
            files.push(ca);
        }
        let sync = match &self.key_manager_sync {
            KmSyncConfig::On(s) => Some(&**s),
            KmSyncConfig::Off(Ok(s)) => Some(&**s),
            _ => None,
        };
        for i in self.issuers.iter().filter_map(|i| i.introspection.as_ref()) {
            if let crate::secret::SecretSource::File(f) = &i.client_secret {
                files.push(f.clone());
            }
        }
        if let Some(s) = sync {
            files.extend(s.ca_file.clone());
            for secret in [&s.password, &s.mgmt_client_secret] {
                if let crate::secret::SecretSource::File(f) = secret {
                    files.push(f.clone());
                }
            }
        }
        files
    }
}

impl Config {
    /// Settings that are valid but most likely a mistake: `serve` logs each at start and on
    /// reload, `check-config` prints each (neither refuses the file).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            if issuer.audiences.is_empty() {
                out.push(format!(
                    "issuers[{i}].audiences = [] ({}): tokens are accepted whatever their aud",
                    issuer.name
                ));
            }
            if !issuer.require_access_token_typ {
                out.push(format!(
                    "issuers[{i}].access_token_typ = \"any\" ({}): tokens without typ at+jwt are accepted \
                     (ID tokens, with a nonce, are still refused)",
                    issuer.name
                ));
            }
        }
        if self.routes.is_empty() {
            out.push("no [[routes]]: every request gets 404".into());
        }
        if self.shared_state.as_ref().is_some_and(|s| s.url_has_password()) {
            out.push(
                "shared_state.redis_url carries a password: it shows wherever the file is read; use password_env or password_file".into(),
            );
        }
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(i) = self.routes[..j].iter().position(|earlier| shadows(earlier, later)) {
                out.push(format!(
                    "routes[{j}] ({}) never matches: routes[{i}] ({}) comes first and covers its path_prefix {:?} and methods",
                    later.name, self.routes[i].name, later.path_prefix
                ));
            }
        }
        if let Some(d) = &self.decision {
            if !d.listen.ip().is_loopback() {
                out.push(format!(
                    "decision.listen = {} is not a loopback address: the decision listener trusts its front \
                     proxy's headers, so only the front proxy may reach it",
                    d.listen
                ));
            }
            if d.front_proxy == FrontProxy::Auto {
                out.push(
                    "decision.front_proxy = \"auto\": name the front proxy (\"nginx\", \"ingress-nginx\", \"traefik\", \
                     \"caddy\", \"envoy\") so that only its headers name the original request; auto refuses a \
                     subrequest carrying two conventions but reads whichever one a client sends alone"
                        .into(),
                );
            }
        }
        out
    }
}

/// A `log_level` that names levels: `info`, or directives `target=level` joined by commas.
/// `tracing`'s filter syntax takes a bare word as a target at the most verbose level, so
/// `log_level = "verbose"` would silence every line jwtgate writes.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    if filter.trim().is_empty() {
        return Err("must name a level (trace, debug, info, warn, error, off)".into());
    }
    for directive in filter.split(',') {
        let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !is_level(level) {
            return Err(format!(
                "{directive:?} is not a level (trace, debug, info, warn, error, off) nor target=level"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| e.to_string())
}

/// True when every request `later` could match is taken by `earlier` first: its prefix covers
/// `later`'s (whole segments) and its methods cover `later`'s (a route listing `GET` also
/// takes `HEAD`).
fn shadows(earlier: &RouteConfig, later: &RouteConfig) -> bool {
    let (a, b) = (earlier.path_prefix.trim_end_matches('/'), later.path_prefix.trim_end_matches('/'));
    let covers_path = a.is_empty() || b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'));
    let covers_methods = match (&earlier.methods, &later.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => {
            l.iter().all(|m| e.contains(m) || (*m == http::Method::HEAD && e.contains(&http::Method::GET)))
        }
    };
    covers_path && covers_methods
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            problems: vec![problem("", format!("cannot read the file: {e}"))],
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: source.map(Path::to_path_buf), problems };
        let de = toml::Deserializer::new(text);
        let file: FileConfig = match serde_path_to_error::deserialize(de) {
            Ok(f) => f,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let msg = toml_message(e.inner());
                return Err(fail(vec![problem(path, msg)]));
            }
        };
        let mut config = validate(file, source).map_err(fail)?;
        config.sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(config)
    }
}

/// toml's message carries a multi-line source excerpt; keep the first sentence and the line.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

/// Bounds of `server.max_token_bytes`.
pub const MIN_TOKEN_BYTES: usize = 64;
/// Upper bound of `server.max_token_bytes`.
pub const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Lower bound of `server.max_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 1024;
/// Upper bound of `server.max_header_bytes`: the longest token plus room for the rest.
pub const MAX_HEADER_BYTES: usize = MAX_TOKEN_BYTES + HEADER_ROOM_FOR_TOKEN;
/// Upper bound of `server.token_cache_entries` (about 1 GiB of cache; more is a typo).
pub const MAX_TOKEN_CACHE_ENTRIES: u64 = 10_000_000;

fn validate(file: FileConfig, source: Option<&Path>) -> Result<Config, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut file = file;
    file.server.resolve_limits();
    let s = &file.server;
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&s.max_token_bytes()) {
        problems.push(problem(
            "server.max_token_bytes",
            format!("must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES}"),
        ));
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes()) {
        problems.push(problem(
            "server.max_header_bytes",
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
        ));
    }
    // Only reachable when both were written: each default follows the other.
    if s.max_token_bytes() + 7 > s.max_header_bytes() {
        problems
            .push(problem("server.max_token_bytes", "must leave room for `Bearer ` within server.max_header_bytes"));
    }
    if let Some(u) = &s.public_base_url {
        let ok = Url::parse(u).ok().filter(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
        });
        if ok.is_none() {
            problems.push(problem(
                "server.public_base_url",
                "must be an http:// or https:// URL with a host and nothing after it (e.g. \"https://api.example.com\")",
            ));
        }
    }
    if s.token_cache_entries > MAX_TOKEN_CACHE_ENTRIES {
        problems.push(problem("server.token_cache_entries", format!("must be at most {MAX_TOKEN_CACHE_ENTRIES}")));
    }
    if s.listen == s.admin_listen && s.listen.port() != 0 {
        problems.push(problem("server.admin_listen", "must differ from server.listen"));
    }
    if let Some(h) = s.health_listen.filter(|h| h.port() != 0) {
        if h == s.listen || h == s.admin_listen || file.decision.as_ref().is_some_and(|d| d.listen == h) {
            problems.push(problem("server.health_listen", "must differ from the other listeners"));
        }
    }
    for (i, name) in s.admin_hosts.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            problems
                .push(problem(format!("server.admin_hosts[{i}]"), "must be a host name (letters, digits, '-', '.')"));
        }
    }
    if let Some(d) = &file.decision {
        if d.listen.port() != 0 && (d.listen == s.listen || d.listen == s.admin_listen) {
            problems.push(problem("decision.listen", "must differ from server.listen and server.admin_listen"));
        }
    }
    if let Err(why) = check_log_filter(&s.log_level) {
        problems.push(problem("server.log_level", why));
    }
    if s.worker_threads > 256 {
        problems.push(problem("server.worker_threads", "must be at most 256"));
    }
    let ranges: [(&str, u64, u64, u64); 12] = [
        ("watch_config_seconds", s.watch_config_seconds, 0, 86_400),
        ("shutdown_delay_seconds", s.shutdown_delay_seconds, 0, 300),
        ("drain_timeout_seconds", s.drain_timeout_seconds, 0, 3600),
        ("tunnel_idle_timeout_seconds", s.tunnel_idle_timeout_seconds, 1, 86_400),
        ("send_timeout_seconds", s.send_timeout_seconds, 1, 3600),
        ("max_concurrent_streams", u64::from(s.max_concurrent_streams), 1, 10_000),
        ("dpop_replay_cache_entries", s.dpop_replay_cache_entries as u64, 1, 100_000_000),
        ("tunnel_max_lifetime_seconds", s.tunnel_max_lifetime_seconds, 1, 604_800),
        ("body_read_timeout_seconds", s.body_read_timeout_seconds, 1, 3600),
        ("header_read_timeout_seconds", s.header_read_timeout_seconds, 1, 3600),
        ("idle_timeout_seconds", s.idle_timeout_seconds, 1, 86_400),
        ("max_connections", s.max_connections as u64, 1, 1_000_000),
    ];
    for (key, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            problems.push(problem(format!("server.{key}"), format!("must be between {lo} and {hi}")));
        }
    }

    let base = base_dir_of(source);
    let server_tls = file.server.tls.as_ref().map(|t| listener_tls(t, &base, "server.tls", &mut problems));
    let decision = file.decision.as_ref().map(|d| Decision {
        listen: d.listen,
        tls: d.tls.as_ref().map(|t| listener_tls(t, &base, "decision.tls", &mut problems)),
        front_proxy: d.front_proxy,
    });
    let upstream = validate_upstream(&file.upstream, &base, &mut problems);
    let mut claim_paths = Vec::new();
    let mut rule_paths = Vec::new();
    let issuers = validate_issuers(&file.issuers, &base, &mut claim_paths, &mut rule_paths, &mut problems);
    let routes = validate_routes(&file.routes, &mut claim_paths, &mut rule_paths, &mut problems);

    // A switched-off `[key_manager_sync]` must not block start-up: its problems are kept,
    // not reported (beyond key names and types, which serde checked).
    let key_manager_sync = match &file.key_manager_sync {
        None => KmSyncConfig::Absent,
        Some(k) => match (k.enabled, Settings::resolve(k, &base, &issuers)) {
            (true, Ok(s)) => KmSyncConfig::On(Box::new(s)),
            (true, Err(mut p)) => {
                problems.append(&mut p);
                KmSyncConfig::Absent
            }
            (false, r) => KmSyncConfig::Off(r.map(Box::new)),
        },
    };

    let shared_state = file.shared_state.as_ref().and_then(|s| {
        crate::shared_state::settings::SharedStateConfig::resolve(s, &base)
            .map_err(|mut p| problems.append(&mut p))
            .ok()
    });

    match upstream {
        Some(upstream) if problems.is_empty() => Ok(Config {
            source: source.map(Path::to_path_buf),
            server: file.server,
            upstream,
            issuers,
            routes,
            claim_paths,
            rule_paths,
            key_manager_sync,
            decision,
            server_tls,
            shared_state,
            sha256: String::new(),
        }),
        _ => Err(problems),
    }
}

/// The folder relative paths in a file at `source` are resolved against.
fn base_dir_of(source: Option<&Path>) -> PathBuf {
    source.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// A `tls` table with its files resolved (they are read when the listener starts or reloads).
fn listener_tls(t: &TlsSection, base: &Path, key: &str, problems: &mut Vec<ConfigProblem>) -> ListenerTls {
    for (name, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
        if v.trim().is_empty() {
            problems.push(problem(format!("{key}.{name}"), "must name a PEM file"));
        }
    }
    ListenerTls { cert_file: base.join(&t.cert_file), key_file: base.join(&t.key_file) }
}

fn validate_upstream(u: &UpstreamSection, base: &Path, problems: &mut Vec<ConfigProblem>) -> Option<Upstream> {
    let url = match Url::parse(&u.url) {
        Ok(url) => url,
        Err(e) => {
            problems.push(problem("upstream.url", format!("not a URL: {e}")));
            return None;
        }
    };
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        _ => {
            problems.push(problem("upstream.url", "must be an http:// or https:// URL"));
            return None;
        }
    };
    match (u.protocol, https) {
        (UpstreamProtocol::H2c, true) => problems.push(problem(
            "upstream.protocol",
            "\"h2c\" is HTTP/2 over plain TCP: use an http:// URL, or protocol = \"h2\" for HTTP/2 over TLS",
        )),
        (UpstreamProtocol::H2, false) => problems.push(problem(
            "upstream.protocol",
            "\"h2\" is HTTP/2 over TLS: use an https:// URL, or protocol = \"h2c\" for HTTP/2 over plain TCP",
        )),
        _ => {}
    }
    if u.ca_file.is_some() && !https {
        problems.push(problem("upstream.ca_file", "applies only to an https:// upstream"));
    }
    let Some(host) = url.host_str() else {
        problems.push(problem("upstream.url", "has no host"));
        return None;
    };
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        problems.push(problem("upstream.url", "must be only scheme, host and port (the path is forwarded unchanged)"));
    }
    let port = url.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
    let ranges: [(&str, u64, u64, u64); 5] = [
        ("max_connections", u.max_connections as u64, 1, 1_000_000),
        ("connect_timeout_seconds", u.connect_timeout_seconds, 1, 300),
        ("timeout_seconds", u.timeout_seconds, 1, 86_400),
        ("pool_idle_timeout_seconds", u.pool_idle_timeout_seconds, 1, 86_400),
        ("pool_max_idle", u.pool_max_idle as u64, 0, 100_000),
    ];
    for (key, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            problems.push(problem(format!("upstream.{key}"), format!("must be between {lo} and {hi}")));
        }
    }
    let authority = match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let tls = https
        .then(|| UpstreamTls { ca_file: u.ca_file.as_ref().map(|f| base.join(f)), server_name: bare_host.clone() });
    Some(Upstream {
        authority,
        host: bare_host,
        port,
        protocol: u.protocol,
        tls,
        url,
        connect_timeout: Duration::from_secs(u.connect_timeout_seconds),
        timeout: Duration::from_secs(u.timeout_seconds),
        pool_idle_timeout: Duration::from_secs(u.pool_idle_timeout_seconds),
        pool_max_idle: u.pool_max_idle,
        max_connections: u.max_connections,
    })
}

/// True for 127.0.0.0/8, ::1 and `localhost`: the only hosts plain `http://` is allowed for.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
        None => false,
    }
}

/// Parses an outbound URL: `https://`, or `http://` on loopback only.
pub fn outbound_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        "http" => return Err("must be https:// (plain http:// is allowed only on loopback)".into()),
        other => return Err(format!("unsupported scheme {other:?}")),
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    Ok(url)
}

/// Names jwtgate sets or that carry the request's framing or credentials: a claim header may
/// not take them (nor any name that folds to them).
const RESERVED_HEADERS: [&str; 17] = [
    "x-jwt-payload",
    "x-jwt-sub",
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "cookie",
];

/// Validates one `claim_headers` table; its paths are added to `paths` (each once).
fn claim_headers(
    table: &std::collections::BTreeMap<String, String>,
    at: &str,
    paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<ClaimHeader> {
    let mut out = Vec::new();
    for (name, path) in table {
        let key = format!("{at}.claim_headers.{name}");
        let lower = name.to_ascii_lowercase();
        let folded = lower.replace(['_', '.'], "-");
        let header = match http::HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) if !RESERVED_HEADERS.contains(&folded.as_str()) && !folded.starts_with("proxy-") => h,
            Ok(_) => {
                problems.push(problem(
                    key,
                    "is a header jwtgate sets or that carries the request's framing or credentials",
                ));
                continue;
            }
            Err(_) => {
                problems.push(problem(key, "is not a valid header name"));
                continue;
            }
        };
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if path.is_empty() || segments.iter().any(String::is_empty) || segments.len() > 16 {
            problems.push(problem(key, "must be a claim name or a dotted path to one (e.g. \"org.id\")"));
            continue;
        }
        let idx = match paths.iter().position(|p| *p == segments) {
            Some(i) => i,
            None => {
                paths.push(segments);
                paths.len() - 1
            }
        };
        out.push(ClaimHeader { name: header, path: idx });
    }
    out
}

fn validate_issuers(
    list: &[IssuerSection],
    base: &Path,
    claim_paths: &mut Vec<Vec<String>>,
    rule_paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<IssuerConfig> {
    if list.is_empty() {
        problems.push(problem("issuers", "at least one [[issuers]] entry is required"));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let mut introspecting = None;
    for (i, s) in list.iter().enumerate() {
        let at = |key: &str| format!("issuers[{i}].{key}");
        if s.name.trim().is_empty() {
            problems.push(problem(at("name"), "must not be empty"));
        } else if !names.insert(s.name.clone()) {
            problems.push(problem(at("name"), format!("{:?} is used by another issuer", s.name)));
        }
        let discovery = match (&s.discovery_url, &s.organization) {
            (Some(_), Some(_)) => {
                problems.push(problem(at("organization"), "set either discovery_url or organization, not both"));
                None
            }
            (None, None) => {
                problems.push(problem(at("discovery_url"), "missing (or set organization = \"<asgardeo org>\")"));
                None
            }
            (Some(u), None) => match outbound_url(u) {
                Ok(url) => Some(url),
                Err(e) => {
                    problems.push(problem(at("discovery_url"), e));
                    None
                }
            },
            (None, Some(org)) => {
                let ok = !org.is_empty()
                    && org.len() <= 100
                    && org.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if ok {
                    Url::parse(&asgardeo_discovery_url(org)).ok()
                } else {
                    problems.push(problem(
                        at("organization"),
                        "must be an Asgardeo organization name (letters, digits, - _ .)",
                    ));
                    None
                }
            }
        };
        let algorithms = algorithm_list(&s.algorithms, &at("algorithms"), problems);
        let ca_file = s.ca_file.as_ref().map(|f| base.join(f));
        if let Some(f) = &ca_file {
            if let Err(e) = crate::fetch::read_ca_bundle(f) {
                problems.push(problem(at("ca_file"), e));
            }
        }
        let dpop_algorithms = match &s.dpop_algorithms {
            Some(list) => algorithm_list(list, &at("dpop_algorithms"), problems),
            None => DEFAULT_DPOP_ALGORITHMS.to_vec(),
        };
        for (j, a) in s.audiences.iter().enumerate() {
            if a.is_empty() {
                problems.push(problem(format!("issuers[{i}].audiences[{j}]"), "must not be empty"));
            }
        }
        // Dependent defaults follow the keys they depend on; only two written values conflict.
        // The refresh interval defaults to 300 s (or half the staleness limit, so a set is
        // refreshed before it goes stale), never below a written floor; the floor defaults to
        // `min(30, interval)`.
        let refresh = s.jwks_refresh_seconds.unwrap_or_else(|| {
            let by_staleness = 300.min((s.jwks_max_stale_seconds.unwrap_or(DEFAULT_MAX_STALE) / 2).max(1));
            by_staleness.max(s.jwks_refresh_min_seconds.unwrap_or(0))
        });
        let refresh_floor = s.jwks_refresh_min_seconds.unwrap_or(30.min(refresh));
        let max_stale = s.jwks_max_stale_seconds.unwrap_or_else(|| DEFAULT_MAX_STALE.max(refresh.saturating_mul(2)));
        let checks: [(&str, u64, u64, u64); 7] = [
            ("dpop_max_age_seconds", s.dpop_max_age_seconds, 1, 3600),
            ("leeway_seconds", s.leeway_seconds, 0, 3600),
            ("jwks_refresh_seconds", refresh, 1, 86_400),
            ("jwks_refresh_min_seconds", refresh_floor, 1, 86_400),
            ("jwks_min_refetch_seconds", s.jwks_min_refetch_seconds, 0, 86_400),
            ("jwks_max_stale_seconds", max_stale, 2, 30 * 86_400),
            ("fetch_timeout_seconds", s.fetch_timeout_seconds, 1, 120),
        ];
        for (key, v, lo, hi) in checks {
            if v < lo || v > hi {
                problems.push(problem(at(key), format!("must be between {lo} and {hi}")));
            }
        }
        if refresh_floor > refresh {
            problems.push(problem(at("jwks_refresh_min_seconds"), "must not exceed jwks_refresh_seconds"));
        }
        // A set refreshed no sooner than it goes stale serves 503s between the two.
        if refresh >= max_stale {
            problems.push(problem(
                at("jwks_refresh_seconds"),
                format!(
                    "({refresh}) must be shorter than {} ({}): the keys would go stale before they are refreshed",
                    at("jwks_max_stale_seconds"),
                    max_stale
                ),
            ));
        }
        if s.max_response_bytes < 1024 || s.max_response_bytes > 16 * 1024 * 1024 {
            problems.push(problem(at("max_response_bytes"), "must be between 1024 and 16777216"));
        }
        let require_access_token_typ = s.access_token_typ == AccessTokenTyp::AtJwt;
        let introspection = s.introspection.as_ref().and_then(|x| introspection(x, base, &at, problems));
        if introspection.is_some() {
            match introspecting {
                Some(first) => problems.push(problem(
                    at("introspection"),
                    format!("issuers[{first}] introspects opaque tokens already: at most one issuer may (an opaque token names no issuer)"),
                )),
                None => introspecting = Some(i),
            }
        }
        let claim_headers = claim_headers(&s.claim_headers, &format!("issuers[{i}]"), claim_paths, problems);
        if let Some(discovery_url) = discovery {
            out.push(IssuerConfig {
                name: s.name.clone(),
                discovery_url,
                audiences: s.audiences.clone(),
                algorithms,
                leeway: s.leeway_seconds as i64,
                refresh: Duration::from_secs(refresh),
                refresh_floor: Duration::from_secs(refresh_floor),
                min_refetch: Duration::from_secs(s.jwks_min_refetch_seconds),
                max_stale: Duration::from_secs(max_stale),
                fetch_timeout: Duration::from_secs(s.fetch_timeout_seconds),
                max_response_bytes: s.max_response_bytes,
                require_access_token_typ,
                claim_headers,
                dpop_max_age: s.dpop_max_age_seconds as i64,
                dpop_algorithms,
                ca_file,
                deny_list: s.deny_list_file.as_ref().map(|f| DenyListConfig {
                    file: base.join(f),
                    jti: path_index(rule_paths, vec!["jti".into()]),
                    sub: path_index(rule_paths, vec!["sub".into()]),
                    client_id: path_index(rule_paths, vec!["client_id".into()]),
                }),
                introspection,
            });
        }
    }
    out
}

/// `[issuers.introspection]` of `issuers[i]` (`at` names its keys), validated.
fn introspection(
    s: &IntrospectionSection,
    base: &Path,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<ConfigProblem>,
) -> Option<IntrospectionConfig> {
    let before = problems.len();
    let key = |k: &str| at(&format!("introspection.{k}"));
    let endpoint = s.endpoint.as_deref().and_then(|e| match outbound_url(e) {
        Ok(u) => Some(u),
        Err(e) => {
            problems.push(problem(key("endpoint"), e));
            None
        }
    });
    if s.client_id.trim().is_empty() {
        problems.push(problem(key("client_id"), "must not be empty"));
    }
    let client_secret = match (&s.client_secret_env, &s.client_secret_file) {
        (Some(e), None) if !e.is_empty() => Some(crate::secret::SecretSource::Env(e.clone())),
        (None, Some(f)) if !f.is_empty() => Some(crate::secret::SecretSource::File(base.join(f))),
        (Some(_), Some(_)) => {
            problems.push(problem(key("client_secret_env"), "set only one of client_secret_env, client_secret_file"));
            None
        }
        _ => {
            problems.push(problem(
                key("client_secret_env"),
                "missing: set client_secret_env or client_secret_file (a secret is never written inline)",
            ));
            None
        }
    };
    let checks: [(&str, u64, u64, u64); 5] = [
        ("cache_seconds", s.cache_seconds, 0, 86_400),
        ("negative_cache_seconds", s.negative_cache_seconds, 0, 3600),
        ("timeout_seconds", s.timeout_seconds, 1, 120),
        ("max_concurrent", s.max_concurrent as u64, 1, 10_000),
        ("cache_entries", s.cache_entries, 16, 16_777_216),
    ];
    for (k, v, lo, hi) in checks {
        if v < lo || v > hi {
            problems.push(problem(key(k), format!("must be between {lo} and {hi}")));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(IntrospectionConfig {
        endpoint,
        client_id: s.client_id.clone(),
        client_secret: client_secret?,
        auth: s.auth,
        cache_seconds: s.cache_seconds as i64,
        negative_cache_seconds: s.negative_cache_seconds as i64,
        timeout: Duration::from_secs(s.timeout_seconds),
        max_concurrent: s.max_concurrent,
        cache_entries: s.cache_entries,
    })
}

/// The DPoP proof algorithms accepted unless `dpop_algorithms` says otherwise: what clients
/// sign proofs with (oidc-provider and oauth4webapi default to ES256; EdDSA/Ed25519 and the
/// RSA ones for the rest).
pub const DEFAULT_DPOP_ALGORITHMS: [Alg; 4] = [Alg::ES256, Alg::PS256, Alg::EdDSA, Alg::RS256];

/// A list of JWS algorithm names at `path`, each once; `none`, HMAC and unknown names refused.
fn algorithm_list(names: &[String], path: &str, problems: &mut Vec<ConfigProblem>) -> Vec<Alg> {
    let mut algorithms = Vec::new();
    if names.is_empty() {
        problems.push(problem(path, "must list at least one algorithm"));
    }
    for (j, a) in names.iter().enumerate() {
        match Alg::from_name(a) {
            Some(alg) => {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg)
                }
            }
            None => {
                let why = if a.eq_ignore_ascii_case("none") {
                    "\"none\" is never accepted".to_string()
                } else if a.to_ascii_uppercase().starts_with("HS") {
                    format!("{a:?} is an HMAC algorithm; keys from a JWKS are public, so HMAC is never accepted")
                } else {
                    format!("{a:?} is not supported (RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA Ed25519)")
                };
                problems.push(problem(format!("{path}[{j}]"), why));
            }
        }
    }
    algorithms
}

/// The discovery URL Asgardeo serves for an organization.
pub fn asgardeo_discovery_url(org: &str) -> String {
    format!("{ASGARDEO_ORIGIN}/t/{org}/oauth2/token/.well-known/openid-configuration")
}

/// The index of `path` in `paths`, added when new.
fn path_index(paths: &mut Vec<Vec<String>>, path: Vec<String>) -> usize {
    match paths.iter().position(|p| *p == path) {
        Some(i) => i,
        None => {
            paths.push(path);
            paths.len() - 1
        }
    }
}

type Policy = (Option<Vec<String>>, Vec<ClaimRule>, Option<StepUp>);

/// A route's audiences, claim rules and step-up, validated; contradictions are problems.
fn route_policy(
    r: &RouteSection,
    at: &dyn Fn(&str) -> String,
    anonymous: bool,
    rule_paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Policy {
    if anonymous {
        for (key, set) in [
            ("audiences", r.audiences.is_some()),
            ("require_claims", !r.require_claims.is_empty()),
            ("acr_values", !r.acr_values.is_empty()),
            ("max_age_seconds", r.max_age_seconds.is_some()),
        ] {
            if set {
                problems.push(problem(at(key), "an anonymous route checks no token"));
            }
        }
        return (None, Vec::new(), None);
    }
    if let Some(a) = &r.audiences {
        if a.is_empty() || a.iter().any(|x| x.is_empty()) {
            problems.push(problem(
                at("audiences"),
                "must name at least one non-empty audience (omit the key to use the issuer's)",
            ));
        }
    }
    let mut rules = Vec::new();
    for (j, rule) in r.require_claims.iter().enumerate() {
        let here = at(&format!("require_claims[{j}]"));
        let segments: Vec<String> = rule.claim.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            problems.push(problem(format!("{here}.claim"), "must be a claim name or a dotted path (realm.roles)"));
            continue;
        }
        let list_ok = |l: &Vec<String>| !l.is_empty() && l.iter().all(|v| !v.is_empty());
        let test = match (&rule.any_of, &rule.all_of, &rule.equals) {
            (Some(l), None, None) if list_ok(l) => ClaimTest::AnyOf(l.clone()),
            (None, Some(l), None) if list_ok(l) => ClaimTest::AllOf(l.clone()),
            (None, None, Some(v)) => match v {
                toml::Value::String(s) => ClaimTest::Equals(serde_json::Value::String(s.clone())),
                toml::Value::Integer(n) => ClaimTest::Equals(serde_json::Value::from(*n)),
                toml::Value::Float(f) => match serde_json::Number::from_f64(*f) {
                    Some(n) => ClaimTest::Equals(serde_json::Value::Number(n)),
                    None => {
                        problems.push(problem(format!("{here}.equals"), "must be a finite number"));
                        continue;
                    }
                },
                toml::Value::Boolean(b) => ClaimTest::Equals(serde_json::Value::Bool(*b)),
                _ => {
                    problems.push(problem(format!("{here}.equals"), "must be a string, a number or a boolean"));
                    continue;
                }
            },
            (None, None, None) => {
                problems.push(problem(here, "needs one test: any_of, all_of or equals"));
                continue;
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                problems.push(problem(here, "any_of and all_of must list at least one non-empty value"));
                continue;
            }
            _ => {
                problems.push(problem(here, "takes exactly one of any_of, all_of and equals"));
                continue;
            }
        };
        let path = path_index(rule_paths, segments);
        rules.push(ClaimRule { claim: rule.claim.clone(), path, test });
    }
    if r.acr_values.iter().any(|v| v.is_empty() || v.contains(['"', '\\'])) {
        problems.push(problem(at("acr_values"), "each value must be non-empty, without quotes or backslashes"));
    }
    if r.max_age_seconds == Some(0) {
        problems.push(problem(at("max_age_seconds"), "must be at least 1"));
    }
    let step_up = (!r.acr_values.is_empty() || r.max_age_seconds.is_some()).then(|| StepUp {
        acr_values: r.acr_values.clone(),
        max_age_seconds: r.max_age_seconds,
        acr_path: path_index(rule_paths, vec!["acr".into()]),
        auth_time_path: path_index(rule_paths, vec!["auth_time".into()]),
    });
    (r.audiences.clone(), rules, step_up)
}

/// A route's CORS section, validated: origins are `*` or `scheme://host[:port]`, methods and
/// header names are HTTP tokens, and `*` never goes with credentials.
fn cors_config(
    c: &CorsSection,
    route_methods: Option<&[String]>,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<ConfigProblem>,
) -> CorsConfig {
    let here = |k: &str| at(&format!("cors.{k}"));
    if c.allowed_origins.is_empty() {
        problems.push(problem(here("allowed_origins"), "must list at least one origin (or \"*\")"));
    }
    for o in &c.allowed_origins {
        let ok = o == "*"
            || url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
                    && u.query().is_none()
                    && u.username().is_empty()
            });
        if !ok {
            problems.push(problem(
                here("allowed_origins"),
                format!("{o:?} is not an origin: \"*\" or scheme://host[:port], no path"),
            ));
        }
    }
    if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
        problems.push(problem(
            here("allow_credentials"),
            "\"*\" with credentials is refused by browsers: list the origins instead",
        ));
    }
    let token =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    let mut list = |key: &str, values: Vec<String>| {
        if values.iter().any(|v| !token(v)) {
            problems.push(problem(here(key), "every entry must be an HTTP token (a method or header name)"));
        }
        values
    };
    let usual = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec();
    let allowed_methods = list(
        "allowed_methods",
        c.allowed_methods.clone().or_else(|| route_methods.map(<[String]>::to_vec)).unwrap_or(usual),
    )
    .into_iter()
    .map(|m| m.to_ascii_uppercase())
    .collect();
    let default_headers = ["authorization", "content-type", "dpop"].map(String::from).to_vec();
    let allowed_headers = list("allowed_headers", c.allowed_headers.clone().unwrap_or(default_headers))
        .into_iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    let expose_headers =
        list("expose_headers", c.expose_headers.clone()).into_iter().map(|h| h.to_ascii_lowercase()).collect();
    CorsConfig {
        allowed_origins: c.allowed_origins.clone(),
        allowed_methods,
        allowed_headers,
        expose_headers,
        max_age_seconds: c.max_age_seconds,
        allow_credentials: c.allow_credentials,
    }
}

fn validate_routes(
    list: &[RouteSection],
    claim_paths: &mut Vec<Vec<String>>,
    rule_paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let at = |key: &str| format!("routes[{i}].{key}");
        let p = r.path_prefix.as_str();
        if !p.starts_with('/') {
            problems.push(problem(at("path_prefix"), "must start with /"));
            continue;
        }
        if p.split('/').any(|seg| seg == "." || seg == "..") || p.contains(['%', '?', ';', '\\']) {
            problems.push(problem(at("path_prefix"), "must be a plain path without . or .. segments, %, ?, ; or \\"));
            continue;
        }
        let mut prefix = p.to_string();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        let anonymous = r.auth == RouteAuth::Anonymous;
        if anonymous && !r.scopes.is_empty() {
            problems.push(problem(at("scopes"), "an anonymous route cannot require scopes"));
        }
        let methods = match &r.methods {
            None => None,
            Some(ms) => {
                if ms.is_empty() {
                    problems.push(problem(at("methods"), "must list at least one method (omit it for every method)"));
                }
                let mut parsed = Vec::new();
                for (j, m) in ms.iter().enumerate() {
                    let upper = m.to_ascii_uppercase();
                    match http::Method::from_bytes(upper.as_bytes()) {
                        Ok(method) if !upper.is_empty() => parsed.push(method),
                        _ => problems
                            .push(problem(format!("routes[{i}].methods[{j}]"), format!("{m:?} is not an HTTP method"))),
                    }
                }
                Some(parsed)
            }
        };
        for (j, sc) in r.scopes.iter().enumerate() {
            if sc.is_empty() || sc.contains(char::is_whitespace) || sc.contains('"') || sc.contains('\\') {
                problems.push(problem(
                    format!("routes[{i}].scopes[{j}]"),
                    "must be one non-empty scope without spaces or quotes",
                ));
            }
        }
        let claim_headers = claim_headers(&r.claim_headers, &format!("routes[{i}]"), claim_paths, problems);
        if anonymous && r.sender_constrained {
            problems.push(problem(at("sender_constrained"), "an anonymous route checks no token"));
        }
        if anonymous && !claim_headers.is_empty() {
            problems.push(problem(at("claim_headers"), "an anonymous route has no token to take claims from"));
        }
        let policy = route_policy(r, &at, anonymous, rule_paths, problems);
        let rate_limit = r.rate_limit.as_ref().and_then(|l| {
            let here = |k: &str| at(&format!("rate_limit.{k}"));
            if anonymous && l.key != RateLimitKey::Ip {
                problems.push(problem(here("key"), "an anonymous route has no token: only \"ip\" can key its limit"));
            }
            if !(l.requests_per_second >= 0.001 && l.requests_per_second <= 1_000_000.0) {
                problems.push(problem(here("requests_per_second"), "must be 0.001..1000000 (above 0)"));
                return None;
            }
            let burst = l.burst.unwrap_or_else(|| l.requests_per_second.ceil().max(1.0) as u32);
            if !(1..=1_000_000).contains(&burst) {
                problems.push(problem(here("burst"), "must be 1..1000000"));
            }
            let max_keys = l.max_keys.unwrap_or(100_000);
            if !(1..=10_000_000).contains(&max_keys) {
                problems.push(problem(here("max_keys"), "must be 1..10000000"));
            }
            Some(RateLimitConfig { key: l.key, requests_per_second: l.requests_per_second, burst, max_keys })
        });
        let cors = r.cors.as_ref().map(|c| cors_config(c, r.methods.as_deref(), &at, problems));
        let client_id_paths = (rate_limit.as_ref().map(|l| l.key) == Some(RateLimitKey::ClientId))
            .then(|| (path_index(rule_paths, vec!["client_id".into()]), path_index(rule_paths, vec!["azp".into()])));
        out.push(RouteConfig {
            name: r.name.clone().unwrap_or_else(|| prefix.clone()),
            path_prefix: prefix,
            methods,
            scopes: r.scopes.clone(),
            anonymous,
            method_override: r.method_override,
            claim_headers,
            sender_constrained: r.sender_constrained,
            audiences: policy.0,
            require_claims: policy.1,
            step_up: policy.2,
            rate_limit,
            client_id_paths,
            cors,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[upstream]
url = "http://127.0.0.1:9000"
[[issuers]]
name = "a"
discovery_url = "http://127.0.0.1:1/t/x/oauth2/token/.well-known/openid-configuration"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, None).expect("valid");
        assert_eq!(c.server.max_token_bytes(), 16384);
        assert_eq!(c.server.max_header_bytes(), 65536);
        assert_eq!(c.issuers[0].refresh_floor, Duration::from_secs(30));
        assert_eq!(c.issuers[0].algorithms, vec![Alg::RS256]);
        assert_eq!(c.issuers[0].leeway, 60);
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nflavour = 1");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].flavour");
        assert!(e.problems[0].message.contains("flavour"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nleeway_seconds = \"x\"");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].leeway_seconds", "{e}");
    }

    #[test]
    fn hmac_and_none_are_refused() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nalgorithms = [\"HS256\", \"none\"]");
        let e = Config::parse(&text, None).unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["issuers[0].algorithms[0]", "issuers[0].algorithms[1]"]);
    }

    #[test]
    fn plain_http_discovery_is_refused_off_loopback() {
        let text = MINIMAL.replace("http://127.0.0.1:1", "http://example.com");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].discovery_url");
    }

    #[test]
    fn organization_expands_to_asgardeo_discovery() {
        let text = MINIMAL.replace(
            "discovery_url = \"http://127.0.0.1:1/t/x/oauth2/token/.well-known/openid-configuration\"",
            "organization = \"myorg\"",
        );
        let c = Config::parse(&text, None).expect("valid");
        assert_eq!(
            c.issuers[0].discovery_url.as_str(),
            "https://api.asgardeo.io/t/myorg/oauth2/token/.well-known/openid-configuration"
        );
    }
}
