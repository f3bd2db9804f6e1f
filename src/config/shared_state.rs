//! `[shared_state]`: where the replicas keep what they must agree on (a Redis or Valkey the
//! user already runs), as written and validated. The password is read when the store is built,
//! never logged; a password inside the URL works, with a warning (it then shows wherever the
//! configuration is shown).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigProblem;
use jwtgate_base::secret::{self, SecretSource};

/// `[shared_state]`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStateSection {
    /// `redis://host:port/db`, `rediss://…` (TLS), or `redis+unix:///path/to/socket`.
    pub redis_url: String,
    /// PEM bundle of the CAs trusted for `rediss://` (default: the public web PKI).
    pub ca_file: Option<String>,
    /// The environment variable holding the password (Redis `AUTH`).
    pub password_env: Option<String>,
    /// The file holding the password.
    pub password_file: Option<String>,
    /// Every key jwtgate writes starts with this (one Redis for several deployments).
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// One command, connection included; then the store counts as down for that request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Multiplexed connections (each pipelines every concurrent command).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_key_prefix() -> String {
    "jwtgate:".into()
}
fn default_timeout_ms() -> u64 {
    50
}
fn default_pool_size() -> usize {
    8
}

/// `[shared_state]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStateConfig {
    /// The URL as written (shown with its password, if any, replaced by `***`).
    pub url: String,
    /// `rediss://`.
    pub tls: bool,
    /// Only these CAs are trusted (`rediss://`).
    pub ca_file: Option<PathBuf>,
    /// Where the password is, when not in the URL.
    pub password: Option<SecretSource>,
    /// The key prefix.
    pub key_prefix: String,
    /// One command's time limit.
    pub timeout: Duration,
    /// Connections.
    pub pool_size: usize,
}

impl SharedStateConfig {
    /// Validates `s`; paths are relative to `base`.
    pub fn resolve(s: &SharedStateSection, base: &Path) -> Result<SharedStateConfig, Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let p = |k: &str, m: String| ConfigProblem { path: format!("shared_state.{k}"), message: m };
        let url = url::Url::parse(&s.redis_url);
        let tls = match url.as_ref().map(|u| u.scheme().to_string()) {
            Ok(scheme) if scheme == "redis" || scheme == "redis+unix" || scheme == "unix" => false,
            Ok(scheme) if scheme == "rediss" => true,
            Ok(scheme) => {
                problems.push(p("redis_url", format!("scheme {scheme:?}: use redis://, rediss:// or redis+unix://")));
                false
            }
            Err(e) => {
                problems.push(p("redis_url", format!("not a URL: {e}")));
                false
            }
        };
        if let Ok(u) = &url {
            if matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_none_or(str::is_empty) {
                problems.push(p("redis_url", "names no host".into()));
            }
            if problems.is_empty() {
                if let Err(e) = redis::IntoConnectionInfo::into_connection_info(s.redis_url.as_str()) {
                    problems.push(p("redis_url", format!("{e}")));
                }
            }
        }
        let ca_file = s.ca_file.as_ref().map(|f| base.join(f));
        if let Some(f) = &ca_file {
            if !tls {
                problems.push(p("ca_file", "applies to rediss:// only".into()));
            } else if let Err(e) = crate::fetch::read_ca_bundle(f) {
                problems.push(p("ca_file", e));
            }
        }
        let password = match secret::choose(s.password_env.as_deref(), s.password_file.as_deref(), None, base) {
            Ok(source) => source,
            Err(secret::ChoiceProblem::Several) => {
                problems.push(p("password_env", "set only one of password_env, password_file".into()));
                None
            }
            Err(secret::ChoiceProblem::Empty(which)) => {
                problems.push(p(&format!("password_{which}"), "must not be empty".into()));
                None
            }
        };
        if s.key_prefix.is_empty() || s.key_prefix.len() > 64 || s.key_prefix.bytes().any(|b| b.is_ascii_whitespace()) {
            problems.push(p("key_prefix", "must be 1 to 64 characters without spaces".into()));
        }
        if !(1..=10_000).contains(&s.timeout_ms) {
            problems.push(p("timeout_ms", "must be between 1 and 10000".into()));
        }
        if !(1..=64).contains(&s.pool_size) {
            problems.push(p("pool_size", "must be between 1 and 64".into()));
        }
        match problems.is_empty() {
            true => Ok(SharedStateConfig {
                url: s.redis_url.clone(),
                tls,
                ca_file,
                password,
                key_prefix: s.key_prefix.clone(),
                timeout: Duration::from_millis(s.timeout_ms),
                pool_size: s.pool_size,
            }),
            false => Err(problems),
        }
    }

    /// The URL with any password replaced by `***` (for `/status` and logs).
    pub fn shown_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.url.clone(),
        }
    }

    /// True when the URL itself carries a password.
    pub fn url_has_password(&self) -> bool {
        url::Url::parse(&self.url).is_ok_and(|u| u.password().is_some())
    }
}
