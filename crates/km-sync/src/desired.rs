//! The registration jwtgate wants: exactly the managed fields, built from the settings and the
//! live discovery document; the field-level comparison with what APIM returns (normalised:
//! trimmed strings, grant types as a set, lifted fields compared where GET puts them); and the
//! bodies for create (managed fields only) and update (APIM's object with the managed fields
//! overwritten, everything else sent back unchanged, since PUT replaces the whole object).

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use url::Url;

use crate::settings::Settings;
use jwtgate_oidc::discovery::Discovery;

/// What APIM shows instead of a stored secret, and accepts as "keep the stored one".
pub const MASK: &str = "*****";
/// The `additionalProperties` key holding the secret's fingerprint.
pub const FINGERPRINT_KEY: &str = "jwtgate_secret_fingerprint";
/// The managed field holding the Asgardeo management application's secret.
pub const SECRET_FIELD: &str = "additionalProperties.mgmt_client_secret";
/// The connector type.
pub const ASGARDEO_TYPE: &str = "Asgardeo";

/// How a managed field is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Strings, trimmed.
    Text,
    /// Arrays of strings, as sets.
    Set,
    /// Any JSON value, exactly (booleans, objects of trimmed strings).
    Exact,
    /// The masked secret: differs when the stored fingerprint differs from the local one.
    Secret,
}

/// One managed field: where it lives in the object, what it should be, how to compare.
#[derive(Debug, Clone)]
pub struct Managed {
    /// Top-level key, or `additionalProperties.<key>`.
    pub path: String,
    /// The desired value (for the secret: the real secret).
    pub value: Value,
    /// The comparison.
    pub compare: Compare,
}

/// One differing field, printable (secrets masked).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The field path.
    pub field: String,
    /// What APIM has (`None`: absent).
    pub old: Option<Value>,
    /// What jwtgate wants (masked for the secret).
    pub new: Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let old = self.old.as_ref().map_or("(absent)".to_string(), Value::to_string);
        write!(f, "{}: {} → {}", self.field, old, self.new)
    }
}

/// base64url(HMAC-SHA256(key = secret, message = "jwtgate-km-sync-v1")): the same for every
/// replica, irreversible, so the stored registration can tell whether the secret rotated.
pub fn fingerprint(secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, b"jwtgate-km-sync-v1").as_ref())
}

/// The grant types to register: configured, else discovery's `grant_types_supported`.
pub fn grant_types(settings: &Settings, discovery: &Discovery) -> Vec<String> {
    settings.grant_types.clone().or_else(|| discovery.grant_types_supported.clone()).unwrap_or_default()
}

/// Every managed field.
pub fn managed_fields(settings: &Settings, discovery: &Discovery, discovery_url: &Url, secret: &str) -> Vec<Managed> {
    let mut out = Vec::new();
    let mut add =
        |path: &str, value: Value, compare: Compare| out.push(Managed { path: path.to_string(), value, compare });
    add("type", json!(ASGARDEO_TYPE), Compare::Text);
    add("enabled", json!(true), Compare::Exact);
    add("wellKnownEndpoint", json!(discovery_url.as_str()), Compare::Text);
    add("issuer", json!(discovery.issuer), Compare::Text);
    add("certificates", json!({"type": "JWKS", "value": discovery.jwks_uri.as_str()}), Compare::Exact);
    for (path, v) in [
        ("tokenEndpoint", &discovery.token_endpoint),
        ("revokeEndpoint", &discovery.revocation_endpoint),
        ("introspectionEndpoint", &discovery.introspection_endpoint),
        ("userInfoEndpoint", &discovery.userinfo_endpoint),
        ("authorizeEndpoint", &discovery.authorization_endpoint),
    ] {
        if let Some(v) = v {
            add(path, json!(v), Compare::Text);
        }
    }
    let dcr = discovery.registration_endpoint.clone().unwrap_or_else(|| settings.default_dcr_endpoint.clone());
    add("clientRegistrationEndpoint", json!(dcr), Compare::Text);
    add("availableGrantTypes", json!(grant_types(settings, discovery)), Compare::Set);
    add("enableSelfValidationJWT", json!(true), Compare::Exact);
    // APIM stores `false` for the first two (and leaves the third unset) when a body omits
    // them; with app creation off the Developer Portal cannot "Generate Keys" (901405).
    add("enableOAuthAppCreation", json!(settings.oauth_app_creation), Compare::Exact);
    add("enableMapOAuthConsumerApps", json!(settings.map_oauth_consumer_apps), Compare::Exact);
    add("enableTokenGeneration", json!(settings.token_generation), Compare::Exact);
    add("tokenType", json!(settings.token_type), Compare::Text);
    add("consumerKeyClaim", json!("azp"), Compare::Text);
    add("scopesClaim", json!("scope"), Compare::Text);
    if let Some(d) = &settings.display_name {
        add("displayName", json!(d), Compare::Text);
    }
    if let Some(d) = &settings.description {
        add("description", json!(d), Compare::Text);
    }
    let ap = |k: &str| format!("additionalProperties.{k}");
    add(&ap("org_name"), json!(settings.org_name), Compare::Text);
    add(&ap("mgmt_client_id"), json!(settings.mgmt_client_id), Compare::Text);
    add(SECRET_FIELD, json!(secret), Compare::Secret);
    add(&ap("APIM_GLOBAL_SCOPES"), json!(settings.global_scopes_resource), Compare::Text);
    add(
        &ap("asgardeo_api_resource_management_endpoint"),
        json!(settings.api_resource_management_endpoint),
        Compare::Text,
    );
    add(&ap("asgardeo_roles_endpoint"), json!(settings.roles_endpoint), Compare::Text);
    add(&ap(FINGERPRINT_KEY), json!(fingerprint(secret)), Compare::Text);
    out
}

fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        Some((outer, inner)) => obj.get(outer)?.get(inner),
        None => obj.get(path),
    }
}

fn set_path(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((outer, inner)) => {
            let entry = obj.entry(outer.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(m) = entry {
                m.insert(inner.to_string(), value);
            }
        }
        None => {
            obj.insert(path.to_string(), value);
        }
    }
}

fn trimmed(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.trim().to_string()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), trimmed(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(trimmed).collect()),
        other => other.clone(),
    }
}

fn string_set(v: &Value) -> Option<std::collections::BTreeSet<String>> {
    v.as_array()?.iter().map(|x| x.as_str().map(|s| s.trim().to_string())).collect()
}

/// The managed fields that differ between APIM's object and the desired state.
pub fn diff(actual: &Value, desired: &[Managed]) -> Vec<Change> {
    let stored_fp = lookup(actual, &format!("additionalProperties.{FINGERPRINT_KEY}")).and_then(Value::as_str);
    let mut out = Vec::new();
    for m in desired {
        let old = lookup(actual, &m.path);
        let same = match m.compare {
            Compare::Text => old.and_then(Value::as_str).map(str::trim) == m.value.as_str().map(str::trim),
            Compare::Set => old.and_then(string_set).is_some_and(|o| Some(o) == string_set(&m.value)),
            Compare::Exact => old.map(trimmed) == Some(trimmed(&m.value)),
            Compare::Secret => {
                old.is_some() && stored_fp.map(str::trim) == Some(fingerprint(m.value.as_str().unwrap_or("")).as_str())
            }
        };
        if !same {
            let new = if m.compare == Compare::Secret { json!(MASK) } else { m.value.clone() };
            let old = if m.compare == Compare::Secret { old.map(|_| json!(MASK)) } else { old.cloned() };
            out.push(Change { field: m.path.clone(), old, new });
        }
    }
    out
}

/// The POST body: the name and every managed field, with the real secret.
pub fn create_body(name: &str, desired: &[Managed]) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), json!(name));
    for m in desired {
        set_path(&mut obj, &m.path, m.value.clone());
    }
    Value::Object(obj)
}

/// The PUT body: APIM's object with the managed fields overwritten. The real secret is sent
/// only when `send_secret` (the stored fingerprint differs); otherwise the mask, which APIM
/// reads as "keep the stored secret".
pub fn update_body(actual: &Value, desired: &[Managed], send_secret: bool) -> Value {
    let mut obj = actual.as_object().cloned().unwrap_or_default();
    obj.remove("id");
    for m in desired {
        let value = if m.compare == Compare::Secret && !send_secret { json!(MASK) } else { m.value.clone() };
        set_path(&mut obj, &m.path, value);
    }
    Value::Object(obj)
}

/// Every managed field as a "create" plan line, secrets masked.
pub fn describe_create(desired: &[Managed]) -> Vec<Change> {
    desired
        .iter()
        .map(|m| Change {
            field: m.path.clone(),
            old: None,
            new: if m.compare == Compare::Secret { json!(MASK) } else { m.value.clone() },
        })
        .collect()
}
