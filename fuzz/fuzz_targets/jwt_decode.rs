//! `jwt::decode` on arbitrary text: never a panic; whatever decodes keeps its invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = jwtgate::auth::jwt::decode(text) {
            // The signing input is a prefix of the token, ending right before the second dot.
            assert!(text.as_bytes().starts_with(d.signing_input));
            assert_eq!(text.as_bytes().get(d.signing_input.len()), Some(&b'.'));
        }
    }
    // The bearer parser on the same bytes: never a panic.
    let _ = jwtgate::auth::bearer::parse_credentials(data);
});
