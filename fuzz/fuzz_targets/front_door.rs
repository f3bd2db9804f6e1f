//! The Authorization parser and the decision listener's reading of the original request on
//! arbitrary headers: never a panic.
#![no_main]
#[path = "checks.rs"]
mod checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| checks::front_door(data));
