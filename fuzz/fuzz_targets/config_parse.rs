//! The configuration parser on arbitrary text: problems, never a panic.
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::config_parse(data));
