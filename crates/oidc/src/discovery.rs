//! The OIDC discovery document: the fields jwtgate uses (`issuer`, `jwks_uri`, the endpoints
//! and grant types the key-manager sync registers), validated. Asgardeo serves it under
//! `/oauth2/token/.well-known/openid-configuration`; the older form APIM's docs print
//! (`/oauth2/.well-known/...`) may 404, so [`token_form`] gives the URL to fall back to.

use serde::Deserialize;
use url::Url;

use crate::outbound_url;

/// The parts of a discovery document jwtgate relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The URL the document was read from (after any fallback).
    pub url: Url,
    /// The exact `iss` tokens carry.
    pub issuer: String,
    /// Where the keys are.
    pub jwks_uri: Url,
    /// `token_endpoint`.
    pub token_endpoint: Option<String>,
    /// `revocation_endpoint`.
    pub revocation_endpoint: Option<String>,
    /// `introspection_endpoint`.
    pub introspection_endpoint: Option<String>,
    /// `userinfo_endpoint`.
    pub userinfo_endpoint: Option<String>,
    /// `authorization_endpoint`.
    pub authorization_endpoint: Option<String>,
    /// `registration_endpoint`.
    pub registration_endpoint: Option<String>,
    /// `grant_types_supported`.
    pub grant_types_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawDiscovery {
    issuer: Option<serde_json::Value>,
    jwks_uri: Option<serde_json::Value>,
    token_endpoint: Option<serde_json::Value>,
    revocation_endpoint: Option<serde_json::Value>,
    introspection_endpoint: Option<serde_json::Value>,
    userinfo_endpoint: Option<serde_json::Value>,
    authorization_endpoint: Option<serde_json::Value>,
    registration_endpoint: Option<serde_json::Value>,
    grant_types_supported: Option<serde_json::Value>,
}

/// Why a discovery document was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("discovery document {url}: {reason}")]
pub struct DiscoveryError {
    /// Where it came from.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

fn opt_string(v: Option<serde_json::Value>, name: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

impl Discovery {
    /// Parses and checks a document fetched from `url`.
    pub fn parse(url: &Url, body: &[u8]) -> Result<Discovery, DiscoveryError> {
        let err = |reason: String| DiscoveryError { url: url.to_string(), reason };
        let raw: RawDiscovery = serde_json::from_slice(body).map_err(|e| err(format!("not a JSON object: {e}")))?;
        let issuer = match raw.issuer {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            Some(serde_json::Value::String(_)) => return Err(err("\"issuer\" is empty".into())),
            Some(_) => return Err(err("\"issuer\" is not a string".into())),
            None => return Err(err("no \"issuer\"".into())),
        };
        let jwks_uri = match opt_string(raw.jwks_uri, "jwks_uri").map_err(err)? {
            Some(s) => outbound_url(&s).map_err(|e| err(format!("\"jwks_uri\" {e}")))?,
            None => return Err(err("no \"jwks_uri\"".into())),
        };
        let grant_types_supported = match raw.grant_types_supported {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(a)) => Some(
                a.into_iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| err("\"grant_types_supported\" holds a non-string".into()))?,
            ),
            Some(_) => return Err(err("\"grant_types_supported\" is not an array".into())),
        };
        Ok(Discovery {
            url: url.clone(),
            issuer,
            jwks_uri,
            token_endpoint: opt_string(raw.token_endpoint, "token_endpoint").map_err(err)?,
            revocation_endpoint: opt_string(raw.revocation_endpoint, "revocation_endpoint").map_err(err)?,
            introspection_endpoint: opt_string(raw.introspection_endpoint, "introspection_endpoint").map_err(err)?,
            userinfo_endpoint: opt_string(raw.userinfo_endpoint, "userinfo_endpoint").map_err(err)?,
            authorization_endpoint: opt_string(raw.authorization_endpoint, "authorization_endpoint").map_err(err)?,
            registration_endpoint: opt_string(raw.registration_endpoint, "registration_endpoint").map_err(err)?,
            grant_types_supported,
        })
    }

    /// OIDC Discovery says `issuer` + `/.well-known/openid-configuration` is the document's
    /// URL. Asgardeo's legacy path breaks that, so a mismatch is only worth a log line.
    pub fn issuer_matches_url(&self) -> bool {
        let expected = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        expected == self.url.as_str()
    }
}

/// For Asgardeo's legacy discovery path `.../oauth2/.well-known/openid-configuration`, the
/// `/oauth2/token/` form to try when it 404s; `None` for any other URL.
pub fn token_form(url: &Url) -> Option<Url> {
    let path = url.path();
    let stem = path.strip_suffix("/oauth2/.well-known/openid-configuration")?;
    let mut alt = url.clone();
    alt.set_path(&format!("{stem}/oauth2/token/.well-known/openid-configuration"));
    Some(alt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_asgardeo_path_has_a_token_form() {
        let u = Url::parse("https://api.asgardeo.io/t/acme/oauth2/.well-known/openid-configuration").unwrap();
        assert_eq!(
            token_form(&u).unwrap().as_str(),
            "https://api.asgardeo.io/t/acme/oauth2/token/.well-known/openid-configuration"
        );
        let u = Url::parse("https://idp.example/.well-known/openid-configuration").unwrap();
        assert!(token_form(&u).is_none());
    }

    #[test]
    fn jwks_uri_must_be_https_off_loopback() {
        let u = Url::parse("https://idp.example/.well-known/openid-configuration").unwrap();
        let e = Discovery::parse(&u, br#"{"issuer":"x","jwks_uri":"http://evil.example/jwks"}"#).unwrap_err();
        assert!(e.reason.contains("jwks_uri"), "{e}");
    }
}
