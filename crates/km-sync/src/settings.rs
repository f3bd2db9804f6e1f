//! `[key_manager_sync]` validated into ready-to-use settings (the gateway's configuration
//! validates the section into this): resolved URLs, the issuer it describes, the derived
//! organization and connector endpoints, and where the secrets live.
//! Secrets themselves are read per pass ([`Settings::secrets`]) so that a rotated secret file
//! is picked up without a restart; they are never logged or printed.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// How jwtgate authenticates to APIM's Admin REST API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuth {
    /// Client registration, then the password grant (APIM's documented way).
    Password,
    /// Client registration, then the client-credentials grant.
    ClientCredentials,
    /// HTTP Basic on every Admin API call.
    Basic,
}

pub use jwtgate_base::secret::SecretSource;

/// The validated sync settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Run inside `serve`.
    pub enabled: bool,
    /// Admin REST API base, e.g. `https://localhost:9443/api/am/admin/v4`.
    pub admin_api_url: Url,
    /// Token endpoint.
    pub token_url: Url,
    /// Client-registration endpoint.
    pub dcr_url: Url,
    /// How to authenticate.
    pub auth: AdminAuth,
    /// Admin user.
    pub username: String,
    /// Admin password source.
    pub password: SecretSource,
    /// Extra trusted CA bundle (PEM).
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (loopback only).
    pub insecure_skip_verify: bool,
    /// The issuer the registration describes (index into `Config::issuers`).
    pub issuer_index: usize,
    /// The registration's name.
    pub name: String,
    /// `displayName`, managed when set.
    pub display_name: Option<String>,
    /// `description`, managed when set.
    pub description: Option<String>,
    /// Configured grant types (else discovery's).
    pub grant_types: Option<Vec<String>>,
    /// `org_name`.
    pub org_name: String,
    /// `mgmt_client_id`.
    pub mgmt_client_id: String,
    /// `mgmt_client_secret` source.
    pub mgmt_client_secret: SecretSource,
    /// `asgardeo_api_resource_management_endpoint`.
    pub api_resource_management_endpoint: String,
    /// `asgardeo_roles_endpoint`.
    pub roles_endpoint: String,
    /// The default `clientRegistrationEndpoint` when discovery has none.
    pub default_dcr_endpoint: String,
    /// `tokenType`.
    pub token_type: String,
    /// Time between passes.
    pub interval: Duration,
    /// Random extra delay, 0..jitter.
    pub jitter: Duration,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
    /// Each APIM request's timeout.
    pub request_timeout: Duration,
    /// `enableOAuthAppCreation`.
    pub oauth_app_creation: bool,
    /// `enableMapOAuthConsumerApps`.
    pub map_oauth_consumer_apps: bool,
    /// `enableTokenGeneration`.
    pub token_generation: bool,
    /// `additionalProperties.APIM_GLOBAL_SCOPES`: the Asgardeo API resource's name.
    pub global_scopes_resource: String,
}

/// The secrets of one pass.
#[derive(Clone)]
pub struct Secrets {
    /// The admin password.
    pub admin_password: String,
    /// The Asgardeo management application's secret.
    pub mgmt_client_secret: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(*****)")
    }
}

/// The `{org}` of a `/t/{org}/` path.
pub fn org_from_url(url: &Url) -> Option<String> {
    let mut segs = url.path_segments()?;
    while let Some(s) = segs.next() {
        if s == "t" {
            return segs.next().filter(|o| !o.is_empty()).map(str::to_string);
        }
    }
    None
}

impl Settings {
    /// Reads both secrets now.
    pub fn secrets(&self) -> Result<Secrets, String> {
        let admin_password = self.password.read().map_err(|e| format!("admin password: {e}"))?;
        let mgmt_client_secret =
            self.mgmt_client_secret.read().map_err(|e| format!("Asgardeo management client secret: {e}"))?;
        Ok(Secrets { admin_password, mgmt_client_secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_is_derived_from_t_segment() {
        let u = Url::parse("https://api.asgardeo.io/t/acme/oauth2/token/.well-known/openid-configuration").unwrap();
        assert_eq!(org_from_url(&u).as_deref(), Some("acme"));
        assert_eq!(org_from_url(&Url::parse("https://idp.example/.well-known/x").unwrap()), None);
    }
}
