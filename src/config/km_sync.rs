//! `[key_manager_sync]`: the section as written, and its validation into the sync crate's
//! `Settings` (resolved URLs, the issuer it describes, derived organization and endpoints).

use super::*;
use jwtgate_base::secret::SecretSource;
use jwtgate_km_sync::settings::{org_from_url, AdminAuth};

/// `[key_manager_sync]`, as written; see `jwtgate_km_sync::settings` for its validated form.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KmSyncSection {
    /// Run the sync inside `serve`.
    #[serde(default)]
    pub enabled: bool,
    /// APIM's base URL, e.g. `https://localhost:9443`.
    pub apim_url: Option<String>,
    /// Default `{apim_url}/api/am/admin/v4`.
    pub admin_api_url: Option<String>,
    /// Default `{apim_url}/oauth2/token`.
    pub token_url: Option<String>,
    /// Default `{apim_url}/client-registration/v0.17/register`.
    pub dcr_url: Option<String>,
    /// `password` (default), `client_credentials` or `basic`.
    pub auth: Option<String>,
    /// The admin user.
    pub username: Option<String>,
    /// Environment variable holding the admin password.
    pub password_env: Option<String>,
    /// File holding the admin password.
    pub password_file: Option<String>,
    /// Inline password: works, with a startup warning.
    pub password: Option<String>,
    /// PEM bundle trusted for APIM's certificate.
    pub ca_file: Option<String>,
    /// Skip TLS verification; refused unless `apim_url` is loopback.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The `[[issuers]]` name the registration describes.
    pub issuer: Option<String>,
    /// The registration's name (default `Asgardeo`).
    pub name: Option<String>,
    /// Managed only when set.
    pub display_name: Option<String>,
    /// Managed only when set.
    pub description: Option<String>,
    /// Default: discovery's `grant_types_supported`.
    pub grant_types: Option<Vec<String>>,
    /// Default: the `{org}` of the issuer's `/t/{org}/`.
    pub org_name: Option<String>,
    /// The Asgardeo management application's client id.
    pub mgmt_client_id: Option<String>,
    /// Environment variable holding the management application's secret.
    pub mgmt_client_secret_env: Option<String>,
    /// File holding the management application's secret.
    pub mgmt_client_secret_file: Option<String>,
    /// Default `{issuer origin}/t/{org}/api/server/v1/api-resources`.
    pub api_resource_management_endpoint: Option<String>,
    /// Default `{issuer origin}/t/{org}/scim2/v2/Roles`.
    pub roles_endpoint: Option<String>,
    /// `DIRECT` (default), `EXCHANGED` or `BOTH`.
    pub token_type: Option<String>,
    /// Seconds between passes (300).
    pub interval_seconds: Option<u64>,
    /// Random 0..jitter added to each interval (10% of the interval).
    pub jitter_seconds: Option<u64>,
    /// Cap of the retry backoff on 5xx and network errors (30).
    pub max_backoff_seconds: Option<u64>,
    /// Timeout of each APIM request (10).
    pub request_timeout_seconds: Option<u64>,
    /// `enableOAuthAppCreation` (true): the Developer Portal may create OAuth clients
    /// ("Generate Keys"). APIM stores `false` when a create body omits it.
    pub oauth_app_creation: Option<bool>,
    /// `enableMapOAuthConsumerApps` (true): existing OAuth clients may be mapped.
    pub map_oauth_consumer_apps: Option<bool>,
    /// `enableTokenGeneration` (true): the Developer Portal may generate tokens.
    pub token_generation: Option<bool>,
    /// The Asgardeo API resource holding the global scopes (`APIM_GLOBAL_SCOPES`); the
    /// connector looks it up by this name and fails when it does not exist.
    pub global_scopes_resource: Option<String>,
}

/// `[key_manager_sync]`, validated once with the rest of the file. A switched-off section
/// must not block start-up, so its problems are kept (for `check-config`'s warnings and for
/// `km-sync --once`, which runs either way) instead of failing the file.
#[derive(Debug, Clone)]
pub enum KmSyncConfig {
    /// No `[key_manager_sync]` section.
    Absent,
    /// `enabled = false`: the settings if complete, or what they still lack.
    Off(Result<Box<Settings>, Vec<ConfigProblem>>),
    /// `enabled = true` (then the section is complete, or the file was refused).
    On(Box<Settings>),
}

impl KmSyncConfig {
    /// The settings the background sync inside `serve` runs with.
    pub fn for_serve(&self) -> Option<&Settings> {
        match self {
            KmSyncConfig::On(s) => Some(s),
            _ => None,
        }
    }

    /// The settings `km-sync --once` runs with, enabled or not; `Ok(None)`: no section.
    pub fn for_one_pass(&self) -> Result<Option<&Settings>, &[ConfigProblem]> {
        match self {
            KmSyncConfig::Absent => Ok(None),
            KmSyncConfig::Off(Ok(s)) | KmSyncConfig::On(s) => Ok(Some(s)),
            KmSyncConfig::Off(Err(problems)) => Err(problems),
        }
    }
}

fn p(path: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem { path: format!("key_manager_sync.{path}"), message: message.into() }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Validates the section against the validated issuers; `base` is the config file's folder.
/// Called by `validate` (no I/O, no logging).
pub(super) fn resolve_km_sync(
    s: &KmSyncSection,
    base: &Path,
    issuers: &[IssuerConfig],
) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let apim = match &s.apim_url {
        None => {
            problems.push(p("apim_url", "missing"));
            None
        }
        Some(u) => match outbound_url(u) {
            Ok(url) => Some(url),
            Err(e) => {
                problems.push(p("apim_url", e));
                None
            }
        },
    };
    let apim_base = apim.as_ref().map(|u| u.as_str().trim_end_matches('/').to_string()).unwrap_or_default();
    let mut url_of = |key: &str, given: &Option<String>, default_path: &str| -> Option<Url> {
        let text = match given {
            Some(t) => t.clone(),
            None => format!("{apim_base}{default_path}"),
        };
        match outbound_url(&text) {
            Ok(u) => Some(u),
            Err(e) => {
                if given.is_some() || apim.is_some() {
                    problems.push(p(key, e));
                }
                None
            }
        }
    };
    let admin_api_url = url_of("admin_api_url", &s.admin_api_url, "/api/am/admin/v4");
    let token_url = url_of("token_url", &s.token_url, "/oauth2/token");
    let dcr_url = url_of("dcr_url", &s.dcr_url, "/client-registration/v0.17/register");

    let auth = match s.auth.as_deref().unwrap_or("password") {
        "password" => AdminAuth::Password,
        "client_credentials" => AdminAuth::ClientCredentials,
        "basic" => AdminAuth::Basic,
        _ => {
            problems.push(p("auth", "must be \"password\", \"client_credentials\" or \"basic\""));
            AdminAuth::Password
        }
    };
    let username = s.username.clone().unwrap_or_default();
    if username.is_empty() {
        problems.push(p("username", "missing"));
    }
    let secret = |env: &Option<String>, file: &Option<String>, inline: &Option<String>, key: &str| {
        match jwtgate_base::secret::choose(env.as_deref(), file.as_deref(), inline.as_deref(), base) {
            Ok(Some(source)) => Ok(source),
            Ok(None) => Err(p(&format!("{key}_env"), format!("missing: set {key}_env or {key}_file"))),
            Err(jwtgate_base::secret::ChoiceProblem::Several) => Err(p(
                &format!("{key}_env"),
                format!("set only one of {key}_env, {key}_file{}", if key == "password" { ", password" } else { "" }),
            )),
            Err(jwtgate_base::secret::ChoiceProblem::Empty("inline")) => Err(p(key, "must not be empty")),
            Err(jwtgate_base::secret::ChoiceProblem::Empty(which)) => {
                Err(p(&format!("{key}_{which}"), "must not be empty"))
            }
        }
    };
    let password = secret(&s.password_env, &s.password_file, &s.password, "password")
        .map_err(|e| problems.push(e))
        .unwrap_or(SecretSource::Inline(String::new()));
    let mgmt_client_secret = secret(&s.mgmt_client_secret_env, &s.mgmt_client_secret_file, &None, "mgmt_client_secret")
        .map_err(|e| problems.push(e))
        .unwrap_or(SecretSource::Inline(String::new()));
    let ca_file = s.ca_file.as_ref().map(|f| base.join(f));
    if let Some(f) = &ca_file {
        if !f.is_file() {
            problems.push(p("ca_file", format!("{} is not a readable file", f.display())));
        }
    }
    if s.insecure_skip_verify && !apim.as_ref().is_some_and(is_loopback_host) {
        problems.push(p("insecure_skip_verify", "refused: allowed only when apim_url is a loopback address"));
    }

    let issuer_index = match &s.issuer {
        Some(name) => issuers.iter().position(|i| &i.name == name).ok_or_else(|| {
            let names: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
            format!("no [[issuers]] entry is named {name:?} (configured: {})", names.join(", "))
        }),
        None if issuers.len() == 1 => Ok(0),
        None => Err("required when more than one [[issuers]] entry is configured".to_string()),
    };
    // On a bad `issuer` the rest is still checked (against the first issuer), so that every
    // problem is listed at once; the result is an error either way.
    let issuer_index = match issuer_index {
        Ok(i) => i,
        Err(why) => {
            problems.push(p("issuer", why));
            if issuers.is_empty() {
                return Err(problems);
            }
            0
        }
    };
    let issuer = issuers[issuer_index].clone();
    let org_name = match s.org_name.clone().or_else(|| org_from_url(&issuer.discovery_url)) {
        Some(o) => o,
        None => {
            problems.push(p("org_name", "cannot be derived from the issuer's URL (no /t/{org}/); set it"));
            String::new()
        }
    };
    let issuer_origin = origin(&issuer.discovery_url);
    let mgmt_client_id = s.mgmt_client_id.clone().unwrap_or_default();
    if mgmt_client_id.is_empty() {
        problems.push(p("mgmt_client_id", "missing"));
    }
    let token_type = s.token_type.clone().unwrap_or_else(|| "DIRECT".into());
    if !matches!(token_type.as_str(), "DIRECT" | "EXCHANGED" | "BOTH") {
        problems.push(p("token_type", "must be DIRECT, EXCHANGED or BOTH"));
    }
    let name = s.name.clone().unwrap_or_else(|| "Asgardeo".into());
    if name.is_empty() || name.len() > 100 {
        problems.push(p("name", "must be 1 to 100 characters"));
    }
    if s.display_name.as_ref().is_some_and(|d| d.len() > 100) {
        problems.push(p("display_name", "must be at most 100 characters"));
    }
    if s.description.as_ref().is_some_and(|d| d.len() > 256) {
        problems.push(p("description", "must be at most 256 characters"));
    }
    if s.grant_types.as_ref().is_some_and(|g| g.is_empty() || g.iter().any(String::is_empty)) {
        problems.push(p("grant_types", "must list non-empty grant types"));
    }
    let interval = s.interval_seconds.unwrap_or(300);
    if !(5..=86_400).contains(&interval) {
        problems.push(p("interval_seconds", "must be between 5 and 86400"));
    }
    // The jitter only spreads passes out; any value works with any interval, so the
    // default (a tenth of the interval) never conflicts with a written interval.
    let jitter = s.jitter_seconds.unwrap_or(interval / 10);
    if jitter > 86_400 {
        problems.push(p("jitter_seconds", "must be between 0 and 86400"));
    }
    let global_scopes_resource = s.global_scopes_resource.clone().unwrap_or_else(|| "APIM_GLOBAL_SCOPES".into());
    if global_scopes_resource.trim().is_empty() || global_scopes_resource.len() > 255 {
        problems
            .push(p("global_scopes_resource", "must be the name of an Asgardeo API resource (1 to 255 characters)"));
    }
    let max_backoff = s.max_backoff_seconds.unwrap_or(30);
    if !(1..=3600).contains(&max_backoff) {
        problems.push(p("max_backoff_seconds", "must be between 1 and 3600"));
    }
    let request_timeout = s.request_timeout_seconds.unwrap_or(10);
    if !(1..=300).contains(&request_timeout) {
        problems.push(p("request_timeout_seconds", "must be between 1 and 300"));
    }
    let endpoint = |given: &Option<String>, key: &str, default: String, problems: &mut Vec<ConfigProblem>| match given {
        Some(e) => match outbound_url(e) {
            Ok(_) => e.trim().to_string(),
            Err(err) => {
                problems.push(p(key, err));
                String::new()
            }
        },
        None => default,
    };
    let api_resource_management_endpoint = endpoint(
        &s.api_resource_management_endpoint,
        "api_resource_management_endpoint",
        format!("{issuer_origin}/t/{org_name}/api/server/v1/api-resources"),
        &mut problems,
    );
    let roles_endpoint = endpoint(
        &s.roles_endpoint,
        "roles_endpoint",
        format!("{issuer_origin}/t/{org_name}/scim2/v2/Roles"),
        &mut problems,
    );
    let (Some(admin_api_url), Some(token_url), Some(dcr_url)) = (admin_api_url, token_url, dcr_url) else {
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Settings {
        enabled: s.enabled,
        admin_api_url,
        token_url,
        dcr_url,
        auth,
        username,
        password,
        ca_file,
        insecure_skip_verify: s.insecure_skip_verify,
        issuer_index,
        default_dcr_endpoint: format!("{issuer_origin}/t/{org_name}/api/identity/oauth2/dcr/v1.1/register"),
        name,
        display_name: s.display_name.clone(),
        description: s.description.clone(),
        grant_types: s.grant_types.clone(),
        org_name,
        mgmt_client_id,
        mgmt_client_secret,
        api_resource_management_endpoint,
        roles_endpoint,
        token_type,
        interval: Duration::from_secs(interval),
        jitter: Duration::from_secs(jitter),
        max_backoff: Duration::from_secs(max_backoff),
        request_timeout: Duration::from_secs(request_timeout),
        oauth_app_creation: s.oauth_app_creation.unwrap_or(true),
        map_oauth_consumer_apps: s.map_oauth_consumer_apps.unwrap_or(true),
        token_generation: s.token_generation.unwrap_or(true),
        global_scopes_resource: global_scopes_resource.trim().to_string(),
    })
}
