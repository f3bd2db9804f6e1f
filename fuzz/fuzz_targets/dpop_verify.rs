//! DPoP proof checks on arbitrary proofs, and the decision listener's reading of the original
//! request on arbitrary headers: refusals, never a panic, never an accepted proof.
#![no_main]
use jwtgate::auth::alg::Alg;
use jwtgate::auth::dpop::{verify, Expected, ReplayCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    let mut req = http::Request::builder().uri("/");
    for (i, part) in proof.splitn(4, '\n').enumerate() {
        let name = ["x-original-uri", "x-original-url", "x-forwarded-uri", "x-original-method"][i];
        req = req.header(name, part);
    }
    if let Ok(req) = req.body(()) {
        let _ = jwtgate::decision_listener::original_request(&req);
    }
});
