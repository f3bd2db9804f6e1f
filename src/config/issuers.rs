//! `[[issuers]]` and `[issuers.introspection]`: whom tokens may come from and how each is
//! checked, as written and validated.

use super::*;

/// One `[[issuers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// A short name used in logs, metrics and `validate --issuer`.
    pub name: String,
    /// The OIDC discovery document.
    pub discovery_url: Option<String>,
    /// Shorthand for an Asgardeo organization's discovery URL.
    pub organization: Option<String>,
    /// PEM bundle of the CAs trusted for this IdP's discovery and JWKS (an IdP behind a
    /// private CA; default: the public web PKI). Relative to the configuration file.
    pub ca_file: Option<String>,
    /// The token's `aud` must contain one of these; `[]` means no audience check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accepted JWS algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Re-read discovery, then the JWKS, this often (the upper bound for `Cache-Control`).
    /// Default 300, or half of `jwks_max_stale_seconds` when that is shorter (so that the set
    /// is refreshed before it goes stale), and never below a written `jwks_refresh_min_seconds`.
    pub jwks_refresh_seconds: Option<u64>,
    /// A `Cache-Control: max-age` never makes refreshes more frequent than this. Default
    /// `min(30, jwks_refresh_seconds)`.
    pub jwks_refresh_min_seconds: Option<u64>,
    /// At most one unknown-`kid` refetch per this many seconds.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// How long the last good key set keeps serving while the IdP fails. Default 86400, or
    /// twice `jwks_refresh_seconds` when that is longer (a set must be refreshed before it
    /// goes stale).
    pub jwks_max_stale_seconds: Option<u64>,
    /// Timeout of each discovery and JWKS request.
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_seconds: u64,
    /// The largest discovery or JWKS response accepted.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// `at+jwt` (default): only tokens whose `typ` is `at+jwt` / `application/at+jwt` (RFC
    /// 9068); `any` for IdPs that do not set it (an ID token, with `nonce`, is refused anyway).
    #[serde(default)]
    pub access_token_typ: AccessTokenTyp,
    /// How old a DPoP proof may be (plus the leeway).
    #[serde(default = "default_dpop_max_age")]
    pub dpop_max_age_seconds: u64,
    /// Algorithms a DPoP proof may be signed with: the client's key, not the IdP's, so not the
    /// token's list (an Asgardeo issuer signs RS256; oidc-provider's clients prove with ES256).
    pub dpop_algorithms: Option<Vec<String>>,
    /// Headers the upstream gets from this issuer's tokens: `{ "x-user" = "sub" }`, a dotted
    /// path reaching into objects (`"org.id"`).
    #[serde(default)]
    pub claim_headers: std::collections::BTreeMap<String, String>,
    /// Tokens revoked before they expire (`jti:`, `sub:`, `client_id:` lines).
    pub deny_list_file: Option<String>,
    /// Opaque tokens are judged by this issuer's RFC 7662 introspection endpoint.
    pub introspection: Option<IntrospectionSection>,
}

/// `[issuers.introspection]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSection {
    /// The endpoint; default: the discovery document's `introspection_endpoint`.
    pub endpoint: Option<String>,
    /// The client jwtgate authenticates as (in Asgardeo, the management application).
    pub client_id: String,
    /// The environment variable holding its secret.
    pub client_secret_env: Option<String>,
    /// The file holding its secret (relative to the configuration file).
    pub client_secret_file: Option<String>,
    /// How the client authenticates (RFC 6749 §2.3.1).
    #[serde(default)]
    pub auth: IntrospectionAuth,
    /// How long an active answer is used, never past the token's `exp`.
    #[serde(default = "default_introspection_cache")]
    pub cache_seconds: u64,
    /// How long an inactive (or refused) answer is used.
    #[serde(default = "default_introspection_negative_cache")]
    pub negative_cache_seconds: u64,
    /// The whole call, waiting for a free slot included; then 503.
    #[serde(default = "default_fetch_timeout")]
    pub timeout_seconds: u64,
    /// Calls to the endpoint in flight at once.
    #[serde(default = "default_introspection_concurrency")]
    pub max_concurrent: usize,
    /// Answers kept (a fixed table: a flood of unknown tokens cannot grow memory).
    #[serde(default = "default_introspection_entries")]
    pub cache_entries: u64,
}

/// How jwtgate authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionAuth {
    /// HTTP Basic with the form-encoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

pub(super) fn default_introspection_cache() -> u64 {
    60
}

pub(super) fn default_introspection_negative_cache() -> u64 {
    5
}

pub(super) fn default_introspection_concurrency() -> usize {
    64
}

pub(super) fn default_introspection_entries() -> u64 {
    65_536
}

pub(super) fn default_dpop_max_age() -> u64 {
    60
}

pub(super) fn default_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

pub(super) fn default_leeway() -> u64 {
    60
}

pub(super) fn default_min_refetch() -> u64 {
    10
}

/// `jwks_max_stale_seconds` unless written (or raised to twice a longer refresh interval).
pub(super) const DEFAULT_MAX_STALE: u64 = 86_400;

pub(super) fn default_fetch_timeout() -> u64 {
    5
}

pub(super) fn default_max_response() -> usize {
    1024 * 1024
}

/// `access_token_typ`: what a token's `typ` header must say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AccessTokenTyp {
    /// `at+jwt` (RFC 9068).
    #[default]
    #[serde(rename = "at+jwt")]
    AtJwt,
    /// Any `typ` (ID tokens still never pass).
    #[serde(rename = "any")]
    Any,
}

/// One issuer, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// Short name.
    pub name: String,
    /// The discovery URL to try first.
    pub discovery_url: Url,
    /// Accepted audiences; empty means no check.
    pub audiences: Vec<String>,
    /// The algorithm allow-list (never `none`, never HMAC).
    pub algorithms: Vec<Alg>,
    /// Clock skew allowance in seconds.
    pub leeway: i64,
    /// Refresh interval upper bound.
    pub refresh: Duration,
    /// Refresh interval lower bound (for `Cache-Control: max-age`).
    pub refresh_floor: Duration,
    /// Minimum spacing of unknown-`kid` refetches.
    pub min_refetch: Duration,
    /// Maximum age of the last good key set.
    pub max_stale: Duration,
    /// Per-request timeout for discovery and JWKS.
    pub fetch_timeout: Duration,
    /// Response size limit for discovery and JWKS.
    pub max_response_bytes: usize,
    /// Require `typ: at+jwt` (false with `access_token_typ = "any"`).
    pub require_access_token_typ: bool,
    /// Headers set from this issuer's tokens.
    pub claim_headers: Vec<ClaimHeader>,
    /// How old a DPoP proof may be, in seconds.
    pub dpop_max_age: i64,
    /// Algorithms a DPoP proof may be signed with.
    pub dpop_algorithms: Vec<Alg>,
    /// Only these CAs are trusted for discovery and JWKS (else the public web PKI).
    pub ca_file: Option<PathBuf>,
    /// Tokens revoked before they expire.
    pub deny_list: Option<DenyListConfig>,
    /// Opaque tokens are introspected at this issuer.
    pub introspection: Option<IntrospectionConfig>,
}

/// `[issuers.introspection]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionConfig {
    /// The endpoint written in the file (else the discovery document's).
    pub endpoint: Option<Url>,
    /// The client id.
    pub client_id: String,
    /// Where its secret is (read at start and on each reload, never logged).
    pub client_secret: jwtgate_base::secret::SecretSource,
    /// Basic or form-body client authentication.
    pub auth: IntrospectionAuth,
    /// Active answers are used this long (seconds), never past `exp`.
    pub cache_seconds: i64,
    /// Inactive answers are used this long (seconds).
    pub negative_cache_seconds: i64,
    /// The whole call.
    pub timeout: Duration,
    /// Calls in flight at once.
    pub max_concurrent: usize,
    /// Answers kept.
    pub cache_entries: u64,
}

/// An issuer's deny list: the file, and where the claims it names are kept in a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyListConfig {
    /// The file (resolved against the configuration's folder).
    pub file: PathBuf,
    /// Index of `jti` in `Config::rule_paths`.
    pub jti: usize,
    /// Index of `sub`.
    pub sub: usize,
    /// Index of `client_id`.
    pub client_id: usize,
}

pub(super) fn validate_issuers(
    list: &[IssuerSection],
    base: &Path,
    claim_paths: &mut Vec<Vec<String>>,
    rule_paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<IssuerConfig> {
    if list.is_empty() {
        problems.push(problem("issuers", "at least one [[issuers]] entry is required"));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    let mut introspecting = None;
    for (i, s) in list.iter().enumerate() {
        let at = |key: &str| format!("issuers[{i}].{key}");
        if s.name.trim().is_empty() {
            problems.push(problem(at("name"), "must not be empty"));
        } else if !names.insert(s.name.clone()) {
            problems.push(problem(at("name"), format!("{:?} is used by another issuer", s.name)));
        }
        let discovery = match (&s.discovery_url, &s.organization) {
            (Some(_), Some(_)) => {
                problems.push(problem(at("organization"), "set either discovery_url or organization, not both"));
                None
            }
            (None, None) => {
                problems.push(problem(at("discovery_url"), "missing (or set organization = \"<asgardeo org>\")"));
                None
            }
            (Some(u), None) => match outbound_url(u) {
                Ok(url) => Some(url),
                Err(e) => {
                    problems.push(problem(at("discovery_url"), e));
                    None
                }
            },
            (None, Some(org)) => {
                let ok = !org.is_empty()
                    && org.len() <= 100
                    && org.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
                if ok {
                    Url::parse(&asgardeo_discovery_url(org)).ok()
                } else {
                    problems.push(problem(
                        at("organization"),
                        "must be an Asgardeo organization name (letters, digits, - _ .)",
                    ));
                    None
                }
            }
        };
        let algorithms = algorithm_list(&s.algorithms, &at("algorithms"), problems);
        let ca_file = s.ca_file.as_ref().map(|f| base.join(f));
        if let Some(f) = &ca_file {
            if let Err(e) = crate::fetch::read_ca_bundle(f) {
                problems.push(problem(at("ca_file"), e));
            }
        }
        let dpop_algorithms = match &s.dpop_algorithms {
            Some(list) => algorithm_list(list, &at("dpop_algorithms"), problems),
            None => DEFAULT_DPOP_ALGORITHMS.to_vec(),
        };
        for (j, a) in s.audiences.iter().enumerate() {
            if a.is_empty() {
                problems.push(problem(format!("issuers[{i}].audiences[{j}]"), "must not be empty"));
            }
        }
        // Dependent defaults follow the keys they depend on; only two written values conflict.
        // The refresh interval defaults to 300 s (or half the staleness limit, so a set is
        // refreshed before it goes stale), never below a written floor; the floor defaults to
        // `min(30, interval)`.
        let refresh = s.jwks_refresh_seconds.unwrap_or_else(|| {
            let by_staleness = 300.min((s.jwks_max_stale_seconds.unwrap_or(DEFAULT_MAX_STALE) / 2).max(1));
            by_staleness.max(s.jwks_refresh_min_seconds.unwrap_or(0))
        });
        let refresh_floor = s.jwks_refresh_min_seconds.unwrap_or(30.min(refresh));
        let max_stale = s.jwks_max_stale_seconds.unwrap_or_else(|| DEFAULT_MAX_STALE.max(refresh.saturating_mul(2)));
        let checks: [(&str, u64, u64, u64); 7] = [
            ("dpop_max_age_seconds", s.dpop_max_age_seconds, 1, 3600),
            ("leeway_seconds", s.leeway_seconds, 0, 3600),
            ("jwks_refresh_seconds", refresh, 1, 86_400),
            ("jwks_refresh_min_seconds", refresh_floor, 1, 86_400),
            ("jwks_min_refetch_seconds", s.jwks_min_refetch_seconds, 0, 86_400),
            ("jwks_max_stale_seconds", max_stale, 2, 30 * 86_400),
            ("fetch_timeout_seconds", s.fetch_timeout_seconds, 1, 120),
        ];
        for (key, v, lo, hi) in checks {
            if v < lo || v > hi {
                problems.push(problem(at(key), format!("must be between {lo} and {hi}")));
            }
        }
        if refresh_floor > refresh {
            problems.push(problem(at("jwks_refresh_min_seconds"), "must not exceed jwks_refresh_seconds"));
        }
        // A set refreshed no sooner than it goes stale serves 503s between the two.
        if refresh >= max_stale {
            problems.push(problem(
                at("jwks_refresh_seconds"),
                format!(
                    "({refresh}) must be shorter than {} ({}): the keys would go stale before they are refreshed",
                    at("jwks_max_stale_seconds"),
                    max_stale
                ),
            ));
        }
        if s.max_response_bytes < 1024 || s.max_response_bytes > 16 * 1024 * 1024 {
            problems.push(problem(at("max_response_bytes"), "must be between 1024 and 16777216"));
        }
        let require_access_token_typ = s.access_token_typ == AccessTokenTyp::AtJwt;
        let introspection = s.introspection.as_ref().and_then(|x| introspection(x, base, &at, problems));
        if introspection.is_some() {
            match introspecting {
                Some(first) => problems.push(problem(
                    at("introspection"),
                    format!("issuers[{first}] introspects opaque tokens already: at most one issuer may (an opaque token names no issuer)"),
                )),
                None => introspecting = Some(i),
            }
        }
        let claim_headers = claim_headers(&s.claim_headers, &format!("issuers[{i}]"), claim_paths, problems);
        if let Some(discovery_url) = discovery {
            out.push(IssuerConfig {
                name: s.name.clone(),
                discovery_url,
                audiences: s.audiences.clone(),
                algorithms,
                leeway: s.leeway_seconds as i64,
                refresh: Duration::from_secs(refresh),
                refresh_floor: Duration::from_secs(refresh_floor),
                min_refetch: Duration::from_secs(s.jwks_min_refetch_seconds),
                max_stale: Duration::from_secs(max_stale),
                fetch_timeout: Duration::from_secs(s.fetch_timeout_seconds),
                max_response_bytes: s.max_response_bytes,
                require_access_token_typ,
                claim_headers,
                dpop_max_age: s.dpop_max_age_seconds as i64,
                dpop_algorithms,
                ca_file,
                deny_list: s.deny_list_file.as_ref().map(|f| DenyListConfig {
                    file: base.join(f),
                    jti: path_index(rule_paths, vec!["jti".into()]),
                    sub: path_index(rule_paths, vec!["sub".into()]),
                    client_id: path_index(rule_paths, vec!["client_id".into()]),
                }),
                introspection,
            });
        }
    }
    out
}

/// `[issuers.introspection]` of `issuers[i]` (`at` names its keys), validated.
pub(super) fn introspection(
    s: &IntrospectionSection,
    base: &Path,
    at: &dyn Fn(&str) -> String,
    problems: &mut Vec<ConfigProblem>,
) -> Option<IntrospectionConfig> {
    let before = problems.len();
    let key = |k: &str| at(&format!("introspection.{k}"));
    let endpoint = s.endpoint.as_deref().and_then(|e| match outbound_url(e) {
        Ok(u) => Some(u),
        Err(e) => {
            problems.push(problem(key("endpoint"), e));
            None
        }
    });
    if s.client_id.trim().is_empty() {
        problems.push(problem(key("client_id"), "must not be empty"));
    }
    let client_secret =
        match jwtgate_base::secret::choose(s.client_secret_env.as_deref(), s.client_secret_file.as_deref(), None, base)
        {
            Ok(Some(source)) => Some(source),
            Ok(None) => {
                problems.push(problem(
                    key("client_secret_env"),
                    "missing: set client_secret_env or client_secret_file (a secret is never written inline)",
                ));
                None
            }
            Err(jwtgate_base::secret::ChoiceProblem::Several) => {
                problems
                    .push(problem(key("client_secret_env"), "set only one of client_secret_env, client_secret_file"));
                None
            }
            Err(jwtgate_base::secret::ChoiceProblem::Empty(which)) => {
                problems.push(problem(key(&format!("client_secret_{which}")), "must not be empty"));
                None
            }
        };
    let checks: [(&str, u64, u64, u64); 5] = [
        ("cache_seconds", s.cache_seconds, 0, 86_400),
        ("negative_cache_seconds", s.negative_cache_seconds, 0, 3600),
        ("timeout_seconds", s.timeout_seconds, 1, 120),
        ("max_concurrent", s.max_concurrent as u64, 1, 10_000),
        ("cache_entries", s.cache_entries, 16, 16_777_216),
    ];
    for (k, v, lo, hi) in checks {
        if v < lo || v > hi {
            problems.push(problem(key(k), format!("must be between {lo} and {hi}")));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(IntrospectionConfig {
        endpoint,
        client_id: s.client_id.clone(),
        client_secret: client_secret?,
        auth: s.auth,
        cache_seconds: s.cache_seconds as i64,
        negative_cache_seconds: s.negative_cache_seconds as i64,
        timeout: Duration::from_secs(s.timeout_seconds),
        max_concurrent: s.max_concurrent,
        cache_entries: s.cache_entries,
    })
}

/// The DPoP proof algorithms accepted unless `dpop_algorithms` says otherwise: what clients
/// sign proofs with (oidc-provider and oauth4webapi default to ES256; EdDSA/Ed25519 and the
/// RSA ones for the rest).
pub const DEFAULT_DPOP_ALGORITHMS: [Alg; 4] = [Alg::ES256, Alg::PS256, Alg::EdDSA, Alg::RS256];

/// A list of JWS algorithm names at `path`, each once; `none`, HMAC and unknown names refused.
pub(super) fn algorithm_list(names: &[String], path: &str, problems: &mut Vec<ConfigProblem>) -> Vec<Alg> {
    let mut algorithms = Vec::new();
    if names.is_empty() {
        problems.push(problem(path, "must list at least one algorithm"));
    }
    for (j, a) in names.iter().enumerate() {
        match Alg::from_name(a) {
            Some(alg) => {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg)
                }
            }
            None => {
                let why = if a.eq_ignore_ascii_case("none") {
                    "\"none\" is never accepted".to_string()
                } else if a.to_ascii_uppercase().starts_with("HS") {
                    format!("{a:?} is an HMAC algorithm; keys from a JWKS are public, so HMAC is never accepted")
                } else {
                    format!("{a:?} is not supported (RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA Ed25519)")
                };
                problems.push(problem(format!("{path}[{j}]"), why));
            }
        }
    }
    algorithms
}

/// The discovery URL Asgardeo serves for an organization.
pub fn asgardeo_discovery_url(org: &str) -> String {
    format!("{ASGARDEO_ORIGIN}/t/{org}/oauth2/token/.well-known/openid-configuration")
}
