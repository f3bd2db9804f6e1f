//! What jwtgate reads of OpenID Connect, below everything that fetches it: the discovery
//! document ([`discovery`]) and the rule every URL jwtgate fetches or calls follows
//! ([`outbound_url`]: `https://`, or plain `http://` on loopback only). The key store, the
//! introspection client, the configuration and the key-manager sync all meet here.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod discovery;

use std::net::IpAddr;

use url::Url;

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
