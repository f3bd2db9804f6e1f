//! Parses a JWKS document into a key set ready for verification: every key is parsed once
//! (aws-lc-rs `ParsedPublicKey`) for every allowed algorithm it may verify, so the hot path
//! never re-parses key material. A single bad or unsupported key is skipped with a reason; only
//! a document that is not a JWKS at all, or leaves no usable key, is an error.

use std::collections::HashMap;

use aws_lc_rs::signature::{ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use serde_json::Value;

use crate::alg::{Alg, KeyKind};

/// At most this many keys are read from one JWKS; the rest are skipped.
pub const MAX_KEYS: usize = 64;

/// Why a JWKS document was refused as a whole.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("the JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotAJwks(String),
    /// Every key was skipped.
    #[error("the JWKS has no key usable with the allowed algorithms ({0} skipped)")]
    NoUsableKey(usize),
}

/// One verification key: its `kid` and a parsed public key per algorithm it may verify.
pub struct Key {
    /// The `kid`, when the JWK has one.
    pub kid: Option<Box<str>>,
    verifiers: Vec<(Alg, ParsedPublicKey)>,
}

impl Key {
    /// The parsed key for `alg`, if this key may verify it.
    pub fn verifier(&self, alg: Alg) -> Option<&ParsedPublicKey> {
        self.verifiers.iter().find(|(a, _)| *a == alg).map(|(_, k)| k)
    }

    /// The algorithms this key verifies.
    pub fn algs(&self) -> impl Iterator<Item = Alg> + '_ {
        self.verifiers.iter().map(|(a, _)| *a)
    }
}

/// The outcome of looking a key up and checking a signature with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigCheck {
    /// The signature verified.
    Valid,
    /// No key carries the token's `kid`.
    UnknownKid,
    /// A key has the `kid` (or, without `kid`, keys exist) but none may verify this `alg`.
    NoKeyForAlg,
    /// A key was tried and the signature did not verify.
    BadSignature,
}

/// An immutable, parsed key set. Swapped whole (ArcSwap) when the JWKS changes.
pub struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<Box<str>, Vec<usize>>,
}

/// A parsed key set plus the reasons keys were skipped (to be logged by the caller).
pub struct ParsedJwks {
    /// The usable keys.
    pub set: KeySet,
    /// One line per skipped key.
    pub skipped: Vec<String>,
}

fn b64(s: &str) -> Option<Vec<u8>> {
    // JWK members are unpadded base64url; tolerate padding, which some IdPs send.
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn str_field<'a>(jwk: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    }
}

impl KeySet {
    /// Parses a JWKS body, keeping only keys usable with `allowed`.
    pub fn parse(body: &[u8], allowed: &[Alg]) -> Result<ParsedJwks, JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| JwksError::NotAJwks(e.to_string()))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::NotAJwks("no \"keys\" array".into()));
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            if i >= MAX_KEYS {
                skipped.push(format!("{} keys beyond the first {MAX_KEYS} ignored", list.len() - MAX_KEYS));
                break;
            }
            let label = jwk
                .get("kid")
                .and_then(Value::as_str)
                .map(|k| format!("key {i} (kid {k:?})"))
                .unwrap_or_else(|| format!("key {i}"));
            match parse_key(jwk, allowed) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(format!("{label}: {why}")),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(skipped.len()));
        }
        let mut by_kid: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(i);
            }
        }
        Ok(ParsedJwks { set: KeySet { keys, by_kid }, skipped })
    }

    /// A set of the one key `jwk` (a DPoP proof's `jwk` header), parsed exactly as a JWKS key
    /// is (sizes, curves, `use`, `alg` pinning); `None` when it is not usable with `allowed`.
    /// No `kid` index: `verify(None, …)` uses it whatever `kid` it names.
    pub fn single(jwk: &Value, allowed: &[Alg]) -> Option<KeySet> {
        parse_key(jwk, allowed).ok().map(|key| KeySet { keys: vec![key], by_kid: HashMap::new() })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, for status output.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// True when some key carries `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Verifies `signature` over `message`. With a `kid`, only keys with that `kid` are used —
    /// never another key of the set. Without one, every key usable for `alg` is tried.
    pub fn verify(&self, kid: Option<&str>, alg: Alg, message: &[u8], signature: &[u8]) -> SigCheck {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(idx) => try_keys(idx.iter().map(|&i| &self.keys[i]), alg, message, signature),
                None => SigCheck::UnknownKid,
            },
            None => try_keys(self.keys.iter(), alg, message, signature),
        }
    }
}

/// Tries each key that may verify `alg`: valid on the first success; otherwise a bad signature
/// if any key was tried, or no key for this algorithm.
fn try_keys<'a>(keys: impl Iterator<Item = &'a Key>, alg: Alg, message: &[u8], signature: &[u8]) -> SigCheck {
    let mut tried = false;
    for verifier in keys.filter_map(|k| k.verifier(alg)) {
        tried = true;
        if verifier.verify_sig(message, signature).is_ok() {
            return SigCheck::Valid;
        }
    }
    if tried {
        SigCheck::BadSignature
    } else {
        SigCheck::NoKeyForAlg
    }
}

fn parse_key(jwk: &Value, allowed: &[Alg]) -> Result<Key, String> {
    if !jwk.is_object() {
        return Err("not a JSON object".into());
    }
    let kid = str_field(jwk, "kid")?.map(Box::<str>::from);
    match str_field(jwk, "use")? {
        None | Some("sig") => {}
        Some("enc") => return Err("\"use\": \"enc\" keys verify nothing".into()),
        Some(other) => return Err(format!("unknown \"use\": {other:?}")),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops.as_array().is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("\"key_ops\" does not include \"verify\"".into());
        }
    }
    let kty = str_field(jwk, "kty")?.ok_or("no \"kty\"")?;
    let kind = match kty {
        "RSA" => KeyKind::Rsa,
        "EC" => match str_field(jwk, "crv")? {
            Some("P-256") => KeyKind::EcP256,
            Some("P-384") => KeyKind::EcP384,
            other => return Err(format!("unsupported EC curve {other:?}")),
        },
        "OKP" => match str_field(jwk, "crv")? {
            Some("Ed25519") => KeyKind::Ed25519,
            other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        "oct" => return Err("symmetric (\"oct\") keys are never used".into()),
        other => return Err(format!("unsupported \"kty\": {other:?}")),
    };
    let pinned = match str_field(jwk, "alg")? {
        None => None,
        Some(name) => {
            let alg = Alg::from_name(name).ok_or_else(|| format!("unsupported \"alg\": {name:?}"))?;
            if alg.key_kind() != kind {
                return Err(format!("\"alg\": {name:?} does not fit a {kty} key"));
            }
            Some(alg)
        }
    };
    let candidates: Vec<Alg> =
        allowed.iter().copied().filter(|a| a.key_kind() == kind && pinned.is_none_or(|p| p == *a)).collect();
    if candidates.is_empty() {
        return Err(match pinned {
            Some(p) => format!("its \"alg\" {} is not in the issuer's algorithms", p.name()),
            None => "no allowed algorithm uses this key type".into(),
        });
    }
    let mut verifiers = Vec::with_capacity(candidates.len());
    match kind {
        KeyKind::Rsa => {
            let n = str_field(jwk, "n")?.and_then(b64).ok_or("missing or bad \"n\"")?;
            let e = str_field(jwk, "e")?.and_then(b64).ok_or("missing or bad \"e\"")?;
            let n = strip_zeros(&n);
            let e = strip_zeros(&e);
            // After `strip_zeros` the first byte is non-zero; an empty `n` has no bits (found by
            // fuzzing: `n.len() * 8 - 8` underflowed for `"n": ""`).
            let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(format!("RSA modulus of {bits} bits (2048..8192 accepted)"));
            }
            for alg in candidates {
                // Only RSA algorithms reach this arm, and each has parameters.
                let Some(params) = alg.rsa_parameters() else { continue };
                let key = RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .map_err(|e| format!("bad RSA key: {e}"))?;
                verifiers.push((alg, key));
            }
        }
        KeyKind::EcP256 | KeyKind::EcP384 => {
            let len = if kind == KeyKind::EcP256 { 32 } else { 48 };
            let x = str_field(jwk, "x")?.and_then(b64).ok_or("missing or bad \"x\"")?;
            let y = str_field(jwk, "y")?.and_then(b64).ok_or("missing or bad \"y\"")?;
            if x.len() != len || y.len() != len {
                return Err(format!("EC coordinates must be {len} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            for alg in candidates {
                let Some(params) = alg.other_parameters() else { continue };
                let key = ParsedPublicKey::new(params, &point).map_err(|e| format!("bad EC key: {e}"))?;
                verifiers.push((alg, key));
            }
        }
        KeyKind::Ed25519 => {
            let x = str_field(jwk, "x")?.and_then(b64).ok_or("missing or bad \"x\"")?;
            if x.len() != 32 {
                return Err("Ed25519 keys are 32 bytes".into());
            }
            for alg in candidates {
                let Some(params) = alg.other_parameters() else { continue };
                let key = ParsedPublicKey::new(params, &x).map_err(|e| format!("bad Ed25519 key: {e}"))?;
                verifiers.push((alg, key));
            }
        }
    }
    Ok(Key { kid, verifiers })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_jwks_is_an_error() {
        assert!(matches!(KeySet::parse(b"[]", &[Alg::RS256]), Err(JwksError::NotAJwks(_))));
        assert!(matches!(KeySet::parse(b"{\"keys\": 3}", &[Alg::RS256]), Err(JwksError::NotAJwks(_))));
        assert!(matches!(KeySet::parse(b"nope", &[Alg::RS256]), Err(JwksError::NotAJwks(_))));
    }

    #[test]
    fn an_empty_or_zero_rsa_modulus_is_skipped_not_a_panic() {
        // Regression: found by `fuzz/run.sh` (jwks_parse): `"n": ""` underflowed the bit count.
        for n in ["", "AAAA"] {
            let doc = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k", "n": n, "e": "AQAB"}]});
            let parsed = KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256]);
            assert!(parsed.map_or(true, |p| p.set.is_empty()), "n = {n:?}");
        }
    }

    #[test]
    fn bad_keys_are_skipped_not_fatal() {
        let ed = crate::mint::SigningKey::generate(Alg::EdDSA, "ed").expect("key");
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "tiny"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            ed.jwk(),
            {"kty": "OKP", "crv": "Ed25519", "x": ed.jwk()["x"], "use": "enc", "kid": "enc"},
        ]});
        let parsed = KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256, Alg::EdDSA]).expect("one usable key");
        assert_eq!(parsed.set.len(), 1);
        assert_eq!(parsed.skipped.len(), 4, "{:?}", parsed.skipped);
        assert!(parsed.set.has_kid("ed"));
        assert!(!parsed.set.has_kid("enc"));
    }

    #[test]
    fn jwk_alg_pins_the_key() {
        let rsa = crate::mint::SigningKey::generate(Alg::RS256, "r").expect("key");
        let mut jwk = rsa.jwk();
        jwk["alg"] = "PS256".into();
        let doc = serde_json::json!({ "keys": [jwk] });
        let parsed = KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256, Alg::PS256]).expect("parsed");
        let algs: Vec<_> = parsed.set.keys()[0].algs().collect();
        assert_eq!(algs, vec![Alg::PS256]);
    }
}
