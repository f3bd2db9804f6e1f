//! `jwt::decode` on arbitrary text: never a panic; whatever decodes keeps its invariants.
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::jwt_decode(data));
