//! DPoP proofs (RFC 9449): the check that a request presenting a key-bound access token
//! (`cnf.jkt`) was signed by that key, for this method and URI, just now, once. The checks, in
//! the order a certified implementation makes them (node-oidc-provider's `validate_dpop`): the
//! proof is a compact JWS with `typ: dpop+jwt`, an allowed asymmetric `alg` and a *public*
//! `jwk` in its header, signed by that key; `iat` within the window; `jti` present; `htm` the
//! request's method; `htu` the request's URI (query and fragment ignored); `ath` the hash of
//! the access token; the key's RFC 7638 thumbprint equal to the token's `cnf.jkt`; and the
//! `jti` not seen within the window (a bounded replay cache shared by all connections, written
//! only for a proof that passed everything else). The proof changes with every request, so it
//! is checked every time, also when the token's verdict comes from the cache.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::alg::Alg;
use crate::jwks::{KeySet, SigCheck};

/// Why a DPoP proof is refused (401 `invalid_dpop_proof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// No `DPoP` header.
    Missing,
    /// More than one `DPoP` header.
    Several,
    /// Not a compact JWS with JSON header and payload.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    Typ,
    /// `alg` is not one of the issuer's algorithms.
    Alg,
    /// No usable public `jwk` in the header.
    Jwk,
    /// The `jwk` carries private key members.
    PrivateKey,
    /// The signature does not verify with the `jwk`.
    Signature,
    /// `iat` missing, too old or in the future.
    Iat,
    /// No `jti`.
    Jti,
    /// `htm` is not the request's method.
    Htm,
    /// `htu` is not the request's URI.
    Htu,
    /// `ath` is not the hash of the access token.
    Ath,
    /// The proof's key is not the one the token is bound to.
    KeyMismatch,
    /// The `jti` was seen before within the window.
    Replayed,
    /// The replay cache is full of unexpired proofs (the server's limit, not the client's
    /// fault: answered 503).
    ReplayCacheFull,
}

impl ProofError {
    /// Every refusal of a proof (`ReplayCacheFull` is the server's, counted apart).
    pub const ALL: [ProofError; 15] = [
        ProofError::Missing,
        ProofError::Several,
        ProofError::Malformed,
        ProofError::Typ,
        ProofError::Alg,
        ProofError::Jwk,
        ProofError::PrivateKey,
        ProofError::Signature,
        ProofError::Iat,
        ProofError::Jti,
        ProofError::Htm,
        ProofError::Htu,
        ProofError::Ath,
        ProofError::KeyMismatch,
        ProofError::Replayed,
    ];

    /// The metric reason label.
    pub fn reason(self) -> &'static str {
        match self {
            ProofError::Missing => "dpop_missing",
            ProofError::Several => "dpop_several",
            ProofError::Malformed => "dpop_malformed",
            ProofError::Typ => "dpop_typ",
            ProofError::Alg => "dpop_alg",
            ProofError::Jwk => "dpop_jwk",
            ProofError::PrivateKey => "dpop_private_key",
            ProofError::Signature => "dpop_signature",
            ProofError::Iat => "dpop_iat",
            ProofError::Jti => "dpop_jti",
            ProofError::Htm => "dpop_htm",
            ProofError::Htu => "dpop_htu",
            ProofError::Ath => "dpop_ath",
            ProofError::KeyMismatch => "dpop_key_mismatch",
            ProofError::Replayed => "dpop_replayed",
            ProofError::ReplayCacheFull => "dpop_replay_cache_full",
        }
    }

    /// One human sentence, safe for a header.
    pub fn description(self) -> &'static str {
        match self {
            ProofError::Missing => "a DPoP proof header is required with the DPoP scheme",
            ProofError::Several => "more than one DPoP proof header",
            ProofError::Malformed => "the DPoP proof is not a compact JWS with JSON header and payload",
            ProofError::Typ => "the DPoP proof typ must be dpop+jwt",
            ProofError::Alg => "the DPoP proof alg is not allowed",
            ProofError::Jwk => "the DPoP proof header has no usable public jwk",
            ProofError::PrivateKey => "the DPoP proof jwk contains private key material",
            ProofError::Signature => "the DPoP proof signature is invalid",
            ProofError::Iat => "the DPoP proof iat is missing, too old or in the future",
            ProofError::Jti => "the DPoP proof has no jti",
            ProofError::Htm => "the DPoP proof htm is not the request method",
            ProofError::Htu => "the DPoP proof htu is not the request URI",
            ProofError::Ath => "the DPoP proof ath is not the hash of the access token",
            ProofError::KeyMismatch => "the DPoP proof key is not the key the token is bound to",
            ProofError::Replayed => "the DPoP proof was already used (jti replayed)",
            ProofError::ReplayCacheFull => "too many DPoP proofs are in their replay window; retry later",
        }
    }
}

/// Proofs at most this long are read (a proof is a few hundred bytes to ~2 KiB with an RSA key).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// `jti`s remembered at most by default (`server.dpop_replay_cache_entries`).
pub const DEFAULT_REPLAY_CAPACITY: usize = 1_000_000;
/// Entries are kept in generations by the second they expire in, this many seconds a
/// generation: a lookup probes one table per live generation (a proof window of 181 s, the
/// default, is seven), and a whole generation is dropped at once when it is over.
const GENERATION_SECONDS: i64 = 32;

/// What the replay cache says of a `jti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstUse {
    /// Not seen within its window: now remembered.
    Yes,
    /// Seen before, and its window is not over.
    Replayed,
    /// The cache is full of unexpired proofs: this one cannot be remembered, so it cannot be
    /// accepted (forgetting an unexpired proof would let it be replayed).
    Full,
}

/// The `jti`s seen within their window, shared by every connection. Each is remembered until
/// its window is over (rounded up to the end of its generation, at most 32 s more) and never
/// forgotten before: when `capacity` unexpired proofs are remembered, new ones are refused.
/// About 20 to 40 bytes an entry (a keyed 128-bit digest in a hash set; see BENCHMARKS.md).
pub struct ReplayCache {
    seen: Mutex<Generations>,
    keys: (u64, u64),
    capacity: usize,
}

/// Hash sets of keyed `jti` digests, one per generation, oldest first.
#[derive(Default)]
struct Generations {
    /// `(end, digests)`: every digest in it expires at or before `end` (Unix seconds).
    sets: VecDeque<(i64, HashSet<[u64; 2]>)>,
    len: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        ReplayCache::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// A cache remembering at most `capacity` proofs.
    pub fn with_capacity(capacity: usize) -> ReplayCache {
        ReplayCache { seen: Mutex::new(Generations::default()), keys: (rand::random(), rand::random()), capacity }
    }

    /// How many proofs are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `jti` until `expires` (Unix seconds), unless it is already there or the cache
    /// is full of unexpired proofs.
    pub fn first_use(&self, jti: &str, now: i64, expires: i64) -> FirstUse {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(self.keys.0, self.keys.1);
        h.write(jti.as_bytes());
        let digest = h.finish128();
        let key = [digest.h1, digest.h2];
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let g = &mut *guard;
        // Generations whose every entry has expired go as a whole.
        while g.sets.front().is_some_and(|(end, _)| *end < now) {
            if let Some((_, set)) = g.sets.pop_front() {
                g.len -= set.len();
            }
        }
        if g.sets.iter().any(|(_, set)| set.contains(&key)) {
            return FirstUse::Replayed;
        }
        if g.len >= self.capacity {
            return FirstUse::Full;
        }
        let end = expires.div_euclid(GENERATION_SECONDS) * GENERATION_SECONDS + GENERATION_SECONDS - 1;
        let at = g.sets.iter().position(|(e, _)| *e >= end).unwrap_or(g.sets.len());
        if g.sets.get(at).is_none_or(|(e, _)| *e != end) {
            g.sets.insert(at, (end, HashSet::new()));
        }
        if let Some((_, set)) = g.sets.get_mut(at) {
            set.insert(key);
            g.len += 1;
        }
        FirstUse::Yes
    }
}

/// What a proof must match.
pub struct Expected<'a> {
    /// The access token as sent.
    pub token: &'a [u8],
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The request URI: scheme, authority and path.
    pub htu: &'a str,
    /// The issuer's algorithms.
    pub algs: &'a [Alg],
    /// Now, Unix seconds.
    pub now: i64,
    /// How old a proof may be (`dpop_max_age_seconds`).
    pub max_age: i64,
    /// Clock skew allowed.
    pub leeway: i64,
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over its required members in
/// lexicographic order, base64url.
pub fn thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str).map(|v| Value::String(v.to_string()).to_string());
    let canonical = match jwk.get("kty").and_then(Value::as_str)? {
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s("e")?, s("n")?),
        "EC" => format!(r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#, s("crv")?, s("x")?, s("y")?),
        "OKP" => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, s("crv")?, s("x")?),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())))
}

const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn segment(s: &str) -> Result<Value, ProofError> {
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| ProofError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(ProofError::Malformed)
    }
}

/// True when two URIs name the same resource for DPoP: scheme, host, port and path equal,
/// query and fragment ignored (RFC 9449 §4.3, step 9).
fn same_target(proof: &str, expected: &str) -> bool {
    let (Ok(a), Ok(b)) = (url::Url::parse(proof), url::Url::parse(expected)) else { return false };
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// The `alg`, `htm` and `htu` a proof claims, each cut to 200 characters, for the log line of
/// a refusal (decoded again only on that path).
pub fn claimed(proof: &str) -> (Option<String>, Option<String>, Option<String>) {
    let mut parts = proof.split('.');
    let field = |segment: Option<&str>, name: &str| {
        let v = segment.and_then(|s| self::segment(s).ok())?;
        v.get(name).and_then(Value::as_str).map(|s| s.chars().take(200).collect())
    };
    let (h, p) = (parts.next(), parts.next());
    (field(h, "alg"), field(p, "htm"), field(p, "htu"))
}

/// Checks `proof` against what the request and its token say, this process remembering the
/// proofs seen.
pub fn verify(proof: &str, e: &Expected<'_>, replay: &ReplayCache) -> Result<(), ProofError> {
    let fresh = check(proof, e)?;
    match replay.first_use(&fresh.jti, e.now, fresh.remember_until) {
        FirstUse::Yes => Ok(()),
        FirstUse::Replayed => Err(ProofError::Replayed),
        FirstUse::Full => Err(ProofError::ReplayCacheFull),
    }
}

/// A proof that passed every check but the replay check, which its caller makes (in this
/// process, or in a store every replica shares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreplayed {
    /// Its `jti`.
    pub jti: String,
    /// Until when (Unix seconds) it must be remembered: as long as `iat` can accept it.
    pub remember_until: i64,
}

/// Every check of `proof` but the replay check.
pub fn check(proof: &str, e: &Expected<'_>) -> Result<Unreplayed, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed);
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ProofError::Malformed);
    };
    let header = segment(h)?;
    let payload = segment(p)?;
    let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| ProofError::Malformed)?;
    if !header.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return Err(ProofError::Typ);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .filter(|a| e.algs.contains(a))
        .ok_or(ProofError::Alg)?;
    let jwk = header.get("jwk").filter(|j| j.is_object()).ok_or(ProofError::Jwk)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.get(m).is_some()) {
        return Err(ProofError::PrivateKey);
    }
    // The key is parsed exactly as a JWKS key is (sizes, curves, `alg` pinning), in place.
    let set = KeySet::single(jwk, &[alg]).ok_or(ProofError::Jwk)?;
    if set.verify(None, alg, &proof.as_bytes()[..h.len() + 1 + p.len()], &signature) != SigCheck::Valid {
        return Err(ProofError::Signature);
    }
    let iat = payload.get("iat").and_then(Value::as_f64).ok_or(ProofError::Iat)? as i64;
    if iat > e.now + e.leeway || iat < e.now - e.max_age - e.leeway {
        return Err(ProofError::Iat);
    }
    let jti = payload
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(ProofError::Jti)?;
    if payload.get("htm").and_then(Value::as_str) != Some(e.method) {
        return Err(ProofError::Htm);
    }
    if !payload.get("htu").and_then(Value::as_str).is_some_and(|u| same_target(u, e.htu)) {
        return Err(ProofError::Htu);
    }
    let ath = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, e.token));
    if payload.get("ath").and_then(Value::as_str) != Some(ath.as_str()) {
        return Err(ProofError::Ath);
    }
    if thumbprint(jwk).as_deref() != Some(e.jkt) {
        return Err(ProofError::KeyMismatch);
    }
    // Remembered for as long as `iat` above can accept it, and no less.
    Ok(Unreplayed { jti: jti.to_string(), remember_until: iat + e.max_age + 2 * e.leeway + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn a_jti_is_accepted_once_within_its_window() {
        let c = ReplayCache::default();
        assert_eq!(c.first_use("a", 100, 160), FirstUse::Yes);
        assert_eq!(c.first_use("a", 120, 180), FirstUse::Replayed);
        assert_eq!(c.first_use("b", 120, 180), FirstUse::Yes);
        assert_eq!(c.first_use("a", 159, 221), FirstUse::Replayed, "still in its window");
        assert_eq!(c.first_use("a", 200, 260), FirstUse::Yes, "forgotten after its window");
    }

    #[test]
    fn a_full_cache_refuses_new_proofs_and_forgets_none_before_its_time() {
        let c = ReplayCache::with_capacity(3);
        for jti in ["a", "b", "c"] {
            assert_eq!(c.first_use(jti, 1000, 1181), FirstUse::Yes);
        }
        // A flood of new proofs cannot push "a" out.
        for i in 0..100 {
            assert_eq!(c.first_use(&format!("flood{i}"), 1010, 1191), FirstUse::Full);
        }
        assert_eq!(c.first_use("a", 1100, 1281), FirstUse::Replayed);
        // Once their window is over, room again.
        assert_eq!(c.first_use("d", 1250, 1431), FirstUse::Yes);
        assert_eq!(c.len(), 1);
    }
}
