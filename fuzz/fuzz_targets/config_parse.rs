//! The configuration parser on arbitrary text: problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = jwtgate::config::Config::parse(text, None) {
            let _ = jwtgate::km_sync::settings::Settings::from_config(&config);
        }
    }
});
