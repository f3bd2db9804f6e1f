//! Opaque (reference) tokens, judged by their issuer's RFC 7662 introspection endpoint: the second
//! way to verify a credential inside the one decision. Asgardeo issues opaque tokens unless an
//! application is switched to JWT, and API Manager's own Asgardeo connector introspects them.
//!
//! Fast and bounded like the JWT path: answers are cached under the same keyed 128-bit MAC of the
//! token (positive until `min(cache_seconds, exp)`, negative for `negative_cache_seconds`) in a
//! fixed table, so a flood of unknown tokens cannot grow memory; concurrent requests for one
//! token share one call; at most `max_concurrent` calls are in flight. Never an accept on
//! failure: an endpoint that is unreachable, slow, failing or answering nonsense is a 503 (the
//! IdP's outage, not the client's fault), never cached; only `active: false` or a failed check
//! is a 401. The client secret is sent, never logged, never shown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{json, Value};
use tokio::sync::{OnceCell, Semaphore};
use url::Url;

use super::cache::{Entry, TokenCache};
use super::{
    check_audience, jwt, not_revoked, policy, time_claims, AuthError, ClaimValue, Rejected, TokenDigester, TokenError,
    Verdict, Verified,
};
use crate::config::{Config, IntrospectionAuth, IntrospectionConfig};
use crate::keys::{IssuerId, IssuerKeys};
use crate::metrics::Metrics;
use jwtgate_base::clock::Clock;
use jwtgate_base::sync::lock;

/// The largest answer read: it becomes `x-jwt-payload`, and no header that size is welcome.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What one call decided, shared by every request that waited for it.
#[derive(Clone)]
enum Answer {
    /// Active, and every check that does not depend on the route holds.
    Active(Arc<Verdict>, HeaderValue),
    /// Inactive, or a check failed (401).
    Refused(TokenError),
    /// No usable answer (503); the reason is in `last_error` and the log.
    Failed,
}

/// A cached answer: the digest, until when it is used, and what it said.
struct Cached {
    key: u128,
    until: i64,
    answer: Result<(Arc<Verdict>, HeaderValue), TokenError>,
}

impl Entry for Cached {
    fn key(&self) -> u128 {
        self.key
    }
    fn ends(&self) -> f64 {
        self.until as f64
    }
}

/// The answer table and the MAC key its entries are filed under: kept by the next generation
/// when a reload changes nothing an answer depends on.
struct AnswerCache {
    table: TokenCache<Cached>,
    digester: TokenDigester,
}

/// One issuer's introspection client.
pub struct Introspector {
    issuer: IssuerId,
    keys: Arc<IssuerKeys>,
    cfg: IntrospectionConfig,
    /// The client secret (read at start and on each reload); only ever sent to the endpoint.
    secret: String,
    /// `Authorization: Basic …` for `client_secret_basic`, marked sensitive.
    basic: HeaderValue,
    client: reqwest::Client,
    permits: Semaphore,
    /// Calls in progress by token digest: a request for a token already being asked about
    /// waits for that answer.
    in_flight: Mutex<HashMap<u128, Arc<OnceCell<Answer>>>>,
    cache: Arc<AnswerCache>,
    claim_paths: Vec<Vec<String>>,
    rule_paths: Vec<Vec<String>>,
    clock: Arc<dyn Clock>,
    last_error: Mutex<Option<String>>,
    log_limit: jwtgate_base::log_limit::EverySecond,
    metrics: Arc<Metrics>,
    hit: prometheus::IntCounter,
    miss: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

/// The characters of an RFC 6750 `b64token`: an opaque token with anything else is refused
/// before anyone is asked about it.
fn is_b64token(token: &[u8]) -> bool {
    let body = token.iter().rposition(|&b| b != b'=').map_or(&token[..0], |i| &token[..=i]);
    !body.is_empty() && body.iter().all(|&b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `token_type` values that name an access token (RFC 7662 §2.2 leaves the value to the
/// server: `Bearer`/`DPoP` from oidc-provider and Asgardeo, the RFC 8693 URI elsewhere).
fn is_access_token_type(t: &str) -> bool {
    ["bearer", "dpop", "access_token", "urn:ietf:params:oauth:token-type:access_token"]
        .iter()
        .any(|a| t.eq_ignore_ascii_case(a))
}

/// Removes a token's entry from the in-flight map when the last request that joined it leaves
/// (answered or cancelled), so a call whose requests all went away leaves nothing behind.
struct Flight<'a> {
    map: &'a Mutex<HashMap<u128, Arc<OnceCell<Answer>>>>,
    key: u128,
    cell: Option<Arc<OnceCell<Answer>>>,
}

impl<'a> Flight<'a> {
    fn join(map: &'a Mutex<HashMap<u128, Arc<OnceCell<Answer>>>>, key: u128) -> Flight<'a> {
        let cell = lock(map).entry(key).or_default().clone();
        Flight { map, key, cell: Some(cell) }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // Clones and drops of the cell happen under the lock, so the count is exact here.
        let mut map = lock(self.map);
        drop(self.cell.take());
        if map.get(&self.key).is_some_and(|c| Arc::strong_count(c) == 1) {
            map.remove(&self.key);
        }
    }
}

impl Introspector {
    /// The introspection client of `issuers[issuer]` (whose key store is `keys`), authenticating
    /// with `secret` (read by the caller from `client_secret_env`/`_file`). Fails when the
    /// secret cannot be sent in a header or the issuer's `ca_file` cannot be used.
    pub fn new(
        issuer: IssuerId,
        keys: Arc<IssuerKeys>,
        config: &Config,
        secret: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Introspector, String> {
        let at = |k: &str| format!("issuers[{issuer}].introspection.{k}");
        let cfg = keys.cfg.introspection.clone().ok_or_else(|| at("(missing)"))?;
        let basic = {
            use base64::Engine;
            // RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&cfg.client_id), enc(&secret));
            let mut v =
                HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
                    .map_err(|_| format!("{}: cannot be sent in a header", at("client_secret")))?;
            v.set_sensitive(true);
            v
        };
        // No redirects: a redirected POST would be resent elsewhere, credentials and all.
        let mut builder = crate::fetch::idp_client_builder(reqwest::redirect::Policy::none());
        if let Some(path) = &keys.cfg.ca_file {
            builder =
                crate::fetch::trusting_only(builder, path).map_err(|e| format!("issuers[{issuer}].ca_file: {e}"))?;
        }
        let client = builder.build().map_err(|e| format!("{}: {}", at("client"), crate::fetch::error_chain(&e)))?;
        let name = keys.cfg.name.clone();
        for r in ["active", "inactive", "unreachable", "timeout", "busy", "bad_status", "malformed", "no_endpoint"] {
            metrics.introspection_calls.with_label_values(&[&name, r]);
        }
        Ok(Introspector {
            issuer,
            permits: Semaphore::new(cfg.max_concurrent),
            cache: Arc::new(AnswerCache {
                table: TokenCache::new(cfg.cache_entries),
                digester: TokenDigester(rand::random(), rand::random()),
            }),
            cfg,
            secret,
            basic,
            client,
            in_flight: Mutex::default(),
            claim_paths: config.claim_paths.clone(),
            rule_paths: config.rule_paths.clone(),
            clock,
            last_error: Mutex::default(),
            log_limit: jwtgate_base::log_limit::EverySecond::new(),
            hit: metrics.introspection_cache.with_label_values(&[&name, "hit"]),
            miss: metrics.introspection_cache.with_label_values(&[&name, "miss"]),
            duration: metrics.introspection_duration.with_label_values(&[&name]),
            metrics,
            keys,
        })
    }

    /// Takes over `old`'s answers when each still means the same here: the same issuer store
    /// (so the same issuer configuration), the same claim paths at the same places.
    pub(crate) fn keep_cache_of(&mut self, old: &Introspector) {
        if Arc::ptr_eq(&self.keys, &old.keys)
            && self.issuer == old.issuer
            && self.claim_paths == old.claim_paths
            && self.rule_paths == old.rule_paths
        {
            self.cache = old.cache.clone();
        }
    }

    /// The issuer that introspects.
    pub fn issuer(&self) -> IssuerId {
        self.issuer
    }

    /// Judges an opaque token: the (cached, or shared, or new) answer, then on every use the
    /// checks that can change with time or with the route — the time claims, the deny list, the
    /// route's audiences.
    pub(crate) async fn verify(
        &self,
        token: &[u8],
        only_issuer: Option<IssuerId>,
        audiences: Option<&[String]>,
    ) -> Result<Verified, Rejected> {
        let issuer = Some(self.issuer);
        let invalid = |t: TokenError| Rejected { error: AuthError::InvalidToken(t), issuer };
        if !is_b64token(token) {
            return Err(Rejected { error: AuthError::InvalidToken(TokenError::Malformed), issuer: None });
        }
        if only_issuer.is_some_and(|i| i != self.issuer) {
            return Err(invalid(TokenError::WrongIssuer));
        }
        let key = self.cache.digester.digest(token);
        let (verdict, payload_header) = match self.lookup(key, token).await {
            Answer::Active(v, p) => (v, p),
            Answer::Refused(t) => return Err(invalid(t)),
            Answer::Failed => return Err(Rejected { error: AuthError::IntrospectionUnavailable, issuer }),
        };
        let cfg = &self.keys.cfg;
        time_claims(verdict.exp, verdict.nbf, verdict.iat, cfg.leeway, self.clock.now_unix()).map_err(invalid)?;
        not_revoked(&self.keys, &verdict.rule_values).map_err(invalid)?;
        check_audience(&verdict.aud, audiences.unwrap_or(&cfg.audiences)).map_err(invalid)?;
        Ok(Verified { verdict, payload_header })
    }

    fn cached(&self, key: u128) -> Option<Answer> {
        let e = self.cache.table.get(key)?;
        (e.until > self.clock.now_unix()).then(|| match &e.answer {
            Ok((v, p)) => Answer::Active(v.clone(), p.clone()),
            Err(t) => Answer::Refused(*t),
        })
    }

    async fn lookup(&self, key: u128, token: &[u8]) -> Answer {
        if let Some(a) = self.cached(key) {
            self.hit.inc();
            return a;
        }
        self.miss.inc();
        let flight = Flight::join(&self.in_flight, key);
        let Some(cell) = flight.cell.clone() else { return Answer::Failed };
        let answer = cell
            .get_or_init(|| async {
                // A call for this token may have ended between the look above and joining.
                if let Some(a) = self.cached(key) {
                    return a;
                }
                let answer = self.call(token).await;
                self.remember(key, &answer);
                answer
            })
            .await
            .clone();
        drop(cell);
        drop(flight);
        answer
    }

    /// Caches a definite answer: active until `min(now + cache_seconds, exp)`, refused for
    /// `negative_cache_seconds`; a failure is never cached (the next request asks again).
    fn remember(&self, key: u128, answer: &Answer) {
        let now = self.clock.now_unix();
        let entry = match answer {
            Answer::Active(v, p) => Cached {
                key,
                until: (now + self.cfg.cache_seconds).min(v.exp as i64),
                answer: Ok((v.clone(), p.clone())),
            },
            Answer::Refused(t) => Cached { key, until: now + self.cfg.negative_cache_seconds, answer: Err(*t) },
            Answer::Failed => return,
        };
        if entry.until > now {
            self.cache.table.insert(Arc::new(entry));
        }
    }

    async fn call(&self, token: &[u8]) -> Answer {
        let started = self.clock.monotonic();
        let outcome = self.exchange(token).await;
        self.duration.observe(self.clock.monotonic().saturating_sub(started).as_secs_f64());
        let (result, answer) = match outcome.and_then(|body| self.judge(&body).map_err(|why| ("malformed", why))) {
            Ok(a @ Answer::Refused(TokenError::Inactive)) => ("inactive", a),
            Ok(a) => ("active", a),
            Err((result, why)) => {
                if let Some(held_back) = self.log_limit.admit() {
                    tracing::warn!(issuer = %self.keys.cfg.name, result, problem = %why, held_back, "token introspection failed; opaque tokens answer 503");
                }
                *lock(&self.last_error) = Some(why);
                (result, Answer::Failed)
            }
        };
        self.metrics.introspection_calls.with_label_values(&[&self.keys.cfg.name, result]).inc();
        answer
    }

    /// The endpoint: the configured one, else the discovery document's.
    fn endpoint(&self) -> Result<Url, String> {
        if let Some(u) = &self.cfg.endpoint {
            return Ok(u.clone());
        }
        let loaded = self.keys.loaded().ok_or_else(|| {
            "the issuer's discovery document has not loaded, so its introspection_endpoint is unknown".to_string()
        })?;
        let e = loaded.discovery.introspection_endpoint.as_deref().ok_or_else(|| {
            "the discovery document names no introspection_endpoint; set [issuers.introspection] endpoint".to_string()
        })?;
        crate::config::outbound_url(e).map_err(|why| format!("the discovery document's introspection_endpoint {why}"))
    }

    /// One call within `timeout_seconds` of the clock, waiting for a free slot included.
    async fn exchange(&self, token: &[u8]) -> Result<Bytes, (&'static str, String)> {
        let endpoint = self.endpoint().map_err(|why| ("no_endpoint", why))?;
        let waiting = AtomicBool::new(true);
        let call = async {
            let _permit =
                self.permits.acquire().await.map_err(|_| ("busy", "the call slots are closed".to_string()))?;
            waiting.store(false, Ordering::Relaxed);
            self.post(&endpoint, token).await
        };
        let secs = self.cfg.timeout.as_secs();
        match jwtgate_base::clock::timeout(&*self.clock, self.cfg.timeout, call).await {
            Some(r) => r,
            None if waiting.load(Ordering::Relaxed) => Err((
                "busy",
                format!("no free introspection slot within {secs} s ({} calls in flight)", self.cfg.max_concurrent),
            )),
            None => Err(("timeout", format!("{endpoint} did not answer within {secs} s"))),
        }
    }

    async fn post(&self, endpoint: &Url, token: &[u8]) -> Result<Bytes, (&'static str, String)> {
        // `is_b64token` held: the token is ASCII.
        let token = std::str::from_utf8(token).map_err(|_| ("malformed", "the token is not ASCII".to_string()))?;
        // The serializer is not `Send`: the body is built, and the serializer gone, before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token).append_pair("token_type_hint", "access_token");
            if self.cfg.auth == IntrospectionAuth::ClientSecretPost {
                form.append_pair("client_id", &self.cfg.client_id).append_pair("client_secret", &self.secret);
            }
            form.finish()
        };
        let mut req = self
            .client
            .post(endpoint.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if self.cfg.auth == IntrospectionAuth::ClientSecretBasic {
            req = req.header(http::header::AUTHORIZATION, self.basic.clone());
        }
        let unreachable =
            |e: reqwest::Error| ("unreachable", format!("cannot reach {endpoint}: {}", crate::fetch::error_chain(&e)));
        let mut resp = req.body(body).send().await.map_err(unreachable)?;
        let status = resp.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err((
                "bad_status",
                format!(
                    "{endpoint} answered HTTP {}: it refused jwtgate's client credentials (client_id {:?})",
                    status.as_u16(),
                    self.cfg.client_id
                ),
            ));
        }
        if status != http::StatusCode::OK {
            return Err(("bad_status", format!("{endpoint} answered HTTP {}", status.as_u16())));
        }
        crate::fetch::read_limited(&mut resp, MAX_ANSWER_BYTES)
            .await
            .map_err(unreachable)?
            .ok_or_else(|| ("malformed", format!("{endpoint} sent more than {MAX_ANSWER_BYTES} bytes")))
    }

    /// Reads an answer: `active`, then (for an active token) the checks that do not depend on
    /// the route. `Err` is an answer that cannot be used at all (503).
    fn judge(&self, body: &[u8]) -> Result<Answer, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        let obj = value.as_object().ok_or("the answer is not a JSON object")?;
        match obj.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Ok(Answer::Refused(TokenError::Inactive)),
            _ => return Err("the answer has no boolean \"active\" member".into()),
        }
        let claims = jwt::claims_of(body)
            .map_err(|t| format!("a claim of the answer has the wrong JSON type ({})", t.reason()))?;
        let refused = |t| Ok(Answer::Refused(t));
        match obj.get("token_type") {
            None => {}
            Some(Value::String(t)) if is_access_token_type(t) => {}
            Some(Value::String(_)) => return refused(TokenError::WrongTokenType),
            Some(_) => return Err("\"token_type\" is not a string".into()),
        }
        let cfg = &self.keys.cfg;
        let Some(exp) = claims.exp else { return refused(TokenError::MissingExpiry) };
        if let Err(t) = time_claims(exp, claims.nbf, claims.iat, cfg.leeway, self.clock.now_unix()) {
            return refused(t);
        }
        if let Some(iss) = &claims.iss {
            match self.keys.loaded() {
                Some(l) if l.discovery.issuer == *iss => {}
                Some(_) => return refused(TokenError::UnknownIssuer),
                None => {
                    return Err(
                        "the answer names an iss, and the issuer's discovery document (its issuer) has not loaded"
                            .into(),
                    )
                }
            }
        }
        let sub_header = match &claims.sub {
            None => None,
            Some(s) => match HeaderValue::from_str(s) {
                Ok(h) => Some(h),
                Err(_) => return refused(TokenError::UnforwardableSubject),
            },
        };
        let payload_header = {
            use base64::Engine;
            let compact = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            HeaderValue::from_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(compact))
                .map_err(|e| e.to_string())?
        };
        let verdict = Verdict {
            key: 0,
            issuer: self.issuer,
            generation: 0,
            exp,
            nbf: claims.nbf,
            iat: claims.iat,
            scopes: claims.scopes.into_boxed_slice(),
            sub_header,
            binding: claims.binding,
            claim_values: self.claim_paths.iter().map(|p| ClaimValue::of(&value, p)).collect(),
            rule_values: self.rule_paths.iter().map(|p| policy::value_at(&value, p).clone()).collect(),
            // Kept always: the audience is checked on every use, against the route's.
            aud: claims.aud.into_iter().map(String::into_boxed_str).collect(),
        };
        Ok(Answer::Active(Arc::new(verdict), payload_header))
    }

    /// `/status`: where it asks, how much it holds, what went wrong last (never the secret).
    pub fn status_json(&self) -> Value {
        let endpoint = self.endpoint();
        json!({
            "endpoint": endpoint.as_ref().ok().map(Url::as_str),
            "endpoint_problem": endpoint.as_ref().err(),
            "client_id": self.cfg.client_id,
            "auth": match self.cfg.auth {
                IntrospectionAuth::ClientSecretBasic => "client_secret_basic",
                IntrospectionAuth::ClientSecretPost => "client_secret_post",
            },
            "cache_entries": self.cache.table.occupied(),
            "cache_capacity": self.cache.table.capacity(),
            "in_flight": lock(&self.in_flight).len(),
            "last_error": lock(&self.last_error).clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_characters() {
        assert!(is_b64token(b"qDyf_g9PSdJTs6MASQWEIojUhnEEvtPPE9tNCKSDuu2"));
        assert!(is_b64token(b"6a1c5f3e-2b8d-4c1e-9f7a-0d2e4b6c8a10"));
        assert!(is_b64token(b"abc+/~.=="));
        assert!(!is_b64token(b"=="));
        assert!(!is_b64token(b"a=b"));
        assert!(!is_b64token(b"a\"b"));
        assert!(!is_b64token(b"a,b"));
    }

    #[test]
    fn access_token_types() {
        assert!(is_access_token_type("Bearer") && is_access_token_type("DPoP"));
        assert!(!is_access_token_type("refresh_token") && !is_access_token_type("Refresh"));
    }
}
