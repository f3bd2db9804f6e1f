//! Where a secret comes from — an environment variable, a file (a mounted Kubernetes Secret), or
//! inline in the configuration (the key-manager sync allows it, with a warning) — read when it
//! is needed, so a rotated file is picked up. The value itself is never logged.

use std::path::{Path, PathBuf};

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

/// Why a section's choice of where its secret comes from is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceProblem {
    /// More than one source is set.
    Several,
    /// This one (`"env"`, `"file"` or `"inline"`) is set but empty: it names nothing.
    Empty(&'static str),
}

/// The one way every section (introspection, the shared store, the key-manager sync) chooses
/// where its secret comes from: at most one of an environment variable's name, a file
/// (relative to `base`, the configuration's folder) or — where the section allows it — an
/// inline value, none of them empty. `Ok(None)`: none is set; whether that is allowed is the
/// section's call.
pub fn choose(
    env: Option<&str>,
    file: Option<&str>,
    inline: Option<&str>,
    base: &Path,
) -> Result<Option<SecretSource>, ChoiceProblem> {
    let set = [env, file, inline].iter().filter(|v| v.is_some()).count();
    if set > 1 {
        return Err(ChoiceProblem::Several);
    }
    match (env, file, inline) {
        (Some(""), _, _) => Err(ChoiceProblem::Empty("env")),
        (_, Some(""), _) => Err(ChoiceProblem::Empty("file")),
        (_, _, Some("")) => Err(ChoiceProblem::Empty("inline")),
        (Some(e), _, _) => Ok(Some(SecretSource::Env(e.to_string()))),
        (_, Some(f), _) => Ok(Some(SecretSource::File(base.join(f)))),
        (_, _, Some(i)) => Ok(Some(SecretSource::Inline(i.to_string()))),
        (None, None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_non_empty_source_at_most() {
        let base = Path::new("/etc/jwtgate");
        assert_eq!(choose(None, None, None, base), Ok(None));
        assert_eq!(choose(Some("PW"), None, None, base), Ok(Some(SecretSource::Env("PW".into()))));
        assert_eq!(choose(None, Some("pw"), None, base), Ok(Some(SecretSource::File(base.join("pw")))));
        assert_eq!(choose(None, None, Some("x"), base), Ok(Some(SecretSource::Inline("x".into()))));
        assert_eq!(choose(Some("PW"), Some("pw"), None, base), Err(ChoiceProblem::Several));
        assert_eq!(choose(None, Some("pw"), Some("x"), base), Err(ChoiceProblem::Several));
        assert_eq!(choose(Some(""), None, None, base), Err(ChoiceProblem::Empty("env")));
        assert_eq!(choose(None, Some(""), None, base), Err(ChoiceProblem::Empty("file")));
    }
}
