//! `jwtgate validate`: loads keys exactly as `serve` does and judges one token with the same
//! decision code, on a given route, method and time, printing a JSON verdict. It is what an
//! operator runs to learn why a token is refused.

use std::sync::Arc;

use http::Method;
use serde_json::{json, Value};

use crate::auth::{bearer, jwt, AuthError, Authenticator, Rejected, TokenError};
use crate::config::Config;
use crate::decision::{Judge, Origin, Refused, RequestFacts};
use crate::fetch::HttpFetcher;
use crate::keys::jwks::SigCheck;
use crate::keys::{IssuerId, KeyRegistry};
use crate::metrics::Metrics;
use jwtgate_base::clock::{Clock, FixedClock, SystemClock};

/// What to judge.
#[derive(Debug, Clone)]
pub struct ValidateRequest {
    /// `--issuer NAME`: accept only tokens of this issuer.
    pub issuer: Option<String>,
    /// `--route PATH`: judge the request's route and scopes too; `None` judges the token alone.
    pub route: Option<String>,
    /// `--method M` (default `GET`).
    pub method: String,
    /// `--at UNIX_SECONDS` (default now).
    pub at: Option<i64>,
    /// The token.
    pub token: String,
    /// `--dpop PROOF`: the token is sent with the DPoP scheme and this proof (needs `--route`;
    /// an absolute `--route` URL is the proof's `htu`).
    pub dpop: Option<String>,
}

/// The verdict and the process exit code (0 allowed, 1 refused, 2 usage/config, 3 keys unavailable).
pub struct Verdict {
    /// The JSON object printed on stdout.
    pub json: Value,
    /// The exit code.
    pub exit_code: i32,
}

fn verdict(status: u16, error: Option<&str>, detail: String, issuer: Option<String>, claims: Option<Value>) -> Verdict {
    let allowed = status == 200;
    let exit_code = match status {
        200 => 0,
        503 => 3,
        _ => 1,
    };
    Verdict {
        json: json!({
            "allowed": allowed,
            "status": status,
            "error": error,
            "detail": detail,
            "issuer": issuer,
            "claims": claims,
        }),
        exit_code,
    }
}

/// A usage or configuration error (exit 2).
pub fn usage_error(detail: String) -> Verdict {
    Verdict {
        json: json!({"allowed": false, "status": null, "error": "usage", "detail": detail, "issuer": null, "claims": null}),
        exit_code: 2,
    }
}

/// Runs the whole judgement, and says how the token was verified: `"verified_by"` is
/// `"introspection"` for an opaque token sent to the issuer's endpoint, `"signature"` for a JWT.
pub async fn run(config: Config, req: ValidateRequest) -> Verdict {
    let introspects = config.issuers.iter().any(|i| i.introspection.is_some());
    let opaque = !jwt::is_compact_jws(req.token.trim().as_bytes());
    let mut out = judge(config, req).await;
    let judged_a_token = out.exit_code != 2 && !(out.json["status"] == 200 && out.json["issuer"].is_null());
    if judged_a_token {
        out.json["verified_by"] = json!(match (introspects, opaque) {
            (true, true) => "introspection",
            (false, true) => "none (an opaque token, and no issuer introspects)",
            (_, false) => "signature",
        });
    }
    out
}

async fn judge(config: Config, req: ValidateRequest) -> Verdict {
    let method = match Method::from_bytes(req.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return usage_error(format!("--method {:?} is not an HTTP method", req.method)),
    };
    let only_issuer = match &req.issuer {
        None => None,
        Some(name) => match config.issuers.iter().position(|i| &i.name == name) {
            Some(i) => Some(IssuerId::at(i)),
            None => return usage_error(format!("--issuer {name:?} is not a configured [[issuers]] name")),
        },
    };
    let metrics = Arc::new(Metrics::new());
    let fetcher = match HttpFetcher::new() {
        Ok(f) => f,
        Err(e) => return usage_error(format!("cannot build the HTTP client: {e}")),
    };
    // Keys load on real time; `--at` moves only the wall clock the claims are judged at.
    let keys = Arc::new(KeyRegistry::new(&config.issuers, fetcher, metrics.clone(), Arc::new(SystemClock)));
    // Revoked tokens are judged as `serve` judges them.
    for k in &keys.issuers {
        if let Some(d) = &k.cfg.deny_list {
            match crate::revocation::DenyList::read(&d.file) {
                Ok(list) => k.revoked.store(Arc::new(list)),
                Err(e) => return usage_error(format!("configuration error: deny_list_file: {e}")),
            }
        }
    }
    let (results, duplicate) = match only_issuer {
        Some(i) => (vec![keys[i].refresh().await], None),
        None => keys.load_all_once().await,
    };
    if let Some(dup) = duplicate {
        return usage_error(format!("configuration error: {dup}"));
    }
    let now = req.at.unwrap_or_else(|| SystemClock.now_unix());
    let clock: Arc<dyn Clock> = match req.at {
        Some(t) => Arc::new(FixedClock::new(t)),
        None => Arc::new(SystemClock),
    };
    let introspector = match config.issuers.iter().position(|c| c.introspection.is_some()) {
        None => None,
        Some(i) => {
            let built = match config.issuers[i].introspection.as_ref().map(|x| x.client_secret.read()) {
                Some(Ok(secret)) => crate::auth::introspection::Introspector::new(
                    IssuerId::at(i),
                    keys.issuers[i].clone(),
                    &config,
                    secret,
                    clock.clone(),
                    metrics.clone(),
                ),
                Some(Err(e)) => Err(format!("issuers[{i}].introspection.client_secret: {e}")),
                None => Err(format!("issuers[{i}].introspection: missing")),
            };
            match built {
                Ok(x) => Some(x),
                Err(e) => return usage_error(format!("configuration error: {e}")),
            }
        }
    };
    let auth = Arc::new(
        Authenticator::new(keys.clone(), clock, 0, config.server.max_token_bytes(), metrics.clone())
            .with_claim_paths(config.claim_paths.clone())
            .with_route_rules(config.rule_paths.clone(), config.routes.iter().any(|r| r.audiences.is_some()))
            .with_introspector(introspector),
    );
    if req.dpop.is_some() && req.route.is_none() {
        return usage_error(
            "--dpop judges a request: give --route (a path, or the absolute URL the proof names)".into(),
        );
    }
    let header = format!("Bearer {}", req.token.trim());
    let name = |i: IssuerId| keys.get(i).map(|k| k.name().to_string());
    let unavailable_detail = |error: AuthError| {
        if error == AuthError::IntrospectionUnavailable {
            let last = auth.introspector().map(|x| x.status_json()["last_error"].clone()).unwrap_or_default();
            return format!("{}; {}", capitalised(error.description()), last.as_str().unwrap_or("no answer"));
        }
        let errors: Vec<String> = results
            .iter()
            .zip(keys.issuers.iter())
            .filter_map(|(res, k)| res.as_ref().err().map(|e| format!("{}: {e}", k.name())))
            .collect();
        format!("{}; {}", AuthError::Unavailable.description(), errors.join("; "))
    };
    // A refused token, explained: why a claim check failed (decoded once more, for a human).
    let refused = |error: AuthError, issuer: Option<IssuerId>| {
        let mut out = refused_verdict(error, issuer.and_then(name), unavailable_detail);
        if let AuthError::InvalidToken(t) = error {
            if let Some(e) = explain(&keys, req.token.trim(), t, now) {
                out.json["detail"] = json!(format!("{} ({})", out.json["detail"].as_str().unwrap_or(""), e.why));
                if e.signature_valid {
                    out.json["claims"] = e.claims;
                }
                out.json["explain"] =
                    json!({"signature_valid": e.signature_valid, "expected": e.expected, "actual": e.actual});
            }
        }
        out
    };

    // No route: the token phase alone.
    let Some(target) = &req.route else {
        let verified = match bearer::parse(header.as_bytes()) {
            Ok(token) => auth.verify(token, only_issuer, None).await,
            Err(e) => Err(Rejected::from(e)),
        };
        return match verified {
            Ok(v) => verdict(
                200,
                None,
                "the token is valid (issuer, signature, claims); pass --route to judge a route's scopes".into(),
                name(v.issuer()),
                v.claims_json(),
            ),
            Err(r) => refused(r.error, r.issuer),
        };
    };

    // validate's adapter: the request's facts from the arguments; then the judge's phases, as
    // the proxy runs them. An absolute URL names the URI a DPoP proof's `htu` must match; a
    // path is addressed at `public_base_url` (or http://localhost).
    let (named_origin, path) = match url::Url::parse(target) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            let path = target.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
            (Some(u.origin().ascii_serialization()), path)
        }
        _ => (None, target.as_str()),
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    let credentials = match &req.dpop {
        Some(proof) => {
            match http::HeaderValue::from_str(proof.trim()) {
                Ok(v) => {
                    headers.insert("dpop", v);
                }
                Err(_) => return usage_error("--dpop: the proof is not a valid header value".into()),
            }
            format!("DPoP {}", req.token.trim())
        }
        None => header.clone(),
    };
    if let Ok(v) = http::HeaderValue::from_str(&credentials) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let localhost = || "http://localhost".to_string();
    let facts = RequestFacts {
        method: &method,
        path,
        headers: &headers,
        header_bytes: crate::proxy::meaning::header_bytes(&headers),
        framing: None,
        origin: match &named_origin {
            Some(origin) => Origin::Named(origin),
            None => Origin::Request(&localhost),
        },
        client: None,
    };
    let judge = Judge::new(&config.routes, auth.clone(), &metrics, "validate", &config.server).explaining(only_issuer);
    let refusal = match judge.judge(&facts).await {
        Ok(allowed) => {
            let route = &allowed.route.cfg.name;
            return match allowed.verified {
                None => verdict(
                    200,
                    None,
                    format!("route {route:?} is anonymous: requests pass without a token check"),
                    None,
                    None,
                ),
                Some(v) => verdict(
                    200,
                    None,
                    format!("the token is valid for {method} {path} (route {route:?})"),
                    name(v.issuer()),
                    v.claims_json(),
                ),
            };
        }
        Err(refusal) => refusal,
    };

    // The renderer: the refusal, with what the route asked for beside what the token had.
    let Refused { refusal, route, issuer, verified, .. } = refusal;
    let route_name = route.map_or("", |r| r.cfg.name.as_str());
    match (refusal.auth_error, verified, route) {
        (Some(AuthError::InsufficientScope), Some(v), Some(route)) => {
            let missing: Vec<&str> = route
                .cfg
                .scopes
                .iter()
                .filter(|s| !v.has_scopes(std::slice::from_ref(s)))
                .map(String::as_str)
                .collect();
            verdict(
                403,
                Some("insufficient_scope"),
                format!("the token lacks the scope(s) {} required by route {route_name:?}", missing.join(" ")),
                name(v.issuer()),
                v.claims_json(),
            )
        }
        (Some(AuthError::InsufficientClaims), Some(v), Some(route)) => {
            let mut out = verdict(
                403,
                Some("insufficient_claims"),
                format!("the token fails a claim rule of route {route_name:?}"),
                name(v.issuer()),
                v.claims_json(),
            );
            if let Some((rule, actual)) = crate::auth::policy::first_failed_rule(&v.verdict, &route.cfg.require_claims)
            {
                let (test, expected) = match &rule.test {
                    crate::config::ClaimTest::AnyOf(l) => ("any_of", json!(l)),
                    crate::config::ClaimTest::AllOf(l) => ("all_of", json!(l)),
                    crate::config::ClaimTest::Equals(e) => ("equals", e.clone()),
                };
                out.json["detail"] = json!(format!(
                    "the token's {} claim fails {test} (expected {expected}, actual {actual})",
                    rule.claim
                ));
                out.json["explain"] =
                    json!({"claim": rule.claim, "test": test, "expected": expected, "actual": actual});
            }
            out
        }
        (Some(AuthError::InsufficientUserAuthentication), Some(v), Some(route)) => {
            let claims = v.claims_json().unwrap_or_default();
            let mut out = verdict(
                401,
                Some("insufficient_user_authentication"),
                format!("route {route_name:?} requires a stronger or more recent sign-in"),
                name(v.issuer()),
                Some(claims.clone()),
            );
            if let Some(s) = &route.cfg.step_up {
                out.json["explain"] = json!({
                    "expected": {"acr_values": s.acr_values, "max_age_seconds": s.max_age_seconds},
                    "actual": {"acr": claims["acr"], "auth_time": claims["auth_time"], "now": now},
                });
            }
            out
        }
        (Some(error), _, _) => refused(error, issuer),
        (None, _, _) => {
            verdict(refusal.status.as_u16(), Some(refusal.code), capitalised(refusal.description), None, None)
        }
    }
}

fn capitalised(s: &str) -> String {
    let mut d = s.to_string();
    d.get_mut(..1).map(str::make_ascii_uppercase);
    d
}

/// The verdict for an authentication refusal.
fn refused_verdict(error: AuthError, issuer: Option<String>, unavailable: impl FnOnce(AuthError) -> String) -> Verdict {
    let detail = match error {
        AuthError::Unavailable | AuthError::IntrospectionUnavailable => unavailable(error),
        e => capitalised(e.description()),
    };
    verdict(error.status().as_u16(), Some(error.code()), detail, issuer, None)
}

/// Why a claim check failed, for a human: the expected value beside the actual one, and whether
/// the signature (checked apart, for this explanation only) holds.
struct Explanation {
    why: String,
    signature_valid: bool,
    claims: Value,
    expected: Value,
    actual: Value,
}

fn explain(keys: &KeyRegistry, token: &str, error: TokenError, now: i64) -> Option<Explanation> {
    let d = jwt::decode(token).ok()?;
    let (idx, loaded) = keys.by_iss(d.claims.iss.as_deref()?)?;
    let cfg = &keys[idx].cfg;
    let signature_valid = d
        .alg
        .is_some_and(|alg| loaded.keys.verify(d.kid.as_deref(), alg, d.signing_input, &d.signature) == SigCheck::Valid);
    use base64::Engine;
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(d.payload_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let time = |v: Option<f64>| v.map_or(Value::Null, |t| json!(t as i64));
    let leeway = cfg.leeway;
    let (why, expected, actual) = match error {
        TokenError::BadAudience => (
            format!("aud expected one of {:?}, got {:?}", cfg.audiences, d.claims.aud),
            json!({"aud": cfg.audiences}),
            json!({"aud": d.claims.aud}),
        ),
        TokenError::Expired => (
            format!("exp was {}, now {now} (leeway {leeway} s)", d.claims.exp.unwrap_or(0.0) as i64),
            json!({"exp_after": now - leeway}),
            json!({"exp": time(d.claims.exp), "now": now}),
        ),
        TokenError::NotYetValid => (
            format!("nbf is {}, now {now} (leeway {leeway} s)", d.claims.nbf.unwrap_or(0.0) as i64),
            json!({"nbf_at_most": now + leeway}),
            json!({"nbf": time(d.claims.nbf), "now": now}),
        ),
        TokenError::IssuedInFuture => (
            format!("iat is {}, now {now} (leeway {leeway} s)", d.claims.iat.unwrap_or(0.0) as i64),
            json!({"iat_at_most": now + leeway}),
            json!({"iat": time(d.claims.iat), "now": now}),
        ),
        TokenError::WrongTokenType if d.claims.has_nonce => (
            "the token carries a nonce: it is an ID token; send an access token".to_string(),
            json!({"nonce": null}),
            json!({"nonce": claims.get("nonce")}),
        ),
        TokenError::WrongTokenType => (
            format!(
                "typ is not at+jwt; if the IdP does not set it, set access_token_typ = \"any\" on issuer {:?}",
                cfg.name
            ),
            json!({"typ": "at+jwt"}),
            json!({"typ": header_typ(token)}),
        ),
        TokenError::MissingExpiry => {
            ("the token has no exp".to_string(), json!({"exp": "a number"}), json!({"exp": null}))
        }
        _ => return None,
    };
    Some(Explanation { why, signature_valid, claims, expected, actual })
}

/// The `typ` of a token's header, as written.
fn header_typ(token: &str) -> Value {
    use base64::Engine;
    token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|h| h.get("typ").cloned())
        .unwrap_or(Value::Null)
}
