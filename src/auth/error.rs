//! Why a request was refused, as values that carry everything needed to answer: the HTTP
//! status, the RFC 6750 error code, a fixed human description (never text from the token, so
//! nothing attacker-controlled reaches a header) and a low-cardinality reason for metrics.

use http::StatusCode;

use crate::phase::Phase;

pub use jwtgate_jose::error::TokenError;

/// Why a request is refused before it reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer credentials at all (RFC 6750 §3.1: the challenge carries no error code).
    MissingToken,
    /// Malformed credentials: empty bearer, two tokens, several `Authorization` headers.
    InvalidRequest(&'static str),
    /// The token fails a check.
    InvalidToken(TokenError),
    /// The token is valid but lacks a required scope.
    InsufficientScope,
    /// The token is valid but a claim rule of the route (`require_claims`) fails.
    InsufficientClaims,
    /// The authentication event behind the token is not strong or recent enough for the route
    /// (`acr_values`, `max_age_seconds`; RFC 9470).
    InsufficientUserAuthentication,
    /// The issuer has no usable key set: the IdP's outage, not the client's fault.
    Unavailable,
    /// An opaque token could not be introspected (the endpoint unreachable, slow, failing or
    /// answering nonsense): never an accept, and not the client's fault either.
    IntrospectionUnavailable,
    /// The store the replicas share (`[shared_state]`) did not answer, so a DPoP proof cannot
    /// be told fresh: refused (fail closed: a replay must never pass because the store is down).
    SharedStateUnavailable,
    /// The DPoP replay cache is full of unexpired proofs: the proof cannot be remembered, so
    /// it is not accepted (503, never an unchecked accept).
    ReplayCacheFull,
    /// The DPoP proof of a key-bound token does not hold.
    InvalidDpopProof(jwtgate_jose::dpop::ProofError),
}

impl AuthError {
    /// Every metric reason a refusal can be counted under.
    pub fn all_reasons() -> impl Iterator<Item = &'static str> {
        let plain = [
            AuthError::MissingToken,
            AuthError::InsufficientScope,
            AuthError::InsufficientClaims,
            AuthError::InsufficientUserAuthentication,
            AuthError::Unavailable,
            AuthError::IntrospectionUnavailable,
            AuthError::SharedStateUnavailable,
        ]
        .into_iter()
        .chain([AuthError::InvalidRequest(""), AuthError::ReplayCacheFull]);
        plain
            .chain(TokenError::ALL.into_iter().map(AuthError::InvalidToken))
            .chain(jwtgate_jose::dpop::ProofError::ALL.into_iter().map(AuthError::InvalidDpopProof))
            .map(AuthError::reason)
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::InvalidDpopProof(_)
            | AuthError::InsufficientUserAuthentication => StatusCode::UNAUTHORIZED,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthError::InsufficientScope | AuthError::InsufficientClaims => StatusCode::FORBIDDEN,
            AuthError::Unavailable
            | AuthError::IntrospectionUnavailable
            | AuthError::SharedStateUnavailable
            | AuthError::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` code of the JSON body (and of the challenge, where it has one).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InsufficientScope => "insufficient_scope",
            AuthError::InsufficientClaims => "insufficient_claims",
            AuthError::InsufficientUserAuthentication => "insufficient_user_authentication",
            AuthError::Unavailable
            | AuthError::IntrospectionUnavailable
            | AuthError::SharedStateUnavailable
            | AuthError::ReplayCacheFull => "temporarily_unavailable",
            AuthError::InvalidDpopProof(_) => "invalid_dpop_proof",
        }
    }

    /// The human description.
    pub fn description(self) -> &'static str {
        match self {
            AuthError::MissingToken => "a bearer token is required",
            AuthError::InvalidRequest(why) => why,
            AuthError::InvalidToken(t) => t.description(),
            AuthError::InsufficientScope => "the token lacks a scope this route requires",
            AuthError::InsufficientClaims => "the token's claims do not meet this route's rules",
            AuthError::InsufficientUserAuthentication => {
                "a stronger or more recent authentication is required for this route"
            }
            AuthError::Unavailable => "the token issuer's signing keys are unavailable; retry later",
            AuthError::IntrospectionUnavailable => {
                "the token issuer's introspection endpoint is unavailable; retry later"
            }
            AuthError::SharedStateUnavailable => {
                "the store that remembers DPoP proofs across replicas is unavailable; retry later"
            }
            AuthError::ReplayCacheFull => jwtgate_jose::dpop::ProofError::ReplayCacheFull.description(),
            AuthError::InvalidDpopProof(p) => p.description(),
        }
    }

    /// The pipeline phase that refuses with this error: each error arises in exactly one.
    pub fn phase(self) -> Phase {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidRequest(_)
            | AuthError::InvalidToken(TokenError::DpopRequired) => Phase::Credentials,
            AuthError::InvalidToken(TokenError::SenderConstrained | TokenError::NotDpopBound)
            | AuthError::InvalidDpopProof(_)
            | AuthError::ReplayCacheFull
            | AuthError::SharedStateUnavailable => Phase::Binding,
            AuthError::InvalidToken(TokenError::UnforwardableClaim) => Phase::ClaimHeaders,
            AuthError::InvalidToken(_) | AuthError::Unavailable | AuthError::IntrospectionUnavailable => Phase::Token,
            AuthError::InsufficientScope => Phase::Scope,
            AuthError::InsufficientClaims => Phase::Claims,
            AuthError::InsufficientUserAuthentication => Phase::StepUp,
        }
    }

    /// The metric reason label.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::InvalidToken(t) => t.reason(),
            AuthError::InvalidDpopProof(p) => p.reason(),
            AuthError::ReplayCacheFull => jwtgate_jose::dpop::ProofError::ReplayCacheFull.reason(),
            AuthError::IntrospectionUnavailable => "introspection_unavailable",
            AuthError::SharedStateUnavailable => "shared_state_unavailable",
            other => other.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_one_label() {
        let reasons: Vec<&str> = AuthError::all_reasons().collect();
        let mut unique = reasons.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), reasons.len(), "{reasons:?}");
        assert!(
            reasons.contains(&"expired") && reasons.contains(&"dpop_replayed") && reasons.contains(&"missing_token")
        );
    }
}
