//! `[upstream]`: the protected API, as written and validated (and the outbound-URL rule every
//! fetched URL follows).

use super::*;

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

pub(super) fn default_protocol() -> UpstreamProtocol {
    UpstreamProtocol::Http1
}

pub(super) fn default_connect_timeout() -> u64 {
    5
}

pub(super) fn default_upstream_timeout() -> u64 {
    30
}

pub(super) fn default_pool_idle() -> u64 {
    90
}

pub(super) fn default_pool_max_idle() -> usize {
    256
}

pub(super) fn default_upstream_max_connections() -> usize {
    1024
}

pub use jwtgate_upstream::{Upstream, UpstreamProtocol, UpstreamTls};

pub(super) fn validate_upstream(
    u: &UpstreamSection,
    base: &Path,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Upstream> {
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

pub use jwtgate_oidc::{is_loopback_host, outbound_url};
