//! CORS for a route (`[routes.cors]`): a browser's preflight is answered by jwtgate — no token
//! needed, never forwarded — and every answer on the route, refusals included (so a page can
//! read a 401), carries `Access-Control-Allow-Origin` for an allowed origin only. Everything
//! is precomputed per route; a request pays one header lookup, and only on such routes.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::CorsConfig;

/// Headers to add to an answer.
pub type CorsHeaders = Vec<(HeaderName, HeaderValue)>;

/// A route's CORS policy, ready to answer.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    credentials: bool,
    methods: HeaderValue,
    allowed_headers: HeaderValue,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

fn value(s: &str) -> HeaderValue {
    // Validated in the configuration: tokens, origins and numbers only.
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

impl Cors {
    /// Precomputes `cfg`'s answers.
    pub fn new(cfg: &CorsConfig) -> Cors {
        Cors {
            any_origin: cfg.allowed_origins.iter().any(|o| o == "*"),
            origins: cfg.allowed_origins.clone(),
            credentials: cfg.allow_credentials,
            methods: value(&cfg.allowed_methods.join(", ")),
            allowed_headers: value(&cfg.allowed_headers.join(", ")),
            expose: (!cfg.expose_headers.is_empty()).then(|| value(&cfg.expose_headers.join(", "))),
            max_age: cfg.max_age_seconds.map(|s| value(&s.to_string())),
        }
    }

    /// The request's `Origin`, when it is an allowed one.
    fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        (self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(text))).then_some(origin)
    }

    /// `Access-Control-Allow-Origin` (the origin itself, or `*` without credentials), and
    /// `Vary: Origin` whenever the answer depends on it.
    fn origin_headers(&self, origin: &HeaderValue, out: &mut CorsHeaders) {
        if self.any_origin && !self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
        } else {
            out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            out.push((header::VARY, HeaderValue::from_static("Origin")));
        }
        if self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
    }

    /// The headers of a preflight's answer: the CORS grant for an allowed origin, else only
    /// `Vary: Origin` (the browser then refuses the actual request).
    pub fn preflight(&self, headers: &HeaderMap) -> CorsHeaders {
        let mut out = Vec::new();
        match self.allowed_origin(headers) {
            Some(origin) => {
                self.origin_headers(origin, &mut out);
                out.push((header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, self.allowed_headers.clone()));
                if let Some(age) = &self.max_age {
                    out.push((header::ACCESS_CONTROL_MAX_AGE, age.clone()));
                }
            }
            None => out.push((header::VARY, HeaderValue::from_static("Origin"))),
        }
        out
    }

    /// The headers every other answer on the route gets (none for a request without an
    /// allowed `Origin`, but `Vary: Origin` when the answer would differ for another origin).
    pub fn response(&self, headers: &HeaderMap) -> Option<Box<CorsHeaders>> {
        let mut out = Vec::new();
        match self.allowed_origin(headers) {
            Some(origin) => {
                self.origin_headers(origin, &mut out);
                if let Some(e) = &self.expose {
                    out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone()));
                }
            }
            None if !self.any_origin || self.credentials => {
                out.push((header::VARY, HeaderValue::from_static("Origin")));
            }
            None => return None,
        }
        Some(Box::new(out))
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`; the method
/// the browser asks about, when it is one.
pub fn preflight_method(method: &http::Method, headers: &HeaderMap) -> Option<http::Method> {
    if method != http::Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    http::Method::from_bytes(asked.as_bytes()).ok()
}

/// Adds `cors` to `headers` (replacing the upstream's own CORS fields, `Vary` appended).
pub fn apply(cors: &CorsHeaders, headers: &mut HeaderMap) {
    for (name, value) in cors {
        if name == header::VARY {
            headers.append(name, value.clone());
        } else {
            headers.insert(name, value.clone());
        }
    }
}
