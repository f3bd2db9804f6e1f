//! OIDC discovery parsing on arbitrary bytes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let url = url::Url::parse("https://api.asgardeo.io/t/fuzz/oauth2/token/.well-known/openid-configuration").unwrap();
    let _ = jwtgate::keys::discovery::Discovery::parse(&url, data);
});
