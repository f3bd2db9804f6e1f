#![allow(dead_code)]
//! What each JOSE fuzz target checks, as plain functions over `jwtgate-jose` alone: the
//! cargo-fuzz targets call them on generated inputs, and the gateway's
//! `tests/it/fuzz_corpus.rs` (run by `cargo test`) replays the checked-in corpora and
//! regressions through the very same code, so a finding stays fixed.

use jwtgate_jose::alg::Alg;
use jwtgate_jose::dpop::{verify, Expected, ReplayCache};

/// `jwt::decode`: never a panic; whatever decodes keeps its invariants.
pub fn jwt_decode(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = jwtgate_jose::jwt::decode(text) {
            // The signing input is a prefix of the token, ending right before the second dot.
            assert!(text.as_bytes().starts_with(d.signing_input));
            assert_eq!(text.as_bytes().get(d.signing_input.len()), Some(&b'.'));
        }
    }
}

/// JWKS parsing: never a panic, never a key for a disallowed algorithm.
pub fn jwks_parse(data: &[u8]) {
    for allowed in [&[Alg::RS256, Alg::ES256, Alg::EdDSA][..], &[Alg::PS512]] {
        let Ok(parsed) = jwtgate_jose::jwks::KeySet::parse(data, allowed) else { continue };
        for key in parsed.set.keys() {
            for alg in key.algs() {
                assert!(allowed.contains(&alg), "a key for {alg:?} while only {allowed:?} are allowed");
            }
        }
    }
}

/// DPoP proofs: refusals, never a panic, never an accepted proof.
pub fn dpop_proof(data: &[u8]) {
    let Ok(proof) = std::str::from_utf8(data) else { return };
    let replay = ReplayCache::default();
    let e = Expected {
        token: b"header.payload.signature",
        jkt: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
        method: "GET",
        htu: "https://api.example.com/orders/1",
        algs: &[Alg::RS256, Alg::ES256, Alg::EdDSA],
        now: 1_800_000_000,
        max_age: 60,
        leeway: 60,
    };
    // No fuzzer can sign for the fixed thumbprint's key: nothing may pass.
    assert!(verify(proof, &e, &replay).is_err());
}
