//! The hot path's decision: from an `Authorization` header to `Verified` claims or a precise
//! refusal. It reads key sets through `ArcSwap` and never does I/O, except the one
//! rate-limited, single-flight JWKS refetch an unknown `kid` may trigger. A verified-token
//! cache (keyed by a 128-bit MAC of the whole token, keyed SipHash-2-4, see [`cache`]) lets a repeated
//! token skip the signature check; the time claims and scopes are still checked on every request,
//! and a cached verdict is used only while the issuer's key set is the one it was checked with.

pub use jwtgate_jose::alg;
pub mod bearer;
pub mod cache;
pub use jwtgate_jose::dpop;
pub mod error;
pub mod introspection;
pub use jwtgate_jose::jwt;
pub mod policy;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::keys::jwks::SigCheck;
use crate::keys::{IssuerId, KeyRegistry};
use crate::metrics::Metrics;
use alg::Alg;
pub use error::{AuthError, TokenError};
use jwtgate_base::clock::Clock;

/// What the cache keeps about a verified token: everything the per-request checks need and
/// nothing more (no copy of the token: a cached entry is about a hundred bytes, so 100,000
/// cached tokens fit in a few MiB).
#[derive(Debug)]
pub struct Verdict {
    /// The cache key: the token's keyed digest (0 when the cache is off).
    pub key: u128,
    /// The issuer.
    pub issuer: IssuerId,
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
    /// The value of `x-jwt-sub`, when the token has a `sub`.
    pub sub_header: Option<HeaderValue>,
    /// `cnf`: the key the token is bound to; such a token needs proof of it on every request.
    pub binding: Option<jwt::Binding>,
    /// The value of every configured claim path (`Config::claim_paths`, same order), ready to
    /// be a header; empty when no `claim_headers` are configured.
    pub claim_values: Box<[ClaimValue]>,
    /// The value of every route-rule claim path (`Config::rule_paths`, same order; `Null` when
    /// absent): `require_claims` and step-up read these, cached or not.
    pub rule_values: Box<[serde_json::Value]>,
    /// `aud`, kept only when some route overrides the audiences (a cached verdict is then
    /// checked against the route's on every request).
    pub aud: Box<[Box<str>]>,
}

/// A claim as a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    /// The token has no such claim (or it is `null`): no header is sent.
    Absent,
    /// The header value: strings as they are, numbers and booleans as JSON, arrays joined with
    /// `,`, objects as JSON.
    Value(HeaderValue),
    /// The claim holds characters no header may carry: a request that needs it is refused.
    Unforwardable,
}

impl ClaimValue {
    /// The value at `path` (object members, one segment each) of the payload.
    pub fn of(payload: &serde_json::Value, path: &[String]) -> ClaimValue {
        use serde_json::Value;
        let v = policy::value_at(payload, path);
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let s = match v {
            Value::Null => return ClaimValue::Absent,
            Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
            other => text(other),
        };
        match HeaderValue::from_str(&s) {
            Ok(h) => ClaimValue::Value(h),
            Err(_) => ClaimValue::Unforwardable,
        }
    }
}

impl Verdict {
    /// True when every scope in `required` was granted (exact string match).
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| **s == **r))
    }
}

/// A token accepted for this request: the (possibly cached) verdict and the `x-jwt-payload`
/// value taken from this request's own token.
#[derive(Debug)]
pub struct Verified {
    /// The verdict.
    pub verdict: Arc<Verdict>,
    /// The value of `x-jwt-payload`: the verified payload segment, base64url, as received.
    pub payload_header: HeaderValue,
}

impl Verified {
    /// The issuer.
    pub fn issuer(&self) -> IssuerId {
        self.verdict.issuer
    }

    /// The value of `x-jwt-sub`.
    pub fn sub_header(&self) -> Option<&HeaderValue> {
        self.verdict.sub_header.as_ref()
    }

    /// True when every scope in `required` was granted.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        self.verdict.has_scopes(required)
    }

    /// The verified payload as JSON (for `validate`).
    pub fn claims_json(&self) -> Option<serde_json::Value> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(self.payload_header.as_bytes()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// `exp`, `nbf` and `iat` against `now`, with `leeway` seconds of clock skew either way.
fn time_claims(exp: f64, nbf: Option<f64>, iat: Option<f64>, leeway: i64, now: i64) -> Result<(), TokenError> {
    let (leeway, now) = (leeway as f64, now as f64);
    if exp + leeway <= now {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

/// Refuses a token its issuer's deny list names (a revoked token is the client's problem:
/// checked with the claims, before the keys' freshness).
fn not_revoked(issuer: &crate::keys::IssuerKeys, values: &[serde_json::Value]) -> Result<(), TokenError> {
    let Some(d) = &issuer.cfg.deny_list else { return Ok(()) };
    let null = serde_json::Value::Null;
    let at = |i: usize| values.get(i).unwrap_or(&null);
    match issuer.revoked.load().denies(at(d.jti), at(d.sub), at(d.client_id)) {
        true => Err(TokenError::Revoked),
        false => Ok(()),
    }
}

/// `aud` holds one of `audiences` (an empty list checks nothing).
fn check_audience<S: AsRef<str>>(aud: &[S], audiences: &[String]) -> Result<(), TokenError> {
    if audiences.is_empty() || aud.iter().any(|a| audiences.iter().any(|x| x == a.as_ref())) {
        Ok(())
    } else {
        Err(TokenError::BadAudience)
    }
}

/// The payload segment of a token as a header value (it is base64url: always valid).
fn payload_header(token: &[u8]) -> Option<HeaderValue> {
    let start = memchr::memchr(b'.', token)? + 1;
    let len = memchr::memchr(b'.', &token[start..])?;
    HeaderValue::from_bytes(&token[start..start + len]).ok()
}

/// The cache key: a 128-bit MAC of the whole token, keyed SipHash-2-4 with a key drawn at
/// random per process. The key is a security boundary: the cache answers "verified" for any
/// token with the same digest, so a second token with a colliding digest would ride the first
/// one's signature. A MAC with a secret key makes that a forgery against the MAC: an attacker
/// who cannot see the key (it never leaves the process, and nothing derived from it is ever
/// sent) succeeds with probability about 2^-128 per guess. SipHash-2-4 is the variant its
/// authors propose as a MAC; SipHash-1-3, used before, is the reduced-round variant meant for
/// hash tables, with a smaller security margin. Storing 16 bytes instead of the ~1 KiB token is
/// what keeps the cache small. Cost, measured on the cached decision of an 800-byte token
/// (`cargo bench --bench decision -- cached/`, same machine, back to back): 446 ns with
/// SipHash-1-3, 554 ns with SipHash-2-4 — about 0.1 µs a request for the security margin.
#[derive(Clone)]
pub(crate) struct TokenDigester(u64, u64);

impl TokenDigester {
    pub(crate) fn digest(&self, token: &[u8]) -> u128 {
        use siphasher::sip128::Hasher128;
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(self.0, self.1);
        h.write(token);
        h.finish128().as_u128()
    }
}

/// What the request says about itself, for the checks that depend on it (DPoP's `htm`/`htu`).
pub struct AuthRequest<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The method, as sent.
    pub method: &'a str,
    /// The request URI as the client addressed it (scheme, authority, path); computed only
    /// for a DPoP proof.
    pub htu: &'a (dyn Fn() -> String + Sync),
}

/// What a route requires.
pub struct Requirement<'a> {
    /// Every scope listed.
    pub scopes: &'a [String],
    /// Only DPoP-bound tokens with a proof.
    pub sender_constrained: bool,
    /// The audiences a token must name instead of its issuer's.
    pub audiences: Option<&'a [String]>,
    /// Rules on claims, every one to hold.
    pub claims: &'a [crate::config::ClaimRule],
    /// RFC 9470 step-up.
    pub step_up: Option<&'a crate::config::StepUp>,
    /// Only tokens of this issuer (`validate --issuer`); `None`: any configured issuer.
    pub issuer: Option<IssuerId>,
}

impl Requirement<'_> {
    /// Scopes only (no audience override, no claim rules, no step-up).
    pub fn scopes(scopes: &[String]) -> Requirement<'_> {
        Requirement { scopes, sender_constrained: false, audiences: None, claims: &[], step_up: None, issuer: None }
    }

    /// What `route` requires.
    pub fn of(route: &crate::config::RouteConfig) -> Requirement<'_> {
        Requirement {
            scopes: &route.scopes,
            sender_constrained: route.sender_constrained,
            audiences: route.audiences.as_deref(),
            claims: &route.require_claims,
            step_up: route.step_up.as_ref(),
            issuer: None,
        }
    }
}

/// A refusal, with the issuer when it was known (for metrics and `validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub error: AuthError,
    /// The issuer index, when the token's `iss` was resolved.
    pub issuer: Option<IssuerId>,
}

impl From<AuthError> for Rejected {
    fn from(error: AuthError) -> Self {
        Rejected { error, issuer: None }
    }
}

/// Decides whether a token is acceptable.
pub struct Authenticator {
    keys: Arc<KeyRegistry>,
    clock: Arc<dyn Clock>,
    /// The verified-token cache and the MAC key its entries are filed under, shared with the
    /// next generation when a reload changes nothing a verdict depends on.
    cache: Option<Arc<(cache::TokenCache, TokenDigester)>>,
    cache_entries: u64,
    max_token_bytes: usize,
    claim_paths: Vec<Vec<String>>,
    rule_paths: Vec<Vec<String>>,
    /// Some route overrides the audiences: verdicts keep `aud`, checked on every request.
    route_audiences: bool,
    replay: Arc<dpop::ReplayCache>,
    /// Opaque tokens go to this issuer's introspection endpoint (at most one issuer has one).
    introspector: Option<introspection::Introspector>,
    /// DPoP proofs are remembered here, by every replica, instead of in `replay`.
    shared: Option<Arc<crate::shared_state::SharedStore>>,
    metrics: Arc<Metrics>,
    cache_hit: prometheus::IntCounter,
    cache_miss: prometheus::IntCounter,
}

impl Authenticator {
    /// An authenticator over `keys`; `cache_entries == 0` turns the verified-token cache off.
    pub fn new(
        keys: Arc<KeyRegistry>,
        clock: Arc<dyn Clock>,
        cache_entries: u64,
        max_token_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        // Every refusal's series exists from the start, at 0: the first refusal of a kind
        // is then a step `rate()` sees, not a series that appears already at 1.
        for issuer in keys.issuers.iter().map(|k| k.name()).chain([""]) {
            for reason in AuthError::all_reasons() {
                metrics.rejections.with_label_values(&[issuer, reason]);
            }
        }
        let cache = (cache_entries > 0)
            .then(|| Arc::new((cache::TokenCache::new(cache_entries), TokenDigester(rand::random(), rand::random()))));
        Authenticator {
            cache_hit: metrics.token_cache.with_label_values(&["hit"]),
            cache_miss: metrics.token_cache.with_label_values(&["miss"]),
            keys,
            clock,
            cache,
            cache_entries,
            max_token_bytes,
            claim_paths: Vec::new(),
            rule_paths: Vec::new(),
            route_audiences: false,
            replay: Arc::default(),
            introspector: None,
            shared: None,
            metrics,
        }
    }

    /// Remembers DPoP proofs in `store`, shared by every replica (`None`: in this process).
    pub fn with_shared_state(mut self, store: Option<Arc<crate::shared_state::SharedStore>>) -> Authenticator {
        self.shared = store;
        self
    }

    /// Sends opaque tokens to `introspector` (`None`: they are refused as `opaque_token`).
    pub fn with_introspector(mut self, introspector: Option<introspection::Introspector>) -> Authenticator {
        self.introspector = introspector;
        self
    }

    /// The store the replicas share, when `[shared_state]` is configured.
    pub fn shared_state(&self) -> Option<&Arc<crate::shared_state::SharedStore>> {
        self.shared.as_ref()
    }

    /// The introspection client, when an issuer introspects opaque tokens.
    pub fn introspector(&self) -> Option<&introspection::Introspector> {
        self.introspector.as_ref()
    }

    /// Computes these claim paths (`Config::claim_paths`) for every verified token, for the
    /// `claim_headers` of issuers and routes.
    pub fn with_claim_paths(mut self, paths: Vec<Vec<String>>) -> Authenticator {
        self.claim_paths = paths;
        self
    }

    /// Keeps these claim paths (`Config::rule_paths`) of every verified token for the routes'
    /// claim rules and step-up, and `aud` when `route_audiences` (some route overrides it).
    pub fn with_route_rules(mut self, rule_paths: Vec<Vec<String>>, route_audiences: bool) -> Authenticator {
        self.rule_paths = rule_paths;
        self.route_audiences = route_audiences;
        self
    }

    /// Shares `replay` (a reload keeps the DPoP proofs seen: a proof used just before it must
    /// not be usable again just after).
    pub fn with_replay_cache(mut self, replay: Arc<dpop::ReplayCache>) -> Authenticator {
        self.replay = replay;
        self
    }

    /// Takes over `old`'s verified-token cache when every verdict in it still means the same
    /// here: the same cache size, the same claim paths, and the very same key stores at the
    /// same places (a verdict names its issuer by index and its key set by that store's
    /// generation). A reload that changes routes, the upstream or logging keeps up to
    /// `token_cache_entries` verdicts instead of verifying every token again.
    pub fn keep_token_cache_of(mut self, old: &Authenticator) -> Authenticator {
        let same_keys = self.keys.issuers.len() == old.keys.issuers.len()
            && self.keys.issuers.iter().zip(&old.keys.issuers).all(|(a, b)| Arc::ptr_eq(a, b));
        if same_keys
            && self.cache_entries == old.cache_entries
            && self.claim_paths == old.claim_paths
            && self.rule_paths == old.rule_paths
            && self.route_audiences == old.route_audiences
        {
            self.cache.clone_from(&old.cache);
        }
        if let (Some(new), Some(old)) = (self.introspector.as_mut(), old.introspector.as_ref()) {
            new.keep_cache_of(old);
        }
        self
    }

    /// The DPoP replay cache, to hand to the next generation on reload.
    pub fn replay_cache(&self) -> &Arc<dpop::ReplayCache> {
        &self.replay
    }

    /// The clock tokens are judged on (route rate limits run on it too).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The key stores.
    pub fn keys(&self) -> &Arc<KeyRegistry> {
        &self.keys
    }

    /// Verifies the request's bearer token and the route's scopes (no DPoP: a request that
    /// presents a DPoP-bound token needs [`Authenticator::authorize_request`]).
    pub async fn authorize(&self, headers: &HeaderMap, scopes: &[String]) -> Result<Verified, Rejected> {
        let req = AuthRequest { headers, method: "", htu: &|| String::new() };
        self.authorize_request(&req, &Requirement::scopes(scopes)).await
    }

    /// Verifies the request's credentials (`Bearer`, or `DPoP` with its proof) against the
    /// route's requirement: [`Authenticator::authenticate`], then [`Authenticator::permit`] (the
    /// judge calls the two apart). A DPoP proof is checked on every request, cached verdict or not.
    pub async fn authorize_request(&self, req: &AuthRequest<'_>, need: &Requirement<'_>) -> Result<Verified, Rejected> {
        let verified = self.authenticate(req, need).await?;
        self.permit(&verified, need)?;
        Ok(verified)
    }

    /// The credentials, token and binding phases: who sent the request, proven (the scheme and
    /// token, the token itself, a DPoP proof for a bound token).
    pub async fn authenticate(&self, req: &AuthRequest<'_>, need: &Requirement<'_>) -> Result<Verified, Rejected> {
        let (scheme, token) = bearer::credentials(req.headers)?;
        if scheme == bearer::Scheme::Bearer && need.sender_constrained {
            return Err(AuthError::InvalidToken(TokenError::DpopRequired).into());
        }
        let verified = self.verify(token, need.issuer, need.audiences).await?;
        let issuer = Some(verified.issuer());
        let refuse = |error| Err(Rejected { error, issuer });
        match (scheme, &verified.verdict.binding) {
            (bearer::Scheme::Bearer, None) => {}
            // RFC 9449 §7.1: a bound token presented as a bearer token is refused, or a stolen
            // one would work like any other.
            (bearer::Scheme::Bearer, Some(_)) => return refuse(AuthError::InvalidToken(TokenError::SenderConstrained)),
            (bearer::Scheme::Dpop, None) => return refuse(AuthError::InvalidToken(TokenError::NotDpopBound)),
            // Certificate-bound (RFC 8705) or unknown bindings: nothing here can prove them.
            (bearer::Scheme::Dpop, Some(jwt::Binding::Other)) => {
                return refuse(AuthError::InvalidToken(TokenError::SenderConstrained))
            }
            (bearer::Scheme::Dpop, Some(jwt::Binding::Jkt(jkt))) => {
                // Fresh in this process, or (with `[shared_state]`) in the store every replica
                // shares: that call is out of line, so requests without it carry no room for it.
                if let Some(fresh) = self.check_proof(req, token, jkt, verified.issuer())? {
                    Box::pin(self.first_use_shared(jkt, fresh, verified.issuer())).await?;
                }
            }
        }
        Ok(verified)
    }

    /// The scope, claim-rule and step-up phases: what the proven caller may do on the route.
    pub fn permit(&self, verified: &Verified, need: &Requirement<'_>) -> Result<(), Rejected> {
        let issuer = Some(verified.issuer());
        if !verified.has_scopes(need.scopes) {
            return Err(Rejected { error: AuthError::InsufficientScope, issuer });
        }
        // Authorisation before step-up: a token that may never pass is not sent to sign in again.
        if !need.claims.is_empty() && policy::first_failed_rule(&verified.verdict, need.claims).is_some() {
            return Err(Rejected { error: AuthError::InsufficientClaims, issuer });
        }
        if let Some(step_up) = need.step_up {
            if policy::step_up_shortfall(&verified.verdict, step_up, self.clock.now_unix()).is_some() {
                return Err(Rejected { error: AuthError::InsufficientUserAuthentication, issuer });
            }
        }
        Ok(())
    }

    /// Every check of a DPoP request's proof; the replay check too when proofs are remembered
    /// in this process (`None`), else the proof to remember in the shared store.
    fn check_proof(
        &self,
        req: &AuthRequest<'_>,
        token: &[u8],
        jkt: &str,
        issuer_index: IssuerId,
    ) -> Result<Option<dpop::Unreplayed>, Rejected> {
        let issuer = Some(issuer_index);
        let refuse = |error| Err(Rejected { error, issuer });
        let cfg = &self.keys[issuer_index].cfg;
        let mut proofs = req.headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return refuse(AuthError::InvalidDpopProof(dpop::ProofError::Missing)),
            (Some(_), Some(_)) => return refuse(AuthError::InvalidDpopProof(dpop::ProofError::Several)),
            (Some(p), None) => p
                .to_str()
                .map_err(|_| Rejected { error: AuthError::InvalidDpopProof(dpop::ProofError::Malformed), issuer })?,
        };
        let htu = (req.htu)();
        let expected = dpop::Expected {
            token,
            jkt,
            method: req.method,
            htu: &htu,
            algs: &cfg.dpop_algorithms,
            now: self.clock.now_unix(),
            max_age: cfg.dpop_max_age,
            leeway: cfg.leeway,
        };
        let outcome = match &self.shared {
            None => dpop::verify(proof, &expected, &self.replay).map(|()| None),
            Some(_) => dpop::check(proof, &expected).map(Some),
        };
        match outcome {
            Ok(fresh) => Ok(fresh),
            Err(dpop::ProofError::ReplayCacheFull) => refuse(AuthError::ReplayCacheFull),
            Err(e) => {
                // What the proof said beside what was expected, in the log only (the answer's
                // description is fixed text: nothing a client sent is echoed).
                if matches!(e, dpop::ProofError::Alg | dpop::ProofError::Htu | dpop::ProofError::Htm) {
                    let (alg, htm, htu) = dpop::claimed(proof);
                    let allowed: Vec<&str> = cfg.dpop_algorithms.iter().map(|a| a.name()).collect();
                    tracing::debug!(
                        reason = e.reason(),
                        proof_alg = alg.as_deref().unwrap_or(""),
                        allowed_algs = %allowed.join(" "),
                        proof_htm = htm.as_deref().unwrap_or(""),
                        expected_htm = req.method,
                        proof_htu = htu.as_deref().unwrap_or(""),
                        expected_htu = expected.htu,
                        "DPoP proof refused"
                    );
                }
                refuse(AuthError::InvalidDpopProof(e))
            }
        }
    }

    /// Remembers a checked proof in the store every replica shares (`SET NX PX` for as long as
    /// it could be accepted): seen before anywhere is a replay; no answer is a 503, never an
    /// unchecked proof.
    async fn first_use_shared(&self, jkt: &str, fresh: dpop::Unreplayed, issuer: IssuerId) -> Result<(), Rejected> {
        let refuse = |error| Err(Rejected { error, issuer: Some(issuer) });
        let Some(store) = &self.shared else { return Ok(()) };
        let ttl = std::time::Duration::from_secs((fresh.remember_until - self.clock.now_unix()).max(1) as u64);
        match store.first_use(jkt, &fresh.jti, ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => refuse(AuthError::InvalidDpopProof(dpop::ProofError::Replayed)),
            Err(_) => refuse(AuthError::SharedStateUnavailable),
        }
    }

    /// Counts a refusal in `jwtgate_token_rejections_total`.
    pub fn count_rejection(&self, r: &Rejected) {
        let issuer = r.issuer.map_or("", |i| self.keys.name(i));
        self.metrics.rejections.with_label_values(&[issuer, r.error.reason()]).inc();
    }

    /// Verifies a token (signature, issuer, audience, time claims) but not scopes. With
    /// `only_issuer`, tokens of any other issuer are refused.
    ///
    /// `audiences` replaces the issuer's (a route's `audiences`).
    pub async fn verify(
        &self,
        token: &[u8],
        only_issuer: Option<IssuerId>,
        audiences: Option<&[String]>,
    ) -> Result<Verified, Rejected> {
        let invalid = |t: TokenError, issuer: Option<IssuerId>| Rejected { error: AuthError::InvalidToken(t), issuer };
        if token.len() > self.max_token_bytes {
            return Err(invalid(TokenError::TooLong, None));
        }
        if let Some(introspector) = &self.introspector {
            // A reference token (not a compact JWS) is asked about; a JWT is always verified
            // locally by its own `iss`. Boxed: a rare path, kept out of every request's future.
            if !jwt::is_compact_jws(token) {
                return Box::pin(introspector.verify(token, only_issuer, audiences)).await;
            }
        }
        // The digest is only needed to talk to the cache; without one it is 0 and unused.
        let key = match &self.cache {
            Some(c) => c.1.digest(token),
            None => 0,
        };
        if let Some((cache, _)) = self.cache.as_deref() {
            if let Some(v) = cache.get(key) {
                if let Some(k) = self.keys.get(v.issuer) {
                    if k.generation() == v.generation {
                        self.cache_hit.inc();
                        // The cache skips decoding and the signature, never the order: the
                        // claims that can have changed since (time) come before the key set's
                        // freshness, as on the uncached path.
                        let claims = || {
                            self.check_time(&v)?;
                            not_revoked(k, &v.rule_values)?;
                            // Without route audiences every verdict was checked against its
                            // issuer's when it was made; with them, against this route's now.
                            match self.route_audiences {
                                true => check_audience(&v.aud, audiences.unwrap_or(&k.cfg.audiences)),
                                false => Ok(()),
                            }
                        };
                        self.ordered_checks(v.issuer, only_issuer, claims, || k.is_usable())?;
                        let payload_header =
                            payload_header(token).ok_or(invalid(TokenError::Malformed, Some(v.issuer)))?;
                        return Ok(Verified { verdict: v, payload_header });
                    }
                }
            }
            self.cache_miss.inc();
        }
        let token = std::str::from_utf8(token).map_err(|_| invalid(TokenError::BadEncoding, None))?;
        // Boxed: the uncached path (which may wait for a JWKS refetch) is the large part of this
        // future; keeping it out of line keeps the future every request moves around small.
        // The time claims were checked on the way (before the signature, see `keyless_checks`).
        let (verdict, payload_header) = Box::pin(self.verify_uncached(token, key, only_issuer, audiences)).await?;
        if let Some((cache, _)) = self.cache.as_deref() {
            cache.insert(verdict.clone());
        }
        Ok(Verified { verdict, payload_header })
    }

    /// The configured claim paths of a verified payload (parsed as JSON only when some are
    /// configured, and only on a cache miss).
    fn claim_values(&self, payload_b64: &str) -> (Box<[ClaimValue]>, Box<[serde_json::Value]>) {
        if self.claim_paths.is_empty() && self.rule_paths.is_empty() {
            return (Box::new([]), Box::new([]));
        }
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload_b64)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let headers = self.claim_paths.iter().map(|p| ClaimValue::of(&payload, p)).collect();
        let rules = self.rule_paths.iter().map(|p| policy::value_at(&payload, p).clone()).collect();
        (headers, rules)
    }

    /// The one order of the checks after the issuer is known, for cached and uncached tokens
    /// alike: the issuer restriction (`validate --issuer`), then the token's own claims (every
    /// keyless check when uncached; the time claims of the verdict when cached), and only then,
    /// for a token a key would judge, the key set's freshness (503). An expired token is the
    /// client's fault whether or not it was seen before.
    fn ordered_checks(
        &self,
        issuer: IssuerId,
        only_issuer: Option<IssuerId>,
        claims: impl FnOnce() -> Result<(), TokenError>,
        keys_fresh: impl FnOnce() -> bool,
    ) -> Result<(), Rejected> {
        let invalid = |t: TokenError| Rejected { error: AuthError::InvalidToken(t), issuer: Some(issuer) };
        if only_issuer.is_some_and(|i| i != issuer) {
            return Err(invalid(TokenError::WrongIssuer));
        }
        claims().map_err(invalid)?;
        if !keys_fresh() {
            return Err(Rejected { error: AuthError::Unavailable, issuer: Some(issuer) });
        }
        Ok(())
    }

    fn check_time(&self, v: &Verdict) -> Result<(), TokenError> {
        let leeway = self.keys.get(v.issuer).map_or(0, |k| k.cfg.leeway);
        time_claims(v.exp, v.nbf, v.iat, leeway, self.clock.now_unix())
    }

    /// The checks that need the token and the issuer's configuration but no key: `alg` in the
    /// allow-list, `exp` present, the time claims, the audience, a forwardable `sub`. They come
    /// before key availability: a token that is wrong whatever the keys are is the client's
    /// fault (401), never an IdP outage (503).
    fn keyless_checks(
        &self,
        d: &jwt::Decoded<'_>,
        cfg: &crate::config::IssuerConfig,
        audiences: Option<&[String]>,
    ) -> Result<Alg, TokenError> {
        let alg = d.alg.filter(|a| cfg.algorithms.contains(a)).ok_or(TokenError::AlgNotAllowed)?;
        // Access tokens only (RFC 9068 §4): an ID token shares the client id as `aud` and is
        // handed to browsers; it must never open an API, whatever `access_token_typ` says.
        if (cfg.require_access_token_typ && !d.typ_is_access_token) || d.claims.has_nonce {
            return Err(TokenError::WrongTokenType);
        }
        let exp = d.claims.exp.ok_or(TokenError::MissingExpiry)?;
        time_claims(exp, d.claims.nbf, d.claims.iat, cfg.leeway, self.clock.now_unix())?;
        check_audience(&d.claims.aud, audiences.unwrap_or(&cfg.audiences))?;
        if d.claims.sub.as_deref().is_some_and(|s| HeaderValue::from_bytes(s.as_bytes()).is_err()) {
            return Err(TokenError::UnforwardableSubject);
        }
        Ok(alg)
    }

    async fn verify_uncached(
        &self,
        token: &str,
        key: u128,
        only_issuer: Option<IssuerId>,
        audiences: Option<&[String]>,
    ) -> Result<(Arc<Verdict>, HeaderValue), Rejected> {
        let invalid = |t: TokenError, issuer: Option<IssuerId>| Rejected { error: AuthError::InvalidToken(t), issuer };
        let d = jwt::decode(token).map_err(|t| invalid(t, None))?;
        let iss = d.claims.iss.as_deref().ok_or(invalid(TokenError::MissingIssuer, None))?;

        let (idx, loaded) = match self.keys.by_iss(iss) {
            Some(found) => found,
            None => {
                // The issuer may be one whose keys never loaded (IdP down at start), so its
                // `issuer` value is not known yet. The token is judged first against what those
                // issuers' configuration allows: when every one of them would refuse it anyway,
                // that is the answer, whatever the IdP does.
                let unloaded: Vec<_> = self.keys.issuers.iter().filter(|k| k.loaded().is_none()).cloned().collect();
                if unloaded.is_empty() {
                    return Err(invalid(TokenError::UnknownIssuer, None));
                }
                let mut first_refusal = None;
                let mut any_passes = false;
                for k in &unloaded {
                    match self.keyless_checks(&d, &k.cfg, audiences) {
                        Ok(_) => any_passes = true,
                        Err(t) => {
                            first_refusal.get_or_insert(t);
                        }
                    }
                }
                if let (false, Some(t)) = (any_passes, first_refusal) {
                    return Err(invalid(t, None));
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
        let issuer = &self.keys[idx];
        let mut alg = None;
        let (claim_values, rule_values) = self.claim_values(d.payload_b64);
        self.ordered_checks(
            idx,
            only_issuer,
            || {
                alg = Some(self.keyless_checks(&d, &issuer.cfg, audiences)?);
                not_revoked(issuer, &rule_values)
            },
            || issuer.is_fresh(&loaded),
        )?;
        let alg = alg.ok_or(invalid(TokenError::AlgNotAllowed, Some(idx)))?;

        let mut loaded = loaded;
        let mut verdict = loaded.keys.verify(d.kid.as_deref(), alg, d.signing_input, &d.signature);
        let retry = match verdict {
            SigCheck::UnknownKid => true,
            // Without a kid, a key of a newly rotated type may also be missing.
            SigCheck::NoKeyForAlg | SigCheck::BadSignature => d.kid.is_none(),
            SigCheck::Valid => false,
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
            SigCheck::Valid => {}
            SigCheck::UnknownKid => return Err(invalid(TokenError::UnknownKid, Some(idx))),
            SigCheck::NoKeyForAlg => return Err(invalid(TokenError::NoKeyForAlg, Some(idx))),
            SigCheck::BadSignature => return Err(invalid(TokenError::BadSignature, Some(idx))),
        }

        // Checked by `keyless_checks` above: `exp` is present and `sub` is a valid header value.
        let exp = d.claims.exp.ok_or(invalid(TokenError::MissingExpiry, Some(idx)))?;
        let sub_header = match &d.claims.sub {
            None => None,
            Some(s) => Some(
                HeaderValue::from_bytes(s.as_bytes())
                    .map_err(|_| invalid(TokenError::UnforwardableSubject, Some(idx)))?,
            ),
        };
        // The payload segment is unpadded base64url: always a valid header value.
        let payload_header =
            HeaderValue::from_str(d.payload_b64).map_err(|_| invalid(TokenError::BadEncoding, Some(idx)))?;
        let verdict = Verdict {
            key,
            issuer: idx,
            generation: loaded.generation,
            exp,
            nbf: d.claims.nbf,
            iat: d.claims.iat,
            scopes: d.claims.scopes.into_boxed_slice(),
            sub_header,
            binding: d.claims.binding,
            claim_values,
            rule_values,
            aud: match self.route_audiences {
                true => d.claims.aud.iter().map(|a| a.as_str().into()).collect(),
                false => Box::new([]),
            },
        };
        Ok((Arc::new(verdict), payload_header))
    }
}
