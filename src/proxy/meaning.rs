//! One request, one meaning: wherever a backend could read a request differently from the way
//! jwtgate judged it, the request is refused (non-canonical method names, two `Host` headers or
//! none on HTTP/1.1, an HTTP/2 `host` that disagrees with `:authority`), or the ambiguous part
//! is removed before forwarding (headers that CGI, WSGI, Rack or PHP would read as the claim
//! headers, and the method-override headers unless the route opts in). It must stay cheap: the
//! common request is judged in one pass over the header names it already makes.

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Version};

/// Why a request has more than one meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeaningError {
    /// A method name with lower-case letters (`get`): frameworks upper-case it and run GET.
    NonCanonicalMethod,
    /// Two `Host` headers (RFC 9112 §3.2).
    DuplicateHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// HTTP/2 `host` naming another authority than `:authority` (RFC 9113 §8.3.1).
    AuthorityMismatch,
    /// A transfer coding other than a single `chunked` (RFC 9112 §6.1: 501): forwarding it
    /// would lose the coding or hand the upstream bytes it was not told about.
    UnsupportedTransferCoding,
}

impl MeaningError {
    /// The description sent in the 400 body.
    pub fn description(self) -> &'static str {
        match self {
            MeaningError::NonCanonicalMethod => "the method name must be upper case",
            MeaningError::DuplicateHost => "the request has more than one Host header",
            MeaningError::MissingHost => "an HTTP/1.1 request must carry a Host header",
            MeaningError::AuthorityMismatch => "the Host header differs from the request authority",
            MeaningError::UnsupportedTransferCoding => "only the chunked transfer coding is supported",
        }
    }
}

/// Checks the request line and `Host` for a second meaning.
pub fn check<B>(req: &Request<B>) -> Result<(), MeaningError> {
    if req.method().as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(MeaningError::NonCanonicalMethod);
    }
    let mut codings = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some() || !first.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(MeaningError::UnsupportedTransferCoding);
        }
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

/// True when `name`, read as CGI-style gateways read it (`_` and `.` as `-`), is `target`.
/// Header names are lower case already.
fn folds_to(name: &[u8], target: &[u8]) -> bool {
    name.len() == target.len()
        && name.iter().zip(target).all(|(&n, &t)| n == t || (t == b'-' && (n == b'_' || n == b'.')))
}

const CLAIM_HEADERS: [&[u8]; 2] = [b"x-jwt-sub", b"x-jwt-payload"];
const OVERRIDE_HEADERS: [&[u8]; 3] = [b"x-http-method-override", b"x-http-method", b"x-method-override"];

/// What one pass over the request's header names found.
#[derive(Debug, Default, Clone, Copy)]
pub struct HeaderScan {
    /// Names, values and separators, as `max_header_bytes` counts them.
    pub bytes: usize,
    /// A header that is, or folds to, `x-jwt-sub` / `x-jwt-payload` under another spelling.
    pub claim_alias: bool,
    /// A method-override header (any spelling).
    pub method_override: bool,
}

impl HeaderScan {
    /// Scans `headers` once.
    pub fn of(headers: &HeaderMap) -> HeaderScan {
        let mut scan = HeaderScan::default();
        for (name, value) in headers {
            let n = name.as_str().as_bytes();
            scan.bytes += n.len() + value.len() + 4;
            // Every name of interest starts with `x` and has one of five lengths.
            if n.first() != Some(&b'x') || !matches!(n.len(), 9 | 13 | 17 | 22) {
                continue;
            }
            if CLAIM_HEADERS.iter().any(|t| folds_to(n, t) && n != *t) {
                scan.claim_alias = true;
            }
            if OVERRIDE_HEADERS.iter().any(|t| folds_to(n, t)) {
                scan.method_override = true;
            }
        }
        scan
    }

    /// Removes the claim-header aliases and, unless `keep_override`, the method-override
    /// headers. The exact claim-header names are replaced or removed by the caller.
    pub fn scrub(&self, headers: &mut HeaderMap, keep_override: bool) {
        let drop_override = self.method_override && !keep_override;
        if !self.claim_alias && !drop_override {
            return;
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| {
                let n = k.as_str().as_bytes();
                (self.claim_alias && CLAIM_HEADERS.iter().any(|t| folds_to(n, t) && n != *t))
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
    fn aliases_fold_to_the_claim_headers() {
        for alias in ["x_jwt_sub", "x.jwt.sub", "x-jwt_sub", "x_jwt_payload", "x.jwt-payload"] {
            assert!(CLAIM_HEADERS.iter().any(|t| folds_to(alias.as_bytes(), t)), "{alias}");
        }
        assert!(!folds_to(b"x-jwt-subs", b"x-jwt-sub"));
        assert!(!folds_to(b"y-jwt-sub", b"x-jwt-sub"));
        let mut h = HeaderMap::new();
        for n in ["x_jwt_sub", "x.jwt.payload", "x_http_method_override", "x-method-override", "accept"] {
            h.insert(HeaderName::from_bytes(n.as_bytes()).unwrap(), "v".parse().unwrap());
        }
        let scan = HeaderScan::of(&h);
        assert!(scan.claim_alias && scan.method_override);
        scan.scrub(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }
}
