//! What every jwtgate crate shares, and nothing more: the one clock ([`clock`]), the one
//! lock-poisoning policy ([`sync`]), the once-a-second allowance for repeated warnings
//! ([`log_limit`]), where a secret comes from ([`secret`]) and an error's cause chain on one
//! line ([`error_chain`]). No HTTP, no TLS, no configuration: the crates above it (the edge,
//! the upstream client, the sync, the gateway) meet here without depending on each other.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod log_limit;
pub mod secret;
pub mod sync;

/// The full cause chain of an error on one line (reqwest and hyper hide the useful part in
/// sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
