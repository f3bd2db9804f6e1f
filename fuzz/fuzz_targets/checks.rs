#![allow(dead_code)]
//! What each of the gateway's fuzz targets checks, as plain functions (the JOSE core's targets
//! are in `crates/jose/fuzz`, built without the gateway): the cargo-fuzz targets call them on
//! generated inputs, and `tests/it/fuzz_corpus.rs` (run by `cargo test`) replays the checked-in
//! corpora and regressions through the very same code, so a finding stays fixed.

/// OIDC discovery parsing: never a panic; what parses names an issuer and an absolute JWKS URL
/// of a scheme jwtgate fetches.
pub fn discovery_parse(data: &[u8]) {
    let url = url::Url::parse("https://api.asgardeo.io/t/fuzz/oauth2/token/.well-known/openid-configuration")
        .expect("a constant URL");
    if let Ok(d) = jwtgate::keys::discovery::Discovery::parse(&url, data) {
        assert!(!d.issuer.is_empty(), "an empty issuer accepted");
        assert!(matches!(d.jwks_uri.scheme(), "https" | "http"), "jwks_uri {}", d.jwks_uri);
    }
}

/// Route matching's path normalisation: never a panic, never a dot segment let through, and
/// normalising twice changes nothing.
pub fn match_form(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if let Ok(form) = jwtgate::routes::match_form(path) {
        assert!(!form.split(['/', '\\']).any(|s| s == "." || s == ".."), "{path:?} -> {form:?}");
        assert!(!form.contains("//"), "{path:?} -> {form:?}");
        if !form.contains('%') {
            assert_eq!(jwtgate::routes::match_form(&form).as_deref(), Ok(&*form));
        }
    }
}

/// The configuration parser (with the key-manager sync section validated as `km-sync --once`
/// would): problems, never a panic.
pub fn config_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = jwtgate::config::Config::parse(text, None) {
            let _ = config.key_manager_sync.for_one_pass();
            // What validation accepted is usable as it stands.
            assert!(!config.issuers.is_empty(), "a configuration without issuers accepted");
            for route in &config.routes {
                assert!(route.path_prefix.starts_with('/'), "route prefix {:?}", route.path_prefix);
            }
        }
    }
}

/// The front door's parsers of client-controlled headers: the `Authorization` credentials and
/// the decision listener's reading of the original request — refusals, never a panic.
pub fn front_door(data: &[u8]) {
    let _ = jwtgate::auth::bearer::parse_credentials(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut req = http::Request::builder().uri("/");
    for (i, part) in text.splitn(4, '\n').enumerate() {
        let name = ["x-original-uri", "x-original-url", "x-forwarded-uri", "x-original-method"][i];
        req = req.header(name, part);
    }
    if let Ok(req) = req.body(()) {
        use jwtgate::config::FrontProxy;
        for front in [FrontProxy::Auto, FrontProxy::Nginx, FrontProxy::IngressNginx, FrontProxy::Traefik] {
            let _ = jwtgate::decision_listener::original_request(&req, front);
        }
    }
}
