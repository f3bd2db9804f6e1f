//! Extracting the bearer token from the request headers, per RFC 6750 §2.1 and the contract:
//! the scheme is case-insensitive, one or more spaces separate it from the token, whitespace
//! around the value is ignored, and anything ambiguous (several headers, two tokens, an empty
//! token) is a 400 rather than a guess. A token in the query string is never looked at.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use super::error::AuthError;

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if *first == b' ' || *first == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if *last == b' ' || *last == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer` (RFC 6750).
    Bearer,
    /// `Authorization: DPoP`, with a `DPoP` proof header (RFC 9449).
    Dpop,
}

/// The scheme and token of a request's one `Authorization` header.
pub fn credentials(headers: &HeaderMap) -> Result<(Scheme, &[u8]), AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest("several Authorization headers"));
    }
    parse_credentials(value.as_bytes())
}

/// The token of one `Authorization` header value (the `Bearer` scheme only).
pub fn parse(value: &[u8]) -> Result<&[u8], AuthError> {
    match parse_credentials(value)? {
        (Scheme::Bearer, token) => Ok(token),
        (Scheme::Dpop, _) => Err(AuthError::MissingToken),
    }
}

/// The scheme and token of one `Authorization` header value.
pub fn parse_credentials(value: &[u8]) -> Result<(Scheme, &[u8]), AuthError> {
    let value = trim(value);
    let (scheme, rest) = match memchr::memchr2(b' ', b'\t', value) {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, &value[value.len()..]),
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Err(AuthError::MissingToken);
    };
    let token = trim(rest);
    if token.is_empty() {
        return Err(AuthError::InvalidRequest("the Authorization scheme carries no token"));
    }
    if memchr::memchr2(b' ', b'\t', token).is_some() {
        return Err(AuthError::InvalidRequest("the Authorization header carries more than one token"));
    }
    // The bytes are returned as they are: header values may carry obs-text, which no JWS does;
    // the decoder refuses it, so the common (cached) path pays for no extra scan here.
    Ok((scheme, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_spacing() {
        assert_eq!(parse(b"Bearer abc"), Ok(&b"abc"[..]));
        assert_eq!(parse(b"  bEaReR    abc  "), Ok(&b"abc"[..]));
        assert_eq!(parse(b"Basic dXNlcjpwYXNz"), Err(AuthError::MissingToken));
        assert_eq!(parse(b"Bearerabc"), Err(AuthError::MissingToken));
        assert!(matches!(parse(b"Bearer"), Err(AuthError::InvalidRequest(_))));
        assert!(matches!(parse(b"Bearer   "), Err(AuthError::InvalidRequest(_))));
        assert!(matches!(parse(b"Bearer a b"), Err(AuthError::InvalidRequest(_))));
    }
}
