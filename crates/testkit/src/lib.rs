//! jwtgate's test kit: the other side of every conversation the gateway has, on loopback and
//! behaving as the real services do per their published documents — an Asgardeo-like
//! organization ([`issuer`]: discovery, JWKS, introspection, with faults to inject), an echo
//! upstream ([`echo`]), a fake WSO2 API Manager admin API checked against `admin-api.yaml`
//! (`apim`, behind the feature of that name), and the token minter ([`mint`], which signs and never verifies).
//! The integration tests and benches take it as a dev-dependency; the gateway takes it only
//! behind its `dev` feature, for `jwtgate dev`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(clippy::disallowed_methods)] // the fakes stand for servers elsewhere: they keep real time

#[cfg(feature = "apim")]
#[allow(missing_docs)] // a fake of a published API: its items are named after the API's own
pub mod apim;
pub mod echo;
pub mod issuer;
pub use jwtgate_jose::mint;

use std::sync::Arc;

use jwtgate_base::clock::{Clock, SystemClock};
use jwtgate_jose::alg::Alg;

/// Mints `n` distinct tokens over `claims` (each with its own `jti` and `sub`), signing on every
/// core: RSA signing is slow and a load test wants thousands.
pub async fn mint_many(key: &Arc<mint::SigningKey>, claims: &serde_json::Value, n: usize) -> Vec<String> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()).max(1);
    let per = n.div_ceil(threads).max(1);
    let mut tasks = Vec::new();
    for t in 0..threads {
        let (key, claims) = (key.clone(), claims.clone());
        let range = (t * per)..((t + 1) * per).min(n);
        tasks.push(tokio::task::spawn_blocking(move || {
            range
                .map(|i| {
                    let mut c = claims.clone();
                    c["jti"] = format!("bench-{i}").into();
                    c["sub"] = format!("user-{i}").into();
                    key.token(&c)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(v) = t.await {
            out.extend(v);
        }
    }
    out
}

/// A token bound (`cnf.jkt`) to a fresh ES256 client key, signed by `key` over `claims`, and
/// `n` proofs of that key for `GET htu`, each with its own `jti` (a DPoP load test's requests),
/// signed on every core.
pub async fn mint_dpop(
    key: &Arc<mint::SigningKey>,
    claims: &serde_json::Value,
    htu: &str,
    n: usize,
) -> Result<(String, Vec<String>), mint::KeyGenError> {
    use base64::Engine;
    let client = Arc::new(mint::SigningKey::generate(Alg::ES256, "client")?);
    let mut jwk = client.jwk();
    if let Some(o) = jwk.as_object_mut() {
        o.remove("kid");
    }
    let mut bound = claims.clone();
    bound["cnf"] = serde_json::json!({ "jkt": jwtgate_jose::dpop::thumbprint(&jwk).unwrap_or_default() });
    let token = key.token(&bound);
    let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()));
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get()).max(1);
    let per = n.div_ceil(threads).max(1);
    let now = SystemClock.now_unix();
    let mut tasks = Vec::new();
    for t in 0..threads {
        let (client, header, ath, htu) = (client.clone(), header.clone(), ath.clone(), htu.to_string());
        let range = (t * per)..((t + 1) * per).min(n);
        tasks.push(tokio::task::spawn_blocking(move || {
            range
                .map(|i| {
                    let claims = serde_json::json!({"htm": "GET", "htu": htu, "iat": now, "jti": format!("load-{i}"), "ath": ath});
                    client.sign_json(&header, &claims)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut proofs = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(v) = t.await {
            proofs.extend(v);
        }
    }
    Ok((token, proofs))
}
