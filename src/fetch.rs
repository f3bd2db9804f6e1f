//! Bounded outbound GETs for discovery documents and JWKS: a timeout on the whole exchange, a
//! cap on the body size (checked while streaming, so a huge answer is cut off, not buffered),
//! and the `Cache-Control: max-age` of the answer. It never retries; callers own the policy.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use url::Url;

/// Why a fetch failed, in words fit for a log line and a `detail`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Connection refused, DNS, TLS, reset.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// No complete answer within the timeout.
    #[error("{url} did not answer within {secs} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// A non-2xx status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeded the limit.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body, at most the limit.
    pub body: Bytes,
    /// `Cache-Control: max-age`, when present (and no `no-store`/`no-cache`).
    pub max_age: Option<Duration>,
}

/// The shared outbound client for the IdP (rustls, no cookies, at most 3 redirects).
#[derive(Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    /// Why this fetcher cannot fetch at all (an issuer's `ca_file` that no longer loads): every
    /// fetch fails with it, so the issuer shows the reason and answers 503, never trusting
    /// another CA instead.
    broken: Option<String>,
}

/// The certificates of a PEM bundle; an unreadable file, a malformed one or one without any
/// certificate is an error naming the file.
pub fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not a PEM bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: contains no PEM certificate", path.display()));
    }
    Ok(certs)
}

impl HttpFetcher {
    fn builder() -> reqwest::ClientBuilder {
        idp_client_builder(reqwest::redirect::Policy::limited(3))
    }

    /// Builds the client. Fails only if the TLS backend cannot start.
    pub fn new() -> Result<HttpFetcher, reqwest::Error> {
        Ok(HttpFetcher { client: HttpFetcher::builder().build()?, broken: None })
    }

    /// This fetcher, or one that trusts only the CAs in `ca_file` (an IdP behind a private CA).
    pub fn with_ca_file(&self, ca_file: Option<&std::path::Path>) -> HttpFetcher {
        let Some(path) = ca_file else { return self.clone() };
        let built = trusting_only(HttpFetcher::builder(), path)
            .and_then(|b| b.build().map_err(|e| format!("{}: {}", path.display(), error_chain(&e))));
        match built {
            Ok(client) => HttpFetcher { client, broken: None },
            Err(e) => {
                tracing::error!("issuer ca_file {e}; this issuer's keys cannot be fetched");
                HttpFetcher { client: self.client.clone(), broken: Some(format!("ca_file {e}")) }
            }
        }
    }

    /// GETs `url`, expecting JSON, within `timeout` of `clock`'s time and `limit` bytes.
    pub async fn get(
        &self,
        url: &Url,
        timeout: Duration,
        limit: usize,
        clock: &dyn jwtgate_base::clock::Clock,
    ) -> Result<Fetched, FetchError> {
        match jwtgate_base::clock::timeout(clock, timeout, self.get_inner(url, limit)).await {
            Some(r) => r,
            None => Err(FetchError::Timeout { url: url.to_string(), secs: timeout.as_secs() }),
        }
    }

    async fn get_inner(&self, url: &Url, limit: usize) -> Result<Fetched, FetchError> {
        if let Some(why) = &self.broken {
            return Err(FetchError::Unreachable { url: url.to_string(), reason: why.clone() });
        }
        let unreachable = |e: reqwest::Error| FetchError::Unreachable { url: url.to_string(), reason: error_chain(&e) };
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status { url: url.to_string(), status: status.as_u16() });
        }
        let max_age =
            resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(parse_max_age);
        match read_limited(&mut resp, limit).await.map_err(unreachable)? {
            Some(body) => Ok(Fetched { body, max_age }),
            None => Err(FetchError::TooLarge { url: url.to_string(), limit }),
        }
    }
}

/// A response's body, at most `limit` bytes, checked while it streams (a huge answer is cut
/// off, not buffered); `None` when it is longer.
pub async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Option<Bytes>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// A client builder for an IdP: jwtgate's user agent, idle connections kept a minute, `redirect`.
pub fn idp_client_builder(redirect: reqwest::redirect::Policy) -> reqwest::ClientBuilder {
    jwtgate_tls::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(redirect)
        .user_agent(concat!("jwtgate/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(Duration::from_secs(60))
}

/// `builder`, trusting only the CAs in the PEM bundle at `ca_file` (an IdP behind a private CA).
pub fn trusting_only(
    builder: reqwest::ClientBuilder,
    ca_file: &std::path::Path,
) -> Result<reqwest::ClientBuilder, String> {
    let mut b = builder.tls_built_in_root_certs(false);
    for c in read_ca_bundle(ca_file)? {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

pub use jwtgate_base::error_chain;

/// `max-age=N` from a Cache-Control value; `no-store`/`no-cache` mean "no hint".
pub fn parse_max_age(v: &str) -> Option<Duration> {
    let mut age = None;
    for d in v.split(',') {
        let d = d.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return None;
        }
        if let Some((k, val)) = d.split_once('=') {
            if k.trim().eq_ignore_ascii_case("max-age") {
                age = val.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
            }
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read() {
        assert_eq!(parse_max_age("public, max-age=120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_max_age("no-cache, max-age=120"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
