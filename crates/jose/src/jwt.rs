//! Splitting and decoding a compact JWS without trusting it: strict unpadded base64url, a JSON
//! header with a string `alg`, no `crit`, and a JSON-object payload whose registered claims have
//! the right JSON types. Key-source headers (`jwk`, `jku`, `x5u`, `x5c`) are never read. The
//! signature is checked by the caller, with a key chosen by the *configured* issuer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::borrow::Cow;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::alg::Alg;
use crate::error::TokenError;

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
    /// `typ` is `at+jwt` or `application/at+jwt` (RFC 9068 §2.1, case-insensitive).
    pub typ_is_access_token: bool,
    /// The registered claims.
    pub claims: Claims,
}

/// The token's `cnf` (confirmation) claim: what it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// `cnf.jkt`: a DPoP key's RFC 7638 thumbprint (RFC 9449 §6.1).
    Jkt(String),
    /// Anything else (`x5t#S256`, a certificate binding, RFC 8705, or an unknown method):
    /// nothing jwtgate can check, so never accepted.
    Other,
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
    /// `nonce` is present: an OpenID Connect ID token, never an access token.
    pub has_nonce: bool,
    /// `cnf`, when the token is sender-constrained.
    pub binding: Option<Binding>,
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default)]
    iss: Option<Typed<Cow<'a, str>>>,
    #[serde(borrow, default)]
    sub: Option<Typed<Cow<'a, str>>>,
    #[serde(borrow, default)]
    aud: Option<Typed<Vec<Cow<'a, str>>>>,
    #[serde(default)]
    exp: Option<Typed<f64>>,
    #[serde(default)]
    nbf: Option<Typed<f64>>,
    #[serde(default)]
    iat: Option<Typed<f64>>,
    #[serde(borrow, default)]
    scope: Option<Typed<Vec<Cow<'a, str>>>>,
    #[serde(borrow, default)]
    scp: Option<Typed<Vec<Cow<'a, str>>>>,
    #[serde(default)]
    nonce: Option<IgnoredAny>,
    #[serde(default)]
    cnf: Option<serde_json::Value>,
}

/// Reads `cnf`: exactly `{"jkt": "<thumbprint>"}` is a DPoP binding; any other member or shape
/// binds the token to something jwtgate cannot check.
fn binding(cnf: serde_json::Value) -> Binding {
    match cnf.as_object() {
        Some(m) if m.len() == 1 => match m.get("jkt").and_then(serde_json::Value::as_str) {
            Some(j) if !j.is_empty() => Binding::Jkt(j.to_string()),
            _ => Binding::Other,
        },
        _ => Binding::Other,
    }
}

/// A claim of the expected JSON type, or `WrongType` (the value is consumed either way), so a
/// wrong type becomes a precise error instead of a parse failure. Parsing borrows from the
/// decoded payload: no allocation for strings without escapes.
enum Typed<T> {
    Ok(T),
    WrongType,
}

/// Which JSON shapes a `Typed<T>` accepts.
trait Shape<'de>: Sized {
    fn from_str(s: Cow<'de, str>) -> Option<Self>;
    fn from_f64(_v: f64) -> Option<Self> {
        None
    }
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        drain_seq(seq).map(|_| None)
    }
}

impl<'de: 'a, 'a> Shape<'de> for Cow<'a, str> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(s)
    }
}

impl<'de> Shape<'de> for f64 {
    fn from_str(_s: Cow<'de, str>) -> Option<Self> {
        None
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
}

impl<'de: 'a, 'a> Shape<'de> for Vec<Cow<'a, str>> {
    fn from_str(s: Cow<'de, str>) -> Option<Self> {
        Some(vec![s])
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut out = Vec::new();
        let mut ok = true;
        while let Some(item) = seq.next_element::<Typed<Cow<'a, str>>>()? {
            match item {
                Typed::Ok(s) => out.push(s),
                Typed::WrongType => ok = false,
            }
        }
        Ok(ok.then_some(out))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

struct TypedVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for TypedVisitor<T> {
    type Value = Typed<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Borrowed(v)).map_or(Typed::WrongType, Typed::Ok))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(v.to_string())).map_or(Typed::WrongType, Typed::Ok))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(T::from_str(Cow::Owned(v)).map_or(Typed::WrongType, Typed::Ok))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(T::from_f64(v).map_or(Typed::WrongType, Typed::Ok))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_f64(v as f64)
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Self::Value, E> {
        Ok(Typed::WrongType)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Typed::WrongType)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Ok(T::from_seq(seq)?.map_or(Typed::WrongType, Typed::Ok))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Typed::WrongType)
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TypedVisitor(std::marker::PhantomData))
    }
}

fn b64(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::BadEncoding)
}

fn typed<T>(v: Option<Typed<T>>, wrong: TokenError) -> Result<Option<T>, TokenError> {
    match v {
        None => Ok(None),
        Some(Typed::Ok(t)) => Ok(Some(t)),
        Some(Typed::WrongType) => Err(wrong),
    }
}

fn push_scopes(list: Vec<Cow<'_, str>>, out: &mut Vec<Box<str>>) {
    for item in list {
        // `scope` strings are space-separated (RFC 8693 §4.2); array items may be too.
        out.extend(item.split(' ').filter(|x| !x.is_empty()).map(Box::<str>::from));
    }
}

/// The registered claims of a JSON object (a JWT payload, or an RFC 7662 introspection answer:
/// the same members with the same types), each checked for its JSON type.
pub fn claims_of(json: &[u8]) -> Result<Claims, TokenError> {
    let raw: RawClaims<'_> = serde_json::from_slice(json).map_err(|_| TokenError::BadPayload)?;
    let mut scopes = Vec::new();
    if let Some(sc) = typed(raw.scope, TokenError::BadClaimType)? {
        push_scopes(sc, &mut scopes);
    }
    if let Some(sc) = typed(raw.scp, TokenError::BadClaimType)? {
        push_scopes(sc, &mut scopes);
    }
    let claims = Claims {
        iss: typed(raw.iss, TokenError::BadClaimType)?.map(Cow::into_owned),
        sub: typed(raw.sub, TokenError::BadClaimType)?.map(Cow::into_owned),
        aud: typed(raw.aud, TokenError::BadClaimType)?.unwrap_or_default().into_iter().map(Cow::into_owned).collect(),
        exp: typed(raw.exp, TokenError::BadTimeClaim)?,
        nbf: typed(raw.nbf, TokenError::BadTimeClaim)?,
        iat: typed(raw.iat, TokenError::BadTimeClaim)?,
        scopes,
        has_nonce: raw.nonce.is_some(),
        binding: raw.cnf.map(binding),
    };
    Ok(claims)
}

/// True when `token` has the shape of a JWS compact serialization (exactly two dots): anything
/// else is, for an issuer that introspects, a reference token to ask about.
pub fn is_compact_jws(token: &[u8]) -> bool {
    // SIMD scans: the JWT path of an issuer that introspects pays this on every request.
    memchr::memchr_iter(b'.', token).take(3).count() == 2
}

/// Splits and decodes `token`.
pub fn decode(token: &str) -> Result<Decoded<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        // No dot at all: a reference token (Asgardeo's default is an opaque UUID).
        return Err(if token.contains('.') { TokenError::Malformed } else { TokenError::Opaque });
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

    let header: RawHeader<'_> = serde_json::from_slice(&header_json).map_err(|_| TokenError::BadHeader)?;
    if header.crit.is_some() {
        return Err(TokenError::CritUnsupported);
    }
    let alg = Alg::from_name(&header.alg);
    let kid = header.kid.map(Cow::into_owned);
    let typ_is_access_token = header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));

    let claims = claims_of(&payload_json)?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Decoded { alg, kid, signing_input, payload_b64: p, signature, typ_is_access_token, claims })
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
        assert_eq!(decode("6a1c5f3e-2b8d-4c1e-9f7a-0d2e4b6c8a10").unwrap_err(), TokenError::Opaque);
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
