//! Route matching's path normalisation: never a panic, never a dot segment let through, and
//! normalising twice changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(form) = jwtgate::routes::match_form(path) {
        assert!(!form.split(['/', '\\']).any(|s| s == "." || s == ".."), "{path:?} -> {form:?}");
        assert!(!form.contains("//"), "{path:?} -> {form:?}");
        if !form.contains('%') {
            assert_eq!(jwtgate::routes::match_form(&form).as_deref(), Ok(&*form));
        }
    }
});
