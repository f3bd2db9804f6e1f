//! Where a secret comes from — an environment variable, a file (a mounted Kubernetes Secret), or
//! inline in the configuration (the key-manager sync allows it, with a warning) — read when it
//! is needed, so a rotated file is picked up. The value itself is never logged.

use std::path::PathBuf;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (trailing newline trimmed).
    File(PathBuf),
    /// Inline in the config (works, with a warning).
    Inline(String),
}

impl SecretSource {
    /// Reads the secret now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("environment variable {name} is not set")),
            },
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read {}: {e}", p.display()))
                .and_then(|s| if s.is_empty() { Err(format!("{} is empty", p.display())) } else { Ok(s) }),
            SecretSource::Inline(s) => Ok(s.clone()),
        }
    }
}
