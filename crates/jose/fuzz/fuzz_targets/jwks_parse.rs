//! JWKS parsing on arbitrary bytes: never a panic, never a key for a disallowed algorithm.
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::jwks_parse(data));
