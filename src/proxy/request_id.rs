//! `X-Request-Id`: one id per proxied request, so the client, jwtgate's access log and the API
//! can name the same request. A client's id is kept when it is one header of 1 to 128 bytes of
//! letters, digits and `-_.:+/=` (UUIDs, ULIDs, base64 ids); anything else is replaced, so a
//! log line never carries attacker-chosen bytes. A generated id is 32 hex digits: a random
//! per-process prefix and a counter — unique across replicas without a random draw per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request with `headers`, set in them (a generated one replaces a missing or
/// unusable client id).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(v), None) = (sent.next(), sent.next()) {
        if usable(v.as_bytes()) {
            return v.clone();
        }
    }
    let id = generate();
    headers.insert(&X_REQUEST_ID, id.clone());
    id
}

fn usable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
}

fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    for (i, word) in [prefix, n].into_iter().enumerate() {
        for j in 0..16 {
            let nibble = (word >> (60 - 4 * j)) & 0xf;
            buf[i * 16 + j] = b"0123456789abcdef"[nibble as usize];
        }
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("3f2a-11ee:b962/0242ac120002=="));
        assert_eq!(ensure(&mut h), "3f2a-11ee:b962/0242ac120002==");
        for bad in ["", "has space", "semi;colon", "quote\"", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(&X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = ensure(&mut h);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
            assert_eq!(h[&X_REQUEST_ID], id);
        }
        let mut two = HeaderMap::new();
        two.append(&X_REQUEST_ID, HeaderValue::from_static("a"));
        two.append(&X_REQUEST_ID, HeaderValue::from_static("b"));
        assert_eq!(ensure(&mut two).len(), 32, "two ids are no id");
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16], "one prefix per process");
    }
}
