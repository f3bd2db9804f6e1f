//! `[server]` and `[decision]`: the listeners, their limits and logging, as written and validated.

use super::*;

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
pub(super) const HEADER_ROOM_FOR_TOKEN: usize = 8 * 1024;

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
    pub(super) fn resolve_limits(&mut self) {
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

/// A `log_level` that names levels: `info`, or directives `target=level` joined by commas.
/// `tracing`'s filter syntax takes a bare word as a target at the most verbose level, so
/// `log_level = "verbose"` would silence every line jwtgate writes.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
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

/// A `tls` table with its files resolved (they are read when the listener starts or reloads).
pub(super) fn listener_tls(t: &TlsSection, base: &Path, key: &str, problems: &mut Vec<ConfigProblem>) -> ListenerTls {
    for (name, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
        if v.trim().is_empty() {
            problems.push(problem(format!("{key}.{name}"), "must name a PEM file"));
        }
    }
    ListenerTls { cert_file: base.join(&t.cert_file), key_file: base.join(&t.key_file) }
}
