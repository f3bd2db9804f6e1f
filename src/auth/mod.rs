//! The hot path's decision: from an `Authorization` header to `Verified` claims or a precise
//! refusal. It reads key sets through `ArcSwap` and never does I/O, except the one
//! rate-limited, single-flight JWKS refetch an unknown `kid` may trigger. A verified-token
//! cache (keyed by the whole token, entry life capped by `exp`) lets a repeated token skip the
//! signature check; the time claims and scopes are still checked on every request.

pub mod alg;
pub mod bearer;
pub mod error;
pub mod jwt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use moka::sync::Cache;
use moka::Expiry;

use crate::clock::Clock;
use crate::keys::jwks::Verdict;
use crate::keys::KeyRegistry;
use crate::metrics::Metrics;
pub use error::{AuthError, TokenError};

/// A token whose signature, issuer and audience are verified. Shared by cache hits.
#[derive(Debug)]
pub struct Verified {
    /// Index of the issuer in the configuration.
    pub issuer: usize,
    /// The issuer's key generation it was verified against.
    pub generation: u64,
    /// `exp`.
    pub exp: f64,
    /// `nbf`.
    pub nbf: Option<f64>,
    /// `iat`.
    pub iat: Option<f64>,
    /// Granted scopes (`scope` and `scp` merged).
    pub scopes: Box<[Box<str>]>,
    /// The value of `x-jwt-payload`: the verified payload segment, base64url, as received.
    pub payload_header: HeaderValue,
    /// The value of `x-jwt-sub`, when the token has a `sub`.
    pub sub_header: Option<HeaderValue>,
    /// How long the cache may keep it.
    ttl: Duration,
}

impl Verified {
    /// True when every scope in `required` was granted (exact string match).
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| **s == **r))
    }

    /// The verified payload as JSON (for `validate`).
    pub fn claims_json(&self) -> Option<serde_json::Value> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(self.payload_header.as_bytes()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// A refusal, with the issuer when it was known (for metrics and `validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub error: AuthError,
    /// The issuer index, when the token's `iss` was resolved.
    pub issuer: Option<usize>,
}

impl From<AuthError> for Rejected {
    fn from(error: AuthError) -> Self {
        Rejected { error, issuer: None }
    }
}

struct ExpireWithToken;

impl Expiry<Box<str>, Arc<Verified>> for ExpireWithToken {
    fn expire_after_create(&self, _key: &Box<str>, value: &Arc<Verified>, _created_at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Decides whether a token is acceptable.
pub struct Authenticator {
    keys: Arc<KeyRegistry>,
    clock: Arc<dyn Clock>,
    cache: Option<Cache<Box<str>, Arc<Verified>>>,
    max_token_bytes: usize,
    metrics: Arc<Metrics>,
    cache_hit: prometheus::IntCounter,
    cache_miss: prometheus::IntCounter,
}

/// Cached entries never outlive this, whatever `exp` says.
const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

impl Authenticator {
    /// An authenticator over `keys`; `cache_entries == 0` turns the verified-token cache off.
    pub fn new(
        keys: Arc<KeyRegistry>,
        clock: Arc<dyn Clock>,
        cache_entries: u64,
        max_token_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        let cache = (cache_entries > 0)
            .then(|| Cache::builder().max_capacity(cache_entries).expire_after(ExpireWithToken).build());
        Authenticator {
            cache_hit: metrics.token_cache.with_label_values(&["hit"]),
            cache_miss: metrics.token_cache.with_label_values(&["miss"]),
            keys,
            clock,
            cache,
            max_token_bytes,
            metrics,
        }
    }

    /// The key stores.
    pub fn keys(&self) -> &Arc<KeyRegistry> {
        &self.keys
    }

    /// Verifies the request's bearer token and the route's scopes.
    pub async fn authorize(&self, headers: &HeaderMap, scopes: &[String]) -> Result<Arc<Verified>, Rejected> {
        let token = bearer::extract(headers)?;
        let verified = self.verify(token, None).await?;
        if !verified.has_scopes(scopes) {
            return Err(Rejected { error: AuthError::InsufficientScope, issuer: Some(verified.issuer) });
        }
        Ok(verified)
    }

    /// Counts a refusal in `jwtgate_token_rejections_total`.
    pub fn count_rejection(&self, r: &Rejected) {
        let issuer = r.issuer.and_then(|i| self.keys.issuers.get(i)).map_or("", |k| k.name());
        self.metrics.rejections.with_label_values(&[issuer, r.error.reason()]).inc();
    }

    /// Verifies a token (signature, issuer, audience, time claims) but not scopes. With
    /// `only_issuer`, tokens of any other issuer are refused.
    pub async fn verify(&self, token: &str, only_issuer: Option<usize>) -> Result<Arc<Verified>, Rejected> {
        let invalid = |t: TokenError, issuer: Option<usize>| Rejected { error: AuthError::InvalidToken(t), issuer };
        if token.len() > self.max_token_bytes {
            return Err(invalid(TokenError::TooLong, None));
        }
        if let Some(cache) = &self.cache {
            if let Some(v) = cache.get(token) {
                if let Some(k) = self.keys.issuers.get(v.issuer) {
                    if k.generation() == v.generation {
                        self.cache_hit.inc();
                        if !k.is_usable() {
                            return Err(Rejected { error: AuthError::Unavailable, issuer: Some(v.issuer) });
                        }
                        if only_issuer.is_some_and(|i| i != v.issuer) {
                            return Err(invalid(TokenError::WrongIssuer, Some(v.issuer)));
                        }
                        self.check_time(&v).map_err(|t| invalid(t, Some(v.issuer)))?;
                        return Ok(v);
                    }
                }
            }
            self.cache_miss.inc();
        }
        let v = self.verify_uncached(token, only_issuer).await?;
        self.check_time(&v).map_err(|t| invalid(t, Some(v.issuer)))?;
        if let Some(cache) = &self.cache {
            if !v.ttl.is_zero() {
                cache.insert(token.into(), v.clone());
            }
        }
        Ok(v)
    }

    fn check_time(&self, v: &Verified) -> Result<(), TokenError> {
        let leeway = self.keys.issuers.get(v.issuer).map_or(0, |k| k.cfg.leeway) as f64;
        let now = self.clock.now_unix() as f64;
        if v.exp + leeway <= now {
            return Err(TokenError::Expired);
        }
        if v.nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(TokenError::NotYetValid);
        }
        if v.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(())
    }

    async fn verify_uncached(&self, token: &str, only_issuer: Option<usize>) -> Result<Arc<Verified>, Rejected> {
        let invalid = |t: TokenError, issuer: Option<usize>| Rejected { error: AuthError::InvalidToken(t), issuer };
        let d = jwt::decode(token).map_err(|t| invalid(t, None))?;
        let iss = d.claims.iss.as_deref().ok_or(invalid(TokenError::MissingIssuer, None))?;

        let (idx, loaded) = match self.keys.by_iss(iss) {
            Some(found) => found,
            None => {
                // The issuer may be one whose keys never loaded (IdP down at start): give each
                // such issuer its rate-limited load attempt before calling the token unknown.
                let unloaded: Vec<_> = self.keys.issuers.iter().filter(|k| k.loaded().is_none()).cloned().collect();
                if unloaded.is_empty() {
                    return Err(invalid(TokenError::UnknownIssuer, None));
                }
                for k in &unloaded {
                    k.refetch_for_unknown_kid(0).await;
                }
                match self.keys.by_iss(iss) {
                    Some(found) => found,
                    None if self.keys.issuers.iter().any(|k| k.loaded().is_none()) => {
                        return Err(AuthError::Unavailable.into())
                    }
                    None => return Err(invalid(TokenError::UnknownIssuer, None)),
                }
            }
        };
        let issuer = &self.keys.issuers[idx];
        if only_issuer.is_some_and(|i| i != idx) {
            return Err(invalid(TokenError::WrongIssuer, Some(idx)));
        }
        if loaded.confirmed_at.elapsed() > issuer.cfg.max_stale {
            return Err(Rejected { error: AuthError::Unavailable, issuer: Some(idx) });
        }
        let alg =
            d.alg.filter(|a| issuer.cfg.algorithms.contains(a)).ok_or(invalid(TokenError::AlgNotAllowed, Some(idx)))?;

        let mut loaded = loaded;
        let mut verdict = loaded.keys.verify(d.kid.as_deref(), alg, d.signing_input, &d.signature);
        let retry = match verdict {
            Verdict::UnknownKid => true,
            // Without a kid, a key of a newly rotated type may also be missing.
            Verdict::NoKeyForAlg | Verdict::BadSignature => d.kid.is_none(),
            Verdict::Valid => false,
        };
        if retry {
            issuer.refetch_for_unknown_kid(loaded.generation).await;
            match issuer.usable() {
                Some(l) if l.generation != loaded.generation => {
                    loaded = l;
                    verdict = loaded.keys.verify(d.kid.as_deref(), alg, d.signing_input, &d.signature);
                }
                Some(_) => {}
                None => return Err(Rejected { error: AuthError::Unavailable, issuer: Some(idx) }),
            }
        }
        match verdict {
            Verdict::Valid => {}
            Verdict::UnknownKid => return Err(invalid(TokenError::UnknownKid, Some(idx))),
            Verdict::NoKeyForAlg => return Err(invalid(TokenError::NoKeyForAlg, Some(idx))),
            Verdict::BadSignature => return Err(invalid(TokenError::BadSignature, Some(idx))),
        }

        let audiences = &issuer.cfg.audiences;
        if !audiences.is_empty() && !d.claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(invalid(TokenError::BadAudience, Some(idx)));
        }
        let Some(exp) = d.claims.exp else {
            return Err(invalid(TokenError::MissingExpiry, Some(idx)));
        };
        let sub_header = match &d.claims.sub {
            None => None,
            Some(s) => Some(
                HeaderValue::from_str(s)
                    .or_else(|_| HeaderValue::from_bytes(s.as_bytes()))
                    .map_err(|_| invalid(TokenError::UnforwardableSubject, Some(idx)))?,
            ),
        };
        // The payload segment is unpadded base64url: always a valid header value.
        let payload_header =
            HeaderValue::from_str(d.payload_b64).map_err(|_| invalid(TokenError::BadEncoding, Some(idx)))?;
        let now = self.clock.now_unix() as f64;
        let remaining = exp + issuer.cfg.leeway as f64 - now;
        let ttl = if remaining > 0.0 {
            Duration::from_secs_f64(remaining.min(MAX_CACHE_TTL.as_secs_f64()))
        } else {
            Duration::ZERO
        };
        Ok(Arc::new(Verified {
            issuer: idx,
            generation: loaded.generation,
            exp,
            nbf: d.claims.nbf,
            iat: d.claims.iat,
            scopes: d.claims.scopes.into_boxed_slice(),
            payload_header,
            sub_header,
            ttl,
        }))
    }
}
