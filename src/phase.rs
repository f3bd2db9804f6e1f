//! The named phases of the one request pipeline (Pingora's idea), in the order every request
//! passes through them whichever door it came in by — the proxy, the decision listener or
//! `validate`. Each door's adapter builds the request's facts ([`crate::decision::RequestFacts`]);
//! from there the same [`crate::decision::Judge`] runs these phases, and a refusal names the
//! phase that refused it (the `phase` field of its log line and of the access log). A leaf
//! module: the authenticator, the judge and the refusal all name phases, and none of them owns
//! the others.

/// A phase of the pipeline. The declaration order is the order they run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The request as a message: the header budget (431), then what the door found wrong with
    /// its framing — the proxy: one `Host`, a transfer coding it can forward, no body on an
    /// upgrade; the decision listener: the front proxy's headers naming the original request.
    Framing,
    /// Method and path: an upper-case method, a path without dot segments or encoded `/`.
    Target,
    /// Which route takes the request (404, or 405 for `CONNECT`); a CORS preflight is answered
    /// here.
    Route,
    /// The credentials: one `Authorization` header, its scheme and one token; `Bearer` on a
    /// route that requires DPoP.
    Credentials,
    /// The token: signature, algorithm, type, issuer, audience, time claims, the deny list —
    /// or, for an opaque token, the introspection answer. The IdP's outage refuses here (503).
    Token,
    /// The sender binding: a bound token's scheme and its DPoP proof, fresh and unreplayed.
    Binding,
    /// The route's scopes (403 `insufficient_scope`).
    Scope,
    /// The route's claim rules (403 `insufficient_claims`).
    Claims,
    /// The route's step-up: `acr` and `auth_time` (401 `insufficient_user_authentication`).
    StepUp,
    /// The route's rate limit (429).
    RateLimit,
    /// What the upstream will get: the configured claim headers (a claim that cannot be a
    /// header value refuses the request).
    ClaimHeaders,
    /// The proxy only: the exchange with the upstream — the client's body (400, 408) and the
    /// upstream's answer (502, 503, 504).
    Upstream,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 12] = [
        Phase::Framing,
        Phase::Target,
        Phase::Route,
        Phase::Credentials,
        Phase::Token,
        Phase::Binding,
        Phase::Scope,
        Phase::Claims,
        Phase::StepUp,
        Phase::RateLimit,
        Phase::ClaimHeaders,
        Phase::Upstream,
    ];

    /// The name logged in `phase` fields.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Framing => "framing",
            Phase::Target => "target",
            Phase::Route => "route",
            Phase::Credentials => "credentials",
            Phase::Token => "token",
            Phase::Binding => "binding",
            Phase::Scope => "scope",
            Phase::Claims => "claims",
            Phase::StepUp => "step_up",
            Phase::RateLimit => "rate_limit",
            Phase::ClaimHeaders => "claim_headers",
            Phase::Upstream => "upstream",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_the_declaration_order_and_labels_are_distinct() {
        assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
        let mut labels: Vec<&str> = Phase::ALL.iter().map(|p| p.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Phase::ALL.len());
    }
}
