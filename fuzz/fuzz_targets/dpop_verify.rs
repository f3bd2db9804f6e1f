//! DPoP proof checks on arbitrary proofs, and the decision listener's reading of the original
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::dpop_verify(data));
