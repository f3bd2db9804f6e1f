//! JWKS parsing on arbitrary bytes: never a panic, never a key for a disallowed algorithm.
#![no_main]
use jwtgate::auth::alg::Alg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = jwtgate::keys::jwks::KeySet::parse(data, &[Alg::RS256, Alg::ES256, Alg::EdDSA]);
    let _ = jwtgate::keys::jwks::KeySet::parse(data, &[Alg::PS512]);
});
