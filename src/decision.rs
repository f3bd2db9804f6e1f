//! The one request pipeline: given the facts of a request ([`RequestFacts`]), which route it
//! takes and whether it may pass. The phases run in [`Phase`] order — framing (the header
//! budget, then what the door found), target (canonical method, path without dot segments),
//! route (404, 405 for `CONNECT`, CORS preflights), then for a protected route the credentials,
//! the token, its binding, scopes, claim rules, step-up, the rate limit and the claim headers the
//! upstream will get. The proxy, the decision listener and `validate` each build the facts with
//! a small adapter and call [`Judge::judge`]; they differ only in what follows an allow (forward
//! it, answer 200 with the claim headers, print the verdict) and in how a refusal is rendered
//! (HTTP or gRPC, the front proxy's answer, `validate`'s JSON). A refusal is a [`Refused`],
//! already counted and logged with its phase. Nothing here does I/O beyond what the
//! authenticator does.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::auth::{AuthError, AuthRequest, Authenticator, ClaimValue, Rejected, Requirement, TokenError, Verified};
use crate::keys::IssuerId;
use crate::metrics::{Metrics, Outcome, RouteMetrics};
use crate::phase::Phase;
use crate::refusal::Refusal;
use crate::routes::{self, Route, RouteTable};

/// What a door found wrong with a request as a message: refused in [`Phase::Framing`], after
/// the header budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFault {
    /// 400 `invalid_request`, with this description.
    Invalid(&'static str),
    /// 501 `not_implemented`: a transfer coding the proxy cannot forward.
    NotImplemented(&'static str),
}

impl FramingFault {
    fn refusal(self) -> Refusal {
        match self {
            FramingFault::Invalid(why) => {
                Refusal::plain(StatusCode::BAD_REQUEST, "invalid_request", why, Outcome::InvalidRequest, Phase::Framing)
            }
            FramingFault::NotImplemented(why) => Refusal::plain(
                StatusCode::NOT_IMPLEMENTED,
                "not_implemented",
                why,
                Outcome::NotImplemented,
                Phase::Framing,
            ),
        }
    }
}

/// Where the origin of a DPoP proof's `htu` comes from (see [`PublicBase`]).
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// The origin the request names (`scheme://authority`), computed only when a proof needs it
    /// and `public_base_url` is not configured.
    Request(&'a (dyn Fn() -> String + Sync)),
    /// An origin the caller named outright (`validate --route https://…`): the proof's URI
    /// whatever base is configured.
    Named(&'a str),
}

/// The facts of one request the pipeline judges — for the decision listener, of the *original*
/// request. Each door builds them with a small adapter (the proxy from the request itself, the
/// decision listener from the front proxy's headers, `validate` from its arguments); from there
/// every door runs the same phases ([`Phase`]).
pub struct RequestFacts<'a> {
    /// The method, as sent.
    pub method: &'a Method,
    /// The path, as sent (no query).
    pub path: &'a str,
    /// The headers carrying the credentials.
    pub headers: &'a HeaderMap,
    /// The headers' size as [`crate::proxy::meaning::header_bytes`] counts it: one budget,
    /// `max_header_bytes`, at every door.
    pub header_bytes: usize,
    /// What the door found wrong with the request as a message, if anything.
    pub framing: Option<FramingFault>,
    /// The origin for a DPoP proof's `htu`.
    pub origin: Origin<'a>,
    /// The client's address, for an `ip`-keyed rate limit (`None`: not limited by address).
    pub client: Option<std::net::IpAddr>,
}

/// The one `htu` rule (RFC 9449 §4.3: the URI a DPoP proof must name) for every front door:
/// `server.public_base_url` when configured — the URI clients use, whatever hops are in
/// between — else the origin the request itself names, then the path as sent. The doors differ
/// only in where that origin comes from: the proxy's scheme and `Host`; the front proxy's
/// forwarded scheme and host (else its own `Host`) at the decision listener; `validate`'s
/// absolute `--route` URL, which names the proof's URI outright and so is used as if no base
/// were configured.
#[derive(Debug, Clone, Default)]
pub struct PublicBase(Option<String>);

impl PublicBase {
    /// From `server.public_base_url` (its trailing `/` dropped once, here).
    pub fn new(public_base_url: Option<&str>) -> PublicBase {
        PublicBase(public_base_url.map(|u| u.trim_end_matches('/').to_string()))
    }

    /// The `htu` for `path`; `origin` (`scheme://authority`) is asked only without a base.
    pub fn htu(&self, origin: impl FnOnce() -> String, path: &str) -> String {
        match &self.0 {
            Some(base) => format!("{base}{path}"),
            None => format!("{}{path}", origin()),
        }
    }
}

/// A request allowed on its route.
pub struct Allowed<'r> {
    /// The route it took.
    pub route: &'r Route,
    /// The verified token; `None` on an anonymous route.
    pub verified: Option<Verified>,
    /// The configured claim headers for this token on this route.
    pub claim_headers: Vec<(HeaderName, HeaderValue)>,
    /// CORS headers for the answer (an allowed origin on a route with `[routes.cors]`).
    pub cors: Option<Box<crate::cors::CorsHeaders>>,
    /// A CORS preflight: answered by jwtgate (204 from the proxy), never forwarded.
    pub preflight: bool,
}

impl Allowed<'_> {
    /// `allowed`, `anonymous` or `preflight`.
    pub fn outcome(&self) -> Outcome {
        if self.preflight {
            Outcome::Preflight
        } else if self.verified.is_some() {
            Outcome::Allowed
        } else {
            Outcome::Anonymous
        }
    }
}

/// A refusal as the judge returns it: counted (requests and token rejections) and logged.
pub struct Refused<'r> {
    /// The answer.
    pub refusal: Refusal,
    /// The metric handles its duration belongs to: its route's, or "no route"'s.
    pub metrics: &'r RouteMetrics,
    /// The route it was refused on, once one took it.
    pub route: Option<&'r Route>,
    /// The token's issuer, when its `iss` was resolved.
    pub issuer: Option<IssuerId>,
    /// The verified token a refusal after [`Phase::Token`] was about — kept only by an
    /// explaining judge (`validate`'s renderer names the missing scopes, the failed rule or the
    /// step-up shortfall from it); `None` elsewhere, at no cost.
    pub verified: Option<Box<Verified>>,
}

/// Routes and authentication for one listener (its metrics carry the listener's label): the
/// pipeline's phases, in [`Phase`] order, for every door.
pub struct Judge {
    routes: RouteTable,
    auth: Arc<Authenticator>,
    /// Every issuer's algorithms, space-separated: the `algs` of a DPoP challenge.
    dpop_algs: String,
    /// `server.max_header_bytes`: the one header budget.
    max_header_bytes: usize,
    /// `server.public_base_url`: the `htu` rule's base.
    public_base: PublicBase,
    /// Refusals are logged at debug: the listener's access log already has a line for each.
    quiet_refusals: bool,
    /// Refusals keep the verified token (`validate`).
    explaining: bool,
    /// Only tokens of this issuer are accepted (`validate --issuer`).
    only_issuer: Option<IssuerId>,
}

/// A refusal's log line: at info, or at debug where the access log already records each
/// request with its reason (a flood of bad tokens then costs no second line apiece).
macro_rules! refusal_line {
    ($quiet:expr, $($arg:tt)+) => {
        if $quiet {
            tracing::debug!($($arg)+)
        } else {
            tracing::info!($($arg)+)
        }
    };
}
pub(crate) use refusal_line;

impl Judge {
    /// A judge over `routes` for the listener named `listener` (`proxy`, `decision`,
    /// `validate`), with `server`'s header budget and `htu` base.
    pub fn new(
        routes: &[crate::config::RouteConfig],
        auth: Arc<Authenticator>,
        metrics: &Metrics,
        listener: &str,
        server: &crate::config::ServerSection,
    ) -> Judge {
        // The DPoP challenge names what proofs may be signed with (RFC 9449 §7.1), EdDSA also
        // under its fully-specified name (RFC 9864).
        let mut algs: Vec<&str> = Vec::new();
        for a in auth.keys().issuers.iter().flat_map(|k| k.cfg.dpop_algorithms.iter()) {
            let names: &[&str] = if *a == crate::auth::alg::Alg::EdDSA { &["EdDSA", "Ed25519"] } else { &[a.name()] };
            for n in names {
                if !algs.contains(n) {
                    algs.push(n);
                }
            }
        }
        Judge {
            routes: RouteTable::new(routes, metrics, listener, auth.clock(), auth.shared_state()),
            auth,
            dpop_algs: algs.join(" "),
            max_header_bytes: server.max_header_bytes(),
            public_base: PublicBase::new(server.public_base_url.as_deref()),
            quiet_refusals: false,
            explaining: false,
            only_issuer: None,
        }
    }

    /// This listener writes an access log: refusals are logged at debug.
    pub fn with_access_log(mut self, access_log: bool) -> Judge {
        self.quiet_refusals = access_log;
        self
    }

    /// For `validate`: refusals keep the verified token, and only `issuer`'s tokens (when
    /// named) are accepted.
    pub fn explaining(mut self, issuer: Option<IssuerId>) -> Judge {
        self.explaining = true;
        self.only_issuer = issuer;
        self
    }

    /// The routes.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The authenticator.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// Counts and logs a refusal that happened before routing (framing, method, path, route).
    fn refuse_unrouted(&self, r: Refusal) -> Refused<'_> {
        self.routes.unmatched.count(r.outcome);
        refusal_line!(
            self.quiet_refusals,
            phase = r.phase.label(),
            status = r.status.as_u16(),
            error = r.code,
            "request refused: {}",
            r.description
        );
        Refused { refusal: r, metrics: &self.routes.unmatched, route: None, issuer: None, verified: None }
    }

    /// Runs the phases on `o`. A refusal comes back counted (requests and token rejections)
    /// and logged, with the metric handles its duration belongs to; an allow is counted by the
    /// caller, which knows how the request ended.
    pub async fn judge(&self, o: &RequestFacts<'_>) -> Result<Allowed<'_>, Refused<'_>> {
        // Framing: the one budget, then the door's own findings.
        if o.header_bytes > self.max_header_bytes {
            return Err(self.refuse_unrouted(Refusal::headers_too_large()));
        }
        if let Some(fault) = o.framing {
            return Err(self.refuse_unrouted(fault.refusal()));
        }
        // Target.
        if o.method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(self.refuse_unrouted(Refusal::plain(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the method name must be upper case",
                Outcome::InvalidRequest,
                Phase::Target,
            )));
        }
        let form = match routes::match_form(o.path) {
            Ok(f) => f,
            Err(e) => {
                return Err(self.refuse_unrouted(Refusal::plain(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    e.description(),
                    Outcome::InvalidRequest,
                    Phase::Target,
                )))
            }
        };
        // Route. A CORS preflight is about the method it names, on a route with [routes.cors]:
        // answered from there, without a token. Any other OPTIONS is judged like any request.
        if let Some(asked) = crate::cors::preflight_method(o.method, o.headers) {
            if let Some((route, cors)) = self.routes.find(&form, &asked).and_then(|r| r.cors.as_ref().map(|c| (r, c))) {
                let headers = cors.preflight(o.headers);
                return Ok(Allowed {
                    route,
                    verified: None,
                    claim_headers: Vec::new(),
                    cors: Some(Box::new(headers)),
                    preflight: true,
                });
            }
        }
        let Some(route) = self.routes.find(&form, o.method) else {
            let r = if o.method == Method::CONNECT {
                Refusal::plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "CONNECT is not allowed on this path",
                    Outcome::MethodNotAllowed,
                    Phase::Route,
                )
            } else {
                Refusal::plain(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no route matches this path and method",
                    Outcome::NoRoute,
                    Phase::Route,
                )
            };
            return Err(self.refuse_unrouted(r));
        };
        drop(form);
        let judged = self.judge_on(route, o).await;
        match &route.cors {
            None => judged,
            // Every answer on the route, refusals included, tells an allowed origin it may read it.
            Some(cors) => match (judged, cors.response(o.headers)) {
                (Ok(mut a), headers) => {
                    a.cors = headers;
                    Ok(a)
                }
                (Err(mut refused), Some(headers)) => {
                    refused.refusal.extra_headers.get_or_insert_with(Default::default).extend(*headers);
                    Err(refused)
                }
                (Err(refused), None) => Err(refused),
            },
        }
    }

    /// The URI a DPoP proof must name for `o` (RFC 9449 §4.3).
    fn htu(&self, o: &RequestFacts<'_>) -> String {
        match o.origin {
            Origin::Request(origin) => self.public_base.htu(origin, o.path),
            Origin::Named(origin) => format!("{origin}{}", o.path),
        }
    }

    /// The route's phases, in order: credentials, token and binding; scopes, claim rules and
    /// step-up; the rate limit; the claim headers.
    async fn judge_on<'r>(&self, route: &'r Route, o: &RequestFacts<'_>) -> Result<Allowed<'r>, Refused<'r>> {
        if route.cfg.anonymous {
            if let Some(limiter) = &route.limiter {
                self.rate_limit(limiter, route, o, None).await?;
            }
            return Ok(Allowed { route, verified: None, claim_headers: Vec::new(), cors: None, preflight: false });
        }
        let htu = || self.htu(o);
        let req = AuthRequest { headers: o.headers, method: o.method.as_str(), htu: &htu };
        let mut need = Requirement::of(&route.cfg);
        need.issuer = self.only_issuer;
        let verified = match self.auth.authenticate(&req, &need).await {
            Ok(v) => v,
            Err(r) => return Err(self.refuse(r, route, o.headers, None)),
        };
        if let Err(r) = self.auth.permit(&verified, &need) {
            return Err(self.refuse(r, route, o.headers, Some(verified)));
        }
        if let Some(limiter) = &route.limiter {
            self.rate_limit(limiter, route, o, Some(&verified)).await?;
        }
        match self.claim_headers(&verified, route) {
            Ok(claim_headers) => {
                Ok(Allowed { route, verified: Some(verified), claim_headers, cors: None, preflight: false })
            }
            Err(r) => Err(self.refuse(r, route, o.headers, Some(verified))),
        }
    }

    /// Counts the request against its caller's bucket; over the limit, a 429 with `Retry-After`
    /// and the IETF `RateLimit` / `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-headers).
    /// A bucket in the shared store is a call, made out of line: routes limited in this process
    /// (and routes without a limit) carry no room for it in their future.
    async fn rate_limit<'r>(
        &self,
        limiter: &crate::rate_limit::RateLimiter,
        route: &'r Route,
        o: &RequestFacts<'_>,
        verified: Option<&crate::auth::Verified>,
    ) -> Result<(), Refused<'r>> {
        let verdict = match limiter.is_shared() {
            false => {
                let mut ip = [0u8; 16];
                match Self::limit_key(route, o, verified, &mut ip) {
                    Some(key) => limiter.check(key),
                    None => return Ok(()),
                }
            }
            true => {
                Box::pin(async {
                    let mut ip = [0u8; 16];
                    match Self::limit_key(route, o, verified, &mut ip) {
                        Some(key) => limiter.check_shared(key).await,
                        None => crate::rate_limit::Verdict::Allowed,
                    }
                })
                .await
            }
        };
        let crate::rate_limit::Verdict::Limited { retry_after } = verdict else { return Ok(()) };
        let mut r = Refusal::plain(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this caller on this route; retry later",
            Outcome::RateLimited,
            Phase::RateLimit,
        );
        // Digits, quotes and separators only: always valid header values.
        let value = |v: String| http::HeaderValue::from_str(&v).unwrap_or(http::HeaderValue::from_static("1"));
        r.extra_headers = Some(Box::new(vec![
            (http::header::RETRY_AFTER, value(retry_after.to_string())),
            (
                http::HeaderName::from_static("ratelimit-policy"),
                value(format!("\"route\";q={};w={}", limiter.burst(), limiter.window_seconds())),
            ),
            (http::HeaderName::from_static("ratelimit"), value(format!("\"route\";r=0;t={retry_after}"))),
        ]));
        route.metrics.count(r.outcome);
        refusal_line!(
            self.quiet_refusals,
            route = %route.cfg.name,
            phase = r.phase.label(),
            status = 429,
            error = r.code,
            "request refused: {}",
            r.description
        );
        Err(Refused { refusal: r, metrics: &route.metrics, route: Some(route), issuer: None, verified: None })
    }

    /// Whose bucket a request counts against (`None`: the route's key does not apply to it —
    /// no client address, or no token on an anonymous route).
    fn limit_key<'a>(
        route: &Route,
        o: &'a RequestFacts<'_>,
        verified: Option<&'a crate::auth::Verified>,
        ip: &'a mut [u8; 16],
    ) -> Option<&'a [u8]> {
        use crate::config::RateLimitKey;
        let cfg = route.cfg.rate_limit.as_ref()?;
        Some(match (cfg.key, verified) {
            (RateLimitKey::Ip, _) => {
                *ip = match o.client? {
                    std::net::IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    std::net::IpAddr::V6(a) => a.octets(),
                };
                &ip[..]
            }
            (RateLimitKey::Sub, Some(v)) => v.sub_header().map_or(&[][..], |h| h.as_bytes()),
            (RateLimitKey::ClientId, Some(v)) => {
                let (client_id, azp) = route.cfg.client_id_paths.unwrap_or_default();
                let values = &v.verdict.rule_values;
                let at = |i: usize| values.get(i).and_then(|x| x.as_str());
                at(client_id).or_else(|| at(azp)).unwrap_or("").as_bytes()
            }
            (RateLimitKey::Token, Some(_)) => {
                o.headers.get(http::header::AUTHORIZATION).map_or(&[][..], |h| h.as_bytes())
            }
            (_, None) => return None,
        })
    }

    /// Counts and logs an authentication refusal on `route`; `verified`: the token it was
    /// about, past the token phase (kept for an explaining judge).
    fn refuse<'r>(
        &self,
        r: Rejected,
        route: &'r Route,
        headers: &HeaderMap,
        verified: Option<Verified>,
    ) -> Refused<'r> {
        self.auth.count_rejection(&r);
        let refusal = Refusal::auth(r.error, route, self.dpop_challenge(headers, route));
        route.metrics.count(refusal.outcome);
        refusal_line!(
            self.quiet_refusals,
            route = %route.cfg.name,
            phase = refusal.phase.label(),
            status = refusal.status.as_u16(),
            error = refusal.code,
            reason = r.error.reason(),
            issuer = r.issuer.map_or("", |i| self.auth.keys().name(i)),
            "request refused: {}",
            refusal.description
        );
        let verified = verified.filter(|_| self.explaining).map(Box::new);
        Refused { refusal, metrics: &route.metrics, route: Some(route), issuer: r.issuer, verified }
    }

    /// The `algs` of a DPoP challenge when the request used the DPoP scheme or the route
    /// requires it; `None` for a Bearer challenge.
    fn dpop_challenge(&self, headers: &HeaderMap, route: &Route) -> Option<&str> {
        let used = headers.get(header::AUTHORIZATION).is_some_and(|v| {
            v.as_bytes().trim_ascii_start().get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"dpop "))
        });
        (used || route.cfg.sender_constrained).then_some(self.dpop_algs.as_str())
    }

    /// The configured claim headers for this token on this route (the issuer's, then the
    /// route's, which win on a shared name); a claim that cannot be a header refuses the
    /// request. Nothing is allocated when none are configured.
    fn claim_headers(&self, v: &Verified, route: &Route) -> Result<Vec<(HeaderName, HeaderValue)>, Rejected> {
        let issuer = &self.auth.keys()[v.issuer()].cfg.claim_headers;
        let on_route = &route.cfg.claim_headers;
        if issuer.is_empty() && on_route.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(issuer.len() + on_route.len());
        let overridden = |c: &crate::config::ClaimHeader| on_route.iter().any(|r| r.name == c.name);
        for c in issuer.iter().filter(|c| !overridden(c)).chain(on_route.iter()) {
            match v.verdict.claim_values.get(c.path) {
                Some(ClaimValue::Value(val)) => out.push((c.name.clone(), val.clone())),
                Some(ClaimValue::Unforwardable) => {
                    return Err(Rejected {
                        error: AuthError::InvalidToken(TokenError::UnforwardableClaim),
                        issuer: Some(v.issuer()),
                    })
                }
                Some(ClaimValue::Absent) | None => {}
            }
        }
        Ok(out)
    }
}
