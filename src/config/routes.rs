//! `[[routes]]`: what each path and method requires — scopes, audiences, claim rules, step-up,
//! CORS, rate limits — as written and validated.

use super::*;

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

/// True when every request `later` could match is taken by `earlier` first: its prefix covers
/// `later`'s (whole segments) and its methods cover `later`'s (a route listing `GET` also
/// takes `HEAD`).
pub(super) fn shadows(earlier: &RouteConfig, later: &RouteConfig) -> bool {
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

pub(super) type Policy = (Option<Vec<String>>, Vec<ClaimRule>, Option<StepUp>);

/// A route's audiences, claim rules and step-up, validated; contradictions are problems.
pub(super) fn route_policy(
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
pub(super) fn cors_config(
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

pub(super) fn validate_routes(
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
