//! One request, one meaning: wherever a backend could read a request differently from the way
//! jwtgate judged it, the request is refused (two `Host` headers or none on HTTP/1.1, an HTTP/2
//! `host` that disagrees with `:authority`, a transfer coding it cannot forward), or the ambiguous part
//! is removed before forwarding (headers that CGI, WSGI, Rack or PHP would read as one of the
//! headers jwtgate sets from the token, and the method-override headers unless the route opts
//! in). It must stay cheap: the
//! common request is judged in one pass over the header names it already makes.

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Version};

/// Why a request has more than one meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeaningError {
    /// Two `Host` headers (RFC 9112 §3.2).
    DuplicateHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// HTTP/2 `host` naming another authority than `:authority` (RFC 9113 §8.3.1).
    AuthorityMismatch,
    /// A transfer coding other than a single `chunked` (RFC 9112 §6.1: 501): forwarding it
    /// would lose the coding or hand the upstream bytes it was not told about.
    UnsupportedTransferCoding,
    /// A WebSocket upgrade with a body: a backend that declines the upgrade without reading
    /// the body would parse it as a second request, never judged.
    UpgradeWithBody,
}

impl MeaningError {
    /// The description sent in the 400 body.
    pub fn description(self) -> &'static str {
        match self {
            MeaningError::DuplicateHost => "the request has more than one Host header",
            MeaningError::MissingHost => "an HTTP/1.1 request must carry a Host header",
            MeaningError::AuthorityMismatch => "the Host header differs from the request authority",
            MeaningError::UnsupportedTransferCoding => "only the chunked transfer coding is supported",
            MeaningError::UpgradeWithBody => "an upgrade request must not carry a body",
        }
    }
}

/// Checks the request line and `Host` for a second meaning; `websocket` says the request asks
/// to upgrade (the caller has looked already). (Non-canonical method names are the decision's:
/// see `decision`.)
pub fn check<B>(req: &Request<B>, websocket: bool) -> Result<(), MeaningError> {
    let mut codings = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some() || !first.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(MeaningError::UnsupportedTransferCoding);
        }
    }
    if websocket
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req.headers().get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes().trim_ascii() != b"0"))
    {
        return Err(MeaningError::UpgradeWithBody);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(MeaningError::DuplicateHost);
    }
    match req.version() {
        Version::HTTP_11 if first.is_none() => Err(MeaningError::MissingHost),
        Version::HTTP_2 => match (first, req.uri().authority()) {
            (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()) => {
                Err(MeaningError::AuthorityMismatch)
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The host the request names: its `Host` header, or the authority of an HTTP/2 or
/// absolute-form request (`""` when it names none or the header is not text).
pub fn host<B>(req: &Request<B>) -> &str {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// True when `name`, read as CGI-style gateways read it (`_` and `.` as `-`), is `target`.
/// Header names are lower case already.
fn folds_to(name: &[u8], target: &[u8]) -> bool {
    name.len() == target.len()
        && name.iter().zip(target).all(|(&n, &t)| n == t || (t == b'-' && (n == b'_' || n == b'.')))
}

const OVERRIDE_HEADERS: [&[u8]; 3] = [b"x-http-method-override", b"x-http-method", b"x-method-override"];

/// URL-override headers: IIS URL Rewrite, older Symfony and Zend (CVE-2018-14773), and some
/// frameworks behind a proxy serve the path these name instead of the request line's, a path
/// jwtgate never judged.
const URL_OVERRIDE_HEADERS: [&[u8]; 4] = [b"x-original-url", b"x-rewrite-url", b"x-original-uri", b"x-forwarded-uri"];

/// The header names the upstream must only ever get from jwtgate, or never: `x-jwt-payload`,
/// `x-jwt-sub`, every configured claim header, and the URL-override headers. A client's copy
/// under any spelling that folds to one of them (case, `_`, `.`) is removed on every route.
#[derive(Debug, Clone)]
pub struct ProtectedNames {
    names: Vec<Box<[u8]>>,
    /// Bit `n` set when some name (or an override header) is `n` bytes long, and bit `b` of
    /// `firsts` when one starts with byte `b` (folded): the two tests most headers take.
    lengths: u128,
    firsts: u128,
}

impl ProtectedNames {
    /// The claim headers plus `extra` (configured claim-header names).
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> ProtectedNames {
        let mut names: Vec<Box<[u8]>> = vec![Box::from(&b"x-jwt-payload"[..]), Box::from(&b"x-jwt-sub"[..])];
        names.extend(URL_OVERRIDE_HEADERS.iter().map(|n| Box::from(*n)));
        for n in extra {
            let folded: Vec<u8> =
                n.bytes().map(|b| if b == b'_' || b == b'.' { b'-' } else { b.to_ascii_lowercase() }).collect();
            if !names.iter().any(|x| **x == *folded) {
                names.push(folded.into_boxed_slice());
            }
        }
        let mut lengths = 0u128;
        let mut firsts = 0u128;
        for name in names.iter().map(|n| &n[..]).chain(OVERRIDE_HEADERS.iter().copied()) {
            if name.len() < 128 {
                lengths |= 1 << name.len();
            }
            if let Some(&b) = name.first() {
                firsts |= 1 << (b & 127);
            }
        }
        ProtectedNames { names, lengths, firsts }
    }

    fn protects(&self, name: &[u8]) -> bool {
        self.names.iter().any(|t| folds_to(name, t))
    }
}

/// What one header costs of the `max_header_bytes` budget: its name, its value, and the `: `
/// and CRLF around them, as on the wire of HTTP/1.1.
fn header_line_bytes(name: &[u8], value: &http::HeaderValue) -> usize {
    name.len() + value.len() + 4
}

/// The request's headers measured against `max_header_bytes` (the decision listener's budget;
/// the proxy gets the same figure from its [`HeaderScan`]).
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| header_line_bytes(n.as_str().as_bytes(), v)).sum()
}

/// What one pass over the request's header names found.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeaderScan {
    /// Names, values and separators, as `max_header_bytes` counts them.
    pub bytes: usize,
    /// A header that is, or folds to, a protected name (a client's copy of a claim header, or
    /// a URL-override header).
    pub protected: bool,
    /// A method-override header (any spelling).
    pub method_override: bool,
}

impl HeaderScan {
    /// Scans `headers` once.
    pub fn of(headers: &HeaderMap, protected: &ProtectedNames) -> HeaderScan {
        let mut scan = HeaderScan::default();
        for (name, value) in headers {
            let n = name.as_str().as_bytes();
            scan.bytes += header_line_bytes(n, value);
            if n.len() >= 128
                || protected.lengths & (1 << n.len()) == 0
                || protected.firsts & (1 << (n.first().copied().unwrap_or(0) & 127)) == 0
            {
                continue;
            }
            if protected.protects(n) {
                scan.protected = true;
            }
            if OVERRIDE_HEADERS.iter().any(|t| folds_to(n, t)) {
                scan.method_override = true;
            }
        }
        scan
    }

    /// Removes client copies of the protected names (every spelling) and, unless
    /// `keep_override`, the method-override headers.
    pub fn scrub(&self, headers: &mut HeaderMap, protected: &ProtectedNames, keep_override: bool) {
        let drop_override = self.method_override && !keep_override;
        if !self.protected && !drop_override {
            return;
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let n = k.as_str().as_bytes();
                (self.protected && protected.protects(n))
                    || (drop_override && OVERRIDE_HEADERS.iter().any(|t| folds_to(n, t)))
            })
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_fold_to_the_protected_names() {
        let p = ProtectedNames::new(["X-User"]);
        for alias in [
            "x_jwt_sub",
            "x.jwt.sub",
            "x-jwt_sub",
            "x_jwt_payload",
            "x.jwt-payload",
            "x-jwt-sub",
            "x_user",
            "x-original-url",
            "x_rewrite_url",
            "x.original.uri",
            "x-forwarded_uri",
        ] {
            assert!(p.protects(alias.as_bytes()), "{alias}");
        }
        assert!(!p.protects(b"x-jwt-subs"));
        assert!(!p.protects(b"y-jwt-sub"));
        let mut h = HeaderMap::new();
        for n in ["x_jwt_sub", "x.jwt.payload", "x_http_method_override", "x-method-override", "accept", "x.user"] {
            h.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), "v".parse().unwrap());
        }
        let scan = HeaderScan::of(&h, &p);
        assert!(scan.protected && scan.method_override);
        scan.scrub(&mut h, &p, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }
}
