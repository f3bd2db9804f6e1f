//! Splitting and decoding a compact JWS without trusting it: strict unpadded base64url, a JSON
//! header with a string `alg`, no `crit`, and a JSON-object payload whose registered claims have
//! the right JSON types. Key-source headers (`jwk`, `jku`, `x5u`, `x5c`) are never read. The
//! signature is checked by the caller, with a key chosen by the *configured* issuer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use super::alg::Alg;
use super::error::TokenError;

/// A decoded, not yet verified token borrowing from the original string.
#[derive(Debug)]
pub struct Decoded<'t> {
    /// `alg`, when it names a supported algorithm (`None` for `none`, HMAC, unknown names).
    pub alg: Option<Alg>,
    /// `kid`.
    pub kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'t [u8],
    /// The payload segment as received: already base64url of the payload JSON.
    pub payload_b64: &'t str,
    /// The raw signature.
    pub signature: Vec<u8>,
    /// The registered claims.
    pub claims: Claims,
}

/// The claims jwtgate checks.
#[derive(Debug, Default)]
pub struct Claims {
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `aud`, a string or an array of strings, as a list.
    pub aud: Vec<String>,
    /// `exp`.
    pub exp: Option<f64>,
    /// `nbf`.
    pub nbf: Option<f64>,
    /// `iat`.
    pub iat: Option<f64>,
    /// `scope` (space-separated or array) and `scp` (string or array), merged.
    pub scopes: Vec<Box<str>>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Value,
    kid: Option<Value>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<Value>,
    sub: Option<Value>,
    aud: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    scope: Option<Value>,
    scp: Option<Value>,
}

fn b64(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::BadEncoding)
}

fn time(v: Option<Value>) -> Result<Option<f64>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::BadTimeClaim),
        Some(_) => Err(TokenError::BadTimeClaim),
    }
}

fn string(v: Option<Value>) -> Result<Option<String>, TokenError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::BadClaimType),
    }
}

fn string_list(v: Value, split: bool, out: &mut Vec<String>) -> Result<(), TokenError> {
    match v {
        Value::String(s) if split => out.extend(s.split(' ').filter(|x| !x.is_empty()).map(str::to_string)),
        Value::String(s) => out.push(s),
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::String(s) => out.push(s),
                    _ => return Err(TokenError::BadClaimType),
                }
            }
        }
        _ => return Err(TokenError::BadClaimType),
    }
    Ok(())
}

/// Splits and decodes `token`.
pub fn decode(token: &str) -> Result<Decoded<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let rest = parts.count();
    if rest == 2 {
        return Err(TokenError::Encrypted);
    }
    if rest != 0 || h.is_empty() || p.is_empty() {
        return Err(TokenError::Malformed);
    }
    let header_json = b64(h)?;
    let payload_json = b64(p)?;
    let signature = b64(s)?;

    let header: RawHeader = serde_json::from_slice(&header_json).map_err(|_| TokenError::BadHeader)?;
    let Value::String(alg_name) = header.alg else {
        return Err(TokenError::BadHeader);
    };
    let kid = match header.kid {
        None => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => return Err(TokenError::BadHeader),
    };
    if header.crit.is_some() {
        return Err(TokenError::CritUnsupported);
    }

    let raw: RawClaims = serde_json::from_slice(&payload_json).map_err(|_| TokenError::BadPayload)?;
    let iss = match raw.iss {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(TokenError::BadClaimType),
    };
    let mut aud = Vec::new();
    if let Some(a) = raw.aud {
        string_list(a, false, &mut aud)?;
    }
    let mut scopes = Vec::new();
    if let Some(sc) = raw.scope {
        string_list(sc, true, &mut scopes)?;
    }
    if let Some(sc) = raw.scp {
        string_list(sc, true, &mut scopes)?;
    }
    let claims = Claims {
        iss,
        sub: string(raw.sub)?,
        aud,
        exp: time(raw.exp)?,
        nbf: time(raw.nbf)?,
        iat: time(raw.iat)?,
        scopes: scopes.into_iter().map(String::into_boxed_str).collect(),
    };
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Decoded { alg: Alg::from_name(&alg_name), kid, signing_input, payload_b64: p, signature, claims })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn shapes_are_checked() {
        assert_eq!(decode("a.b").unwrap_err(), TokenError::Malformed);
        assert_eq!(decode("a.b.c.d.e").unwrap_err(), TokenError::Encrypted);
        assert_eq!(decode("a.b.c.d").unwrap_err(), TokenError::Malformed);
        assert_eq!(decode("a=.b.c").unwrap_err(), TokenError::BadEncoding);
        let t = format!("{}.{}.", enc("[1]"), enc("{}"));
        assert_eq!(decode(&t).unwrap_err(), TokenError::BadHeader);
        let t = format!("{}.{}.", enc(r#"{"alg":"RS256","crit":["exp"]}"#), enc("{}"));
        assert_eq!(decode(&t).unwrap_err(), TokenError::CritUnsupported);
        let t = format!("{}.{}.", enc(r#"{"alg":"RS256"}"#), enc(r#"{"exp":"1"}"#));
        assert_eq!(decode(&t).unwrap_err(), TokenError::BadTimeClaim);
        let t = format!("{}.{}.", enc(r#"{"alg":"RS256"}"#), enc(r#"{"iss":"a","iss":"b"}"#));
        assert_eq!(decode(&t).unwrap_err(), TokenError::BadPayload);
    }

    #[test]
    fn scopes_merge_scope_and_scp() {
        let t = format!(
            "{}.{}.",
            enc(r#"{"alg":"RS256","jwk":{"kty":"oct"}}"#),
            enc(r#"{"scope":"a  b","scp":["c"],"aud":"x"}"#)
        );
        let d = decode(&t).unwrap();
        let s: Vec<&str> = d.claims.scopes.iter().map(|s| &**s).collect();
        assert_eq!(s, ["a", "b", "c"]);
        assert_eq!(d.claims.aud, ["x"]);
        assert_eq!(d.alg, Some(Alg::RS256));
    }
}
