//! Route matching's path normalisation: never a panic, never a dot segment let through, and
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::match_form(data));
