//! DPoP proof checks on arbitrary proofs: never a panic, never an accepted proof.
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::dpop_proof(data));
