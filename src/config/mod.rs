//! The TOML configuration: the file model (`serde`, `deny_unknown_fields`), its defaults and
//! its validation into typed, ready-to-use values. Every problem is reported with the key path
//! (`issuers[0].discovery_url: ...`) and never with a panic. Secrets are not read here; the
//! key-manager sync, the introspection client and the shared store read them when they are built.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use jwtgate_jose::alg::Alg;
use jwtgate_km_sync::settings::Settings;
pub use jwtgate_tls::ListenerTls;

// One file per section: the file model, its defaults and its validation side by side. The
// whole file, the validated `Config`, and what several sections share stay here.
mod issuers;
mod km_sync;
mod routes;
mod server;
pub mod shared_state;
mod upstream;
pub use issuers::*;
pub use km_sync::*;
pub use routes::*;
pub use server::*;
pub use upstream::*;

/// The host of Asgardeo's cloud service; `organization = "x"` expands against it.
pub const ASGARDEO_ORIGIN: &str = "https://api.asgardeo.io";

/// One configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key path, e.g. `issuers[0].discovery_url`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, in one sentence.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file, when one was read.
    pub file: Option<PathBuf>,
    /// The problems, in file order where possible.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "invalid configuration {}:", p.display())?,
            None => write!(f, "invalid configuration:")?,
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { path: path.into(), message: message.into() }
}

// === the file model ===

/// The whole file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`: listeners and request limits.
    #[serde(default)]
    pub server: ServerSection,
    /// `[upstream]`: the protected API.
    pub upstream: UpstreamSection,
    /// `[[issuers]]`: the token issuers trusted.
    #[serde(default)]
    pub issuers: Vec<IssuerSection>,
    /// `[[routes]]`: first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// `[key_manager_sync]`: the WSO2 APIM key-manager registration.
    pub key_manager_sync: Option<KmSyncSection>,
    /// `[decision]`: the listener answering auth subrequests (absent = off).
    pub decision: Option<DecisionSection>,
    /// `[shared_state]`: what every replica shares (absent = each process on its own).
    pub shared_state: Option<shared_state::SharedStateSection>,
}

// === the validated model ===

/// A validated configuration, ready to build the gateway from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (relative paths inside it are relative to its folder).
    pub source: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerSection,
    /// `[upstream]`, validated.
    pub upstream: Upstream,
    /// `[[issuers]]`, validated.
    pub issuers: Vec<IssuerConfig>,
    /// `[[routes]]`, validated.
    pub routes: Vec<RouteConfig>,
    /// Every claim path a `claim_headers` entry names, each once; entries refer to it by index.
    pub claim_paths: Vec<Vec<String>>,
    /// Every claim path a route's `require_claims` or step-up reads, each once: a verified
    /// token keeps these values, so rules on a cached token parse nothing.
    pub rule_paths: Vec<Vec<String>>,
    /// `[key_manager_sync]`, validated.
    pub key_manager_sync: KmSyncConfig,
    /// `[decision]`, validated.
    pub decision: Option<Decision>,
    /// `[server.tls]`, resolved: the proxy listener serves TLS when present.
    pub server_tls: Option<ListenerTls>,
    /// `[shared_state]`, validated.
    pub shared_state: Option<shared_state::SharedStateConfig>,
    /// SHA-256 of the file's text, hex (shown on `/status`, logged on reload).
    pub sha256: String,
}

/// One configured claim header: the header name and the index of its claim path in
/// [`Config::claim_paths`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// The header the upstream gets.
    pub name: http::HeaderName,
    /// Index into `Config::claim_paths`.
    pub path: usize,
}

impl Config {
    /// Every file the running gateway reads besides the configuration itself: the issuers' CA
    /// bundles, the listeners' certificates and keys, the upstream's CA bundle, the key-manager
    /// sync's CA bundle and secret files. `watch_config_seconds` watches these too.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.issuers.iter().filter_map(|i| i.ca_file.clone()).collect();
        for t in self.server_tls.iter().chain(self.decision.iter().filter_map(|d| d.tls.as_ref())) {
            files.push(t.cert_file.clone());
            files.push(t.key_file.clone());
        }
        if let Some(ca) = self.upstream.tls.as_ref().and_then(|t| t.ca_file.clone()) {
            files.push(ca);
        }
        // The sync's files whether it runs here or only in `km-sync --once`.
        let sync = self.key_manager_sync.for_one_pass().ok().flatten();
        for i in self.issuers.iter().filter_map(|i| i.introspection.as_ref()) {
            if let jwtgate_base::secret::SecretSource::File(f) = &i.client_secret {
                files.push(f.clone());
            }
        }
        if let Some(s) = sync {
            files.extend(s.ca_file.clone());
            for secret in [&s.password, &s.mgmt_client_secret] {
                if let jwtgate_base::secret::SecretSource::File(f) = secret {
                    files.push(f.clone());
                }
            }
        }
        files
    }
}

impl Config {
    /// Settings that are valid but most likely a mistake: `serve` logs each at start and on
    /// reload, `check-config` prints each (neither refuses the file).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            if issuer.audiences.is_empty() {
                out.push(format!(
                    "issuers[{i}].audiences = [] ({}): tokens are accepted whatever their aud",
                    issuer.name
                ));
            }
            if !issuer.require_access_token_typ {
                out.push(format!(
                    "issuers[{i}].access_token_typ = \"any\" ({}): tokens without typ at+jwt are accepted \
                     (ID tokens, with a nonce, are still refused)",
                    issuer.name
                ));
            }
        }
        if self.routes.is_empty() {
            out.push("no [[routes]]: every request gets 404".into());
        }
        if self.shared_state.as_ref().is_some_and(|s| s.url_has_password()) {
            out.push(
                "shared_state.redis_url carries a password: it shows wherever the file is read; use password_env or password_file".into(),
            );
        }
        for (j, later) in self.routes.iter().enumerate() {
            if let Some(i) = self.routes[..j].iter().position(|earlier| shadows(earlier, later)) {
                out.push(format!(
                    "routes[{j}] ({}) never matches: routes[{i}] ({}) comes first and covers its path_prefix {:?} and methods",
                    later.name, self.routes[i].name, later.path_prefix
                ));
            }
        }
        if let Some(d) = &self.decision {
            if !d.listen.ip().is_loopback() {
                out.push(format!(
                    "decision.listen = {} is not a loopback address: the decision listener trusts its front \
                     proxy's headers, so only the front proxy may reach it",
                    d.listen
                ));
            }
            if d.front_proxy == FrontProxy::Auto {
                out.push(
                    "decision.front_proxy = \"auto\": name the front proxy (\"nginx\", \"ingress-nginx\", \"traefik\", \
                     \"caddy\", \"envoy\") so that only its headers name the original request; auto refuses a \
                     subrequest carrying two conventions but reads whichever one a client sends alone"
                        .into(),
                );
            }
        }
        out
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            problems: vec![problem("", format!("cannot read the file: {e}"))],
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError { file: source.map(Path::to_path_buf), problems };
        let de = toml::Deserializer::new(text);
        let file: FileConfig = match serde_path_to_error::deserialize(de) {
            Ok(f) => f,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let msg = toml_message(e.inner());
                return Err(fail(vec![problem(path, msg)]));
            }
        };
        let mut config = validate(file, source).map_err(fail)?;
        config.sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(config)
    }
}

/// toml's message carries a multi-line source excerpt; keep the first sentence and the line.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

fn validate(file: FileConfig, source: Option<&Path>) -> Result<Config, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut file = file;
    file.server.resolve_limits();
    let s = &file.server;
    if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&s.max_token_bytes()) {
        problems.push(problem(
            "server.max_token_bytes",
            format!("must be between {MIN_TOKEN_BYTES} and {MAX_TOKEN_BYTES}"),
        ));
    }
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes()) {
        problems.push(problem(
            "server.max_header_bytes",
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
        ));
    }
    // Only reachable when both were written: each default follows the other.
    if s.max_token_bytes() + 7 > s.max_header_bytes() {
        problems
            .push(problem("server.max_token_bytes", "must leave room for `Bearer ` within server.max_header_bytes"));
    }
    if let Some(u) = &s.public_base_url {
        let ok = Url::parse(u).ok().filter(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
        });
        if ok.is_none() {
            problems.push(problem(
                "server.public_base_url",
                "must be an http:// or https:// URL with a host and nothing after it (e.g. \"https://api.example.com\")",
            ));
        }
    }
    if s.token_cache_entries > MAX_TOKEN_CACHE_ENTRIES {
        problems.push(problem("server.token_cache_entries", format!("must be at most {MAX_TOKEN_CACHE_ENTRIES}")));
    }
    if s.listen == s.admin_listen && s.listen.port() != 0 {
        problems.push(problem("server.admin_listen", "must differ from server.listen"));
    }
    if let Some(h) = s.health_listen.filter(|h| h.port() != 0) {
        if h == s.listen || h == s.admin_listen || file.decision.as_ref().is_some_and(|d| d.listen == h) {
            problems.push(problem("server.health_listen", "must differ from the other listeners"));
        }
    }
    for (i, name) in s.admin_hosts.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            problems
                .push(problem(format!("server.admin_hosts[{i}]"), "must be a host name (letters, digits, '-', '.')"));
        }
    }
    if let Some(d) = &file.decision {
        if d.listen.port() != 0 && (d.listen == s.listen || d.listen == s.admin_listen) {
            problems.push(problem("decision.listen", "must differ from server.listen and server.admin_listen"));
        }
    }
    if let Err(why) = check_log_filter(&s.log_level) {
        problems.push(problem("server.log_level", why));
    }
    if s.worker_threads > 256 {
        problems.push(problem("server.worker_threads", "must be at most 256"));
    }
    let ranges: [(&str, u64, u64, u64); 12] = [
        ("watch_config_seconds", s.watch_config_seconds, 0, 86_400),
        ("shutdown_delay_seconds", s.shutdown_delay_seconds, 0, 300),
        ("drain_timeout_seconds", s.drain_timeout_seconds, 0, 3600),
        ("tunnel_idle_timeout_seconds", s.tunnel_idle_timeout_seconds, 1, 86_400),
        ("send_timeout_seconds", s.send_timeout_seconds, 1, 3600),
        ("max_concurrent_streams", u64::from(s.max_concurrent_streams), 1, 10_000),
        ("dpop_replay_cache_entries", s.dpop_replay_cache_entries as u64, 1, 100_000_000),
        ("tunnel_max_lifetime_seconds", s.tunnel_max_lifetime_seconds, 1, 604_800),
        ("body_read_timeout_seconds", s.body_read_timeout_seconds, 1, 3600),
        ("header_read_timeout_seconds", s.header_read_timeout_seconds, 1, 3600),
        ("idle_timeout_seconds", s.idle_timeout_seconds, 1, 86_400),
        ("max_connections", s.max_connections as u64, 1, 1_000_000),
    ];
    for (key, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            problems.push(problem(format!("server.{key}"), format!("must be between {lo} and {hi}")));
        }
    }

    let base = base_dir_of(source);
    let server_tls = file.server.tls.as_ref().map(|t| listener_tls(t, &base, "server.tls", &mut problems));
    let decision = file.decision.as_ref().map(|d| Decision {
        listen: d.listen,
        tls: d.tls.as_ref().map(|t| listener_tls(t, &base, "decision.tls", &mut problems)),
        front_proxy: d.front_proxy,
    });
    let upstream = validate_upstream(&file.upstream, &base, &mut problems);
    let mut claim_paths = Vec::new();
    let mut rule_paths = Vec::new();
    let issuers = validate_issuers(&file.issuers, &base, &mut claim_paths, &mut rule_paths, &mut problems);
    let routes = validate_routes(&file.routes, &mut claim_paths, &mut rule_paths, &mut problems);

    // A switched-off `[key_manager_sync]` must not block start-up: its problems are kept,
    // not reported (beyond key names and types, which serde checked).
    let key_manager_sync = match &file.key_manager_sync {
        None => KmSyncConfig::Absent,
        Some(k) => match (k.enabled, resolve_km_sync(k, &base, &issuers)) {
            (true, Ok(s)) => KmSyncConfig::On(Box::new(s)),
            (true, Err(mut p)) => {
                problems.append(&mut p);
                KmSyncConfig::Absent
            }
            (false, r) => KmSyncConfig::Off(r.map(Box::new)),
        },
    };

    let shared_state = file
        .shared_state
        .as_ref()
        .and_then(|s| shared_state::SharedStateConfig::resolve(s, &base).map_err(|mut p| problems.append(&mut p)).ok());

    match upstream {
        Some(upstream) if problems.is_empty() => Ok(Config {
            source: source.map(Path::to_path_buf),
            server: file.server,
            upstream,
            issuers,
            routes,
            claim_paths,
            rule_paths,
            key_manager_sync,
            decision,
            server_tls,
            shared_state,
            sha256: String::new(),
        }),
        _ => Err(problems),
    }
}

/// The folder relative paths in a file at `source` are resolved against.
fn base_dir_of(source: Option<&Path>) -> PathBuf {
    source.and_then(Path::parent).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Names jwtgate sets or that carry the request's framing or credentials: a claim header may
/// not take them (nor any name that folds to them).
const RESERVED_HEADERS: [&str; 17] = [
    "x-jwt-payload",
    "x-jwt-sub",
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "cookie",
];

/// Validates one `claim_headers` table; its paths are added to `paths` (each once).
fn claim_headers(
    table: &std::collections::BTreeMap<String, String>,
    at: &str,
    paths: &mut Vec<Vec<String>>,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<ClaimHeader> {
    let mut out = Vec::new();
    for (name, path) in table {
        let key = format!("{at}.claim_headers.{name}");
        let lower = name.to_ascii_lowercase();
        let folded = lower.replace(['_', '.'], "-");
        let header = match http::HeaderName::from_bytes(lower.as_bytes()) {
            Ok(h) if !RESERVED_HEADERS.contains(&folded.as_str()) && !folded.starts_with("proxy-") => h,
            Ok(_) => {
                problems.push(problem(
                    key,
                    "is a header jwtgate sets or that carries the request's framing or credentials",
                ));
                continue;
            }
            Err(_) => {
                problems.push(problem(key, "is not a valid header name"));
                continue;
            }
        };
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if path.is_empty() || segments.iter().any(String::is_empty) || segments.len() > 16 {
            problems.push(problem(key, "must be a claim name or a dotted path to one (e.g. \"org.id\")"));
            continue;
        }
        let idx = match paths.iter().position(|p| *p == segments) {
            Some(i) => i,
            None => {
                paths.push(segments);
                paths.len() - 1
            }
        };
        out.push(ClaimHeader { name: header, path: idx });
    }
    out
}

/// The index of `path` in `paths`, added when new.
fn path_index(paths: &mut Vec<Vec<String>>, path: Vec<String>) -> usize {
    match paths.iter().position(|p| *p == path) {
        Some(i) => i,
        None => {
            paths.push(path);
            paths.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[upstream]
url = "http://127.0.0.1:9000"
[[issuers]]
name = "a"
discovery_url = "http://127.0.0.1:1/t/x/oauth2/token/.well-known/openid-configuration"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, None).expect("valid");
        assert_eq!(c.server.max_token_bytes(), 16384);
        assert_eq!(c.server.max_header_bytes(), 65536);
        assert_eq!(c.issuers[0].refresh_floor, Duration::from_secs(30));
        assert_eq!(c.issuers[0].algorithms, vec![Alg::RS256]);
        assert_eq!(c.issuers[0].leeway, 60);
    }

    #[test]
    fn unknown_key_is_reported_with_its_path() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nflavour = 1");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].flavour");
        assert!(e.problems[0].message.contains("flavour"), "{e}");
    }

    #[test]
    fn wrong_type_is_reported_with_its_path() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nleeway_seconds = \"x\"");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].leeway_seconds", "{e}");
    }

    #[test]
    fn hmac_and_none_are_refused() {
        let text = MINIMAL.replace("name = \"a\"", "name = \"a\"\nalgorithms = [\"HS256\", \"none\"]");
        let e = Config::parse(&text, None).unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["issuers[0].algorithms[0]", "issuers[0].algorithms[1]"]);
    }

    #[test]
    fn plain_http_discovery_is_refused_off_loopback() {
        let text = MINIMAL.replace("http://127.0.0.1:1", "http://example.com");
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!(e.problems[0].path, "issuers[0].discovery_url");
    }

    #[test]
    fn organization_expands_to_asgardeo_discovery() {
        let text = MINIMAL.replace(
            "discovery_url = \"http://127.0.0.1:1/t/x/oauth2/token/.well-known/openid-configuration\"",
            "organization = \"myorg\"",
        );
        let c = Config::parse(&text, None).expect("valid");
        assert_eq!(
            c.issuers[0].discovery_url.as_str(),
            "https://api.asgardeo.io/t/myorg/oauth2/token/.well-known/openid-configuration"
        );
    }
}
