//! What the pool needs to know about the upstream: the `[upstream]` section as the gateway's
//! configuration validated it (the file model and its checks live with the rest of the file).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

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
