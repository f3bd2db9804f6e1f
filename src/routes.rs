//! The route table: the first route whose path prefix (whole segments) and method match wins.
//! Matching runs on the percent-decoded path with repeated slashes folded and path parameters
//! (`;...` to the end of a segment, as Tomcat, Spring and Jetty read them) removed, so
//! `/%6frders`, `//orders` or `/orders;x/42` cannot slip past a protected prefix; paths with
//! `.` or `..` segments (raw, encoded, or followed by `;params`, which Java servers read as
//! `..`) are refused outright. A route that lists `GET` covers `HEAD`; `CONNECT` matches only a
//! route that lists it. The path forwarded upstream is the original, unchanged.

use std::borrow::Cow;

use http::{HeaderValue, Method};

use crate::config::RouteConfig;
use crate::metrics::{Metrics, RouteMetrics};

/// A compiled route with its precomputed challenge and metric handles.
pub struct Route {
    /// The configuration.
    pub cfg: RouteConfig,
    /// `WWW-Authenticate` for 403 on this route (built once).
    pub scope_challenge: HeaderValue,
    /// Metric handles.
    pub metrics: RouteMetrics,
    /// The route's rate limiter (`[routes.rate_limit]`).
    pub limiter: Option<crate::rate_limit::RateLimiter>,
    /// The route's CORS policy (`[routes.cors]`).
    pub cors: Option<crate::cors::Cors>,
}

/// The ordered routes plus the handles used when nothing matches.
pub struct RouteTable {
    routes: Vec<Route>,
    /// Metrics for requests that match no route, or are refused before routing.
    pub unmatched: RouteMetrics,
}

/// Why a path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// Bad percent-encoding or a decoded path that is not UTF-8.
    BadEncoding,
}

impl PathError {
    /// The description sent in the 400 body.
    pub fn description(self) -> &'static str {
        match self {
            PathError::DotSegment => "the path contains . or .. segments",
            PathError::BadEncoding => "the path is not valid percent-encoded UTF-8",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The form of `path` routes are matched against: percent-decoded, `//` folded, no dot segments.
pub fn match_form(path: &str) -> Result<Cow<'_, str>, PathError> {
    let simple = !path.contains('%') && !path.contains("//") && !path.contains(';');
    let decoded: Cow<'_, str> = if simple {
        Cow::Borrowed(path)
    } else {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let (Some(h), Some(l)) =
                    (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
                else {
                    return Err(PathError::BadEncoding);
                };
                out.push(h * 16 + l);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        let mut folded = Vec::with_capacity(out.len());
        let mut in_params = false;
        for b in out {
            match b {
                b'/' => in_params = false,
                // Path parameters run to the end of the segment: `/..;x/` is `/../` to Tomcat.
                b';' => in_params = true,
                _ if in_params => continue,
                _ => {}
            }
            if in_params || (b == b'/' && folded.last() == Some(&b'/')) {
                continue;
            }
            folded.push(b);
        }
        Cow::Owned(String::from_utf8(folded).map_err(|_| PathError::BadEncoding)?)
    };
    if decoded.split(['/', '\\']).any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(decoded)
}

/// True when `route` accepts `method`: HEAD is GET without a body, so a route listing `GET`
/// covers it; `CONNECT` (a tunnel, not a request for the path) only where a route lists it.
fn method_matches(route: &Route, method: &Method) -> bool {
    match &route.cfg.methods {
        None => method != Method::CONNECT,
        Some(ms) => ms.contains(method) || (method == Method::HEAD && ms.contains(&Method::GET)),
    }
}

/// True when `prefix` matches `path` on whole segments.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl RouteTable {
    /// Compiles the configured routes; their metrics carry `listener` (`proxy`, `decision`).
    pub fn new(
        routes: &[RouteConfig],
        metrics: &Metrics,
        listener: &str,
        clock: &std::sync::Arc<dyn jwtgate_base::clock::Clock>,
        shared: Option<&std::sync::Arc<crate::shared_state::SharedStore>>,
    ) -> RouteTable {
        RouteTable {
            routes: routes
                .iter()
                .map(|r| {
                    let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", r.scopes.join(" "));
                    Route {
                        // Scopes are validated to be free of quotes, backslashes and controls.
                        scope_challenge: HeaderValue::from_str(&challenge)
                            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"insufficient_scope\"")),
                        metrics: metrics.route(listener, &r.name),
                        limiter: r.rate_limit.as_ref().map(|l| {
                            crate::rate_limit::RateLimiter::new(l, clock.clone()).shared_in(shared.cloned(), &r.name)
                        }),
                        cors: r.cors.as_ref().map(crate::cors::Cors::new),
                        cfg: r.clone(),
                    }
                })
                .collect(),
            unmatched: metrics.route(listener, ""),
        }
    }

    /// The first route matching the (already normalised) path and the method.
    pub fn find(&self, path: &str, method: &Method) -> Option<&Route> {
        self.routes.iter().find(|r| prefix_matches(&r.cfg.path_prefix, path) && method_matches(r, method))
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/orders", "/orders"));
        assert!(prefix_matches("/orders", "/orders/7"));
        assert!(!prefix_matches("/orders", "/ordersX"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn match_form_decodes_and_refuses_dots() {
        assert_eq!(match_form("/%6frders/1").unwrap(), "/orders/1");
        assert_eq!(match_form("//orders").unwrap(), "/orders");
        assert_eq!(match_form("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(match_form("/a/%2e%2E/b"), Err(PathError::DotSegment));
        assert_eq!(match_form("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(match_form("/a%2F..%2Fb"), Err(PathError::DotSegment));
        assert_eq!(match_form("/a/%zz"), Err(PathError::BadEncoding));
        assert_eq!(match_form("/a/.well-known").unwrap(), "/a/.well-known");
        assert_eq!(match_form("/public/..;/orders/42"), Err(PathError::DotSegment));
        assert_eq!(match_form("/public/.;/orders/42"), Err(PathError::DotSegment));
        assert_eq!(match_form("/public/%2e%2e;/orders/42"), Err(PathError::DotSegment));
        assert_eq!(match_form("/public/..%3bx/orders/42"), Err(PathError::DotSegment));
        assert_eq!(match_form("/orders;jsessionid=1/42").unwrap(), "/orders/42");
        assert_eq!(match_form("/orders;x").unwrap(), "/orders");
    }
}
