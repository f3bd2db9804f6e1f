//! Tokens revoked before they expire: an issuer's `deny_list_file`, lines `jti:<id>`,
//! `sub:<id>` or `client_id:<id>` (blank lines and `#` comments allowed). A malformed line
//! refuses the whole file, naming the line: the list in force stays.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

/// The most a deny list file may hold (bytes): a list is read whole, at start, on reload and
/// when the file changes.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What an issuer's deny list names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DenyList {
    jti: HashSet<Box<str>>,
    sub: HashSet<Box<str>>,
    client_id: HashSet<Box<str>>,
}

impl DenyList {
    /// Parses a deny list; the error names the first bad line.
    pub fn parse(text: &str) -> Result<DenyList, String> {
        let mut list = DenyList::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let set = match line.split_once(':') {
                Some(("jti", id)) if !id.trim().is_empty() => (&mut list.jti, id.trim()),
                Some(("sub", id)) if !id.trim().is_empty() => (&mut list.sub, id.trim()),
                Some(("client_id", id)) if !id.trim().is_empty() => (&mut list.client_id, id.trim()),
                _ => return Err(format!("line {}: expected jti:<id>, sub:<id> or client_id:<id>", n + 1)),
            };
            set.0.insert(set.1.into());
        }
        Ok(list)
    }

    /// Reads and parses `path` (bounded in size); the error names the file.
    pub fn read(path: &Path) -> Result<DenyList, String> {
        let too_big = std::fs::metadata(path).map(|m| m.len() > MAX_FILE_BYTES).unwrap_or(false);
        if too_big {
            return Err(format!("{}: larger than {MAX_FILE_BYTES} bytes", path.display()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        DenyList::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// How many identifiers it names.
    pub fn len(&self) -> usize {
        self.jti.len() + self.sub.len() + self.client_id.len()
    }

    /// True when it names nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the token's `jti`, `sub` or `client_id` is listed.
    pub fn denies(&self, jti: &Value, sub: &Value, client_id: &Value) -> bool {
        let listed = |set: &HashSet<Box<str>>, v: &Value| v.as_str().is_some_and(|s| set.contains(s));
        listed(&self.jti, jti) || listed(&self.sub, sub) || listed(&self.client_id, client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_comments_and_the_first_bad_line() {
        let list = DenyList::parse("# revoked\n\njti:abc\nsub: alice \nclient_id:app:1\n").unwrap();
        assert_eq!(list.len(), 3);
        assert!(list.denies(&json!("abc"), &Value::Null, &Value::Null));
        assert!(list.denies(&Value::Null, &json!("alice"), &Value::Null));
        assert!(list.denies(&Value::Null, &Value::Null, &json!("app:1")));
        assert!(!list.denies(&json!("abcd"), &json!(1), &Value::Null));
        assert_eq!(
            DenyList::parse("jti:a\nuser:b\n").unwrap_err(),
            "line 2: expected jti:<id>, sub:<id> or client_id:<id>"
        );
        assert!(DenyList::parse("jti:\n").is_err());
    }
}
