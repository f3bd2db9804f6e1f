//! Why a token is not acceptable, as values that carry a fixed human description (never text
//! from the token, so nothing attacker-controlled reaches a header) and a low-cardinality
//! reason for metrics. The HTTP answer is the gateway's business.

/// Why a token is not acceptable (all answer 401 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than `server.max_token_bytes`.
    TooLong,
    /// Not three dot-separated segments.
    Malformed,
    /// Five segments: an encrypted JWT.
    Encrypted,
    /// A segment is not unpadded base64url.
    BadEncoding,
    /// The header is not a JSON object with a string `alg` (and string `kid`).
    BadHeader,
    /// The payload is not a JSON object.
    BadPayload,
    /// `alg` is not in the issuer's allow-list (this includes `none` and HMAC).
    AlgNotAllowed,
    /// `crit` names extensions.
    CritUnsupported,
    /// No `iss` claim.
    MissingIssuer,
    /// `iss` matches no configured issuer.
    UnknownIssuer,
    /// `iss` belongs to an issuer other than the one asked for (`validate --issuer`).
    WrongIssuer,
    /// `kid` not in the key set even after the refetch.
    UnknownKid,
    /// No key of the issuer may verify this `alg`.
    NoKeyForAlg,
    /// The signature does not verify.
    BadSignature,
    /// `aud` contains none of the configured audiences.
    BadAudience,
    /// No `exp` claim.
    MissingExpiry,
    /// `exp`, `nbf` or `iat` is not a JSON number.
    BadTimeClaim,
    /// `aud`, `sub`, `scope` or `scp` has the wrong JSON type.
    BadClaimType,
    /// Past `exp` (plus leeway).
    Expired,
    /// Before `nbf` (minus leeway).
    NotYetValid,
    /// `iat` in the future (beyond leeway).
    IssuedInFuture,
    /// `sub` holds characters no HTTP header may carry.
    UnforwardableSubject,
    /// Not an access token: `typ` is not `at+jwt` (RFC 9068 §4), or it carries `nonce` (an ID
    /// token).
    WrongTokenType,
    /// A token bound to a key (`cnf`) presented without proof of that key.
    SenderConstrained,
    /// Not a JWT at all: an opaque (reference) token.
    Opaque,
    /// A claim named in `claim_headers` holds characters no header may carry.
    UnforwardableClaim,
    /// Presented with the DPoP scheme but not bound to a DPoP key (`cnf.jkt`).
    NotDpopBound,
    /// A plain bearer token on a route that requires sender-constrained tokens.
    DpopRequired,
    /// Its `jti`, `sub` or `client_id` is in the issuer's deny list.
    Revoked,
    /// An opaque token its issuer's introspection endpoint calls inactive (RFC 7662 §2.2:
    /// revoked, expired, or never issued).
    Inactive,
}

impl TokenError {
    /// Every variant (`jwtgate_token_rejections_total` creates each reason's series at start,
    /// so the first refusal of a kind is not lost to `rate()`).
    pub const ALL: [TokenError; 30] = [
        TokenError::TooLong,
        TokenError::Malformed,
        TokenError::Encrypted,
        TokenError::BadEncoding,
        TokenError::BadHeader,
        TokenError::BadPayload,
        TokenError::AlgNotAllowed,
        TokenError::CritUnsupported,
        TokenError::MissingIssuer,
        TokenError::UnknownIssuer,
        TokenError::WrongIssuer,
        TokenError::UnknownKid,
        TokenError::NoKeyForAlg,
        TokenError::BadSignature,
        TokenError::BadAudience,
        TokenError::MissingExpiry,
        TokenError::BadTimeClaim,
        TokenError::BadClaimType,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuedInFuture,
        TokenError::UnforwardableSubject,
        TokenError::WrongTokenType,
        TokenError::SenderConstrained,
        TokenError::Opaque,
        TokenError::UnforwardableClaim,
        TokenError::NotDpopBound,
        TokenError::DpopRequired,
        TokenError::Revoked,
        TokenError::Inactive,
    ];

    /// The metric reason label.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::Encrypted => "encrypted",
            TokenError::BadEncoding => "bad_encoding",
            TokenError::BadHeader => "bad_header",
            TokenError::BadPayload => "bad_payload",
            TokenError::AlgNotAllowed => "alg_not_allowed",
            TokenError::CritUnsupported => "crit_unsupported",
            TokenError::MissingIssuer => "missing_iss",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::NoKeyForAlg => "no_key_for_alg",
            TokenError::BadSignature => "bad_signature",
            TokenError::BadAudience => "bad_audience",
            TokenError::MissingExpiry => "missing_exp",
            TokenError::BadTimeClaim => "bad_time_claim",
            TokenError::BadClaimType => "bad_claim_type",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "iat_in_future",
            TokenError::UnforwardableSubject => "bad_sub",
            TokenError::WrongTokenType => "wrong_token_type",
            TokenError::SenderConstrained => "sender_constrained",
            TokenError::Opaque => "opaque_token",
            TokenError::UnforwardableClaim => "bad_claim_header",
            TokenError::NotDpopBound => "not_dpop_bound",
            TokenError::DpopRequired => "dpop_required",
            TokenError::Revoked => "revoked",
            TokenError::Inactive => "inactive",
        }
    }

    /// One human sentence, safe for a header (no quotes, no token content).
    pub fn description(self) -> &'static str {
        match self {
            TokenError::TooLong => "the token is longer than the configured maximum",
            TokenError::Malformed => "the token is not a JWS in compact form (three dot-separated parts)",
            TokenError::Encrypted => "encrypted tokens (JWE) are not accepted",
            TokenError::BadEncoding => "a token segment is not unpadded base64url",
            TokenError::BadHeader => "the token header is not a JSON object with a string alg",
            TokenError::BadPayload => "the token payload is not a JSON object",
            TokenError::AlgNotAllowed => "the token alg is not allowed for its issuer",
            TokenError::CritUnsupported => "the token header names critical extensions (crit) that are not supported",
            TokenError::MissingIssuer => "the token has no iss claim",
            TokenError::UnknownIssuer => "the token issuer is not trusted",
            TokenError::WrongIssuer => "the token was issued by another issuer than the one required",
            TokenError::UnknownKid => "the token kid is not in the issuer key set",
            TokenError::NoKeyForAlg => "no key of the issuer can verify the token alg",
            TokenError::BadSignature => "the token signature is invalid",
            TokenError::BadAudience => "the token audience is not accepted",
            TokenError::MissingExpiry => "the token has no exp claim",
            TokenError::BadTimeClaim => "exp, nbf and iat must be JSON numbers",
            TokenError::BadClaimType => "a claim (aud, sub, scope or scp) has the wrong type",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet (nbf)",
            TokenError::IssuedInFuture => "the token was issued in the future (iat)",
            TokenError::UnforwardableSubject => "the sub claim holds characters that cannot be forwarded in a header",
            TokenError::WrongTokenType => {
                "only access tokens are accepted: the typ header must be at+jwt (RFC 9068), and ID tokens (with a nonce) never pass"
            }
            TokenError::SenderConstrained => {
                "the token is bound to a key (cnf): present it as Authorization: DPoP with a DPoP proof"
            }
            TokenError::NotDpopBound => "the token is not bound to a DPoP key: present it with the Bearer scheme",
            TokenError::DpopRequired => "this route requires a DPoP-bound token presented with the DPoP scheme",
            TokenError::Revoked => "the token has been revoked",
            TokenError::Inactive => "the token is not active: its issuer reports it revoked, expired or unknown",
            TokenError::UnforwardableClaim => {
                "a claim configured as a header holds characters that cannot be forwarded in a header"
            }
            TokenError::Opaque => {
                "this is an opaque token; jwtgate validates JWT access tokens: in Asgardeo, set the application access token type to JWT"
            }
        }
    }
}
