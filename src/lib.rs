//! jwtgate: a sidecar that self-validates JWT access tokens issued by WSO2 Asgardeo (or any
//! OIDC issuer), enforces per-route scopes on the hot path and forwards allowed requests to the
//! protected API. It also keeps WSO2 API Manager's key-manager registration in sync.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that integration tests and
//! benches drive exactly the code that runs in production.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::await_holding_lock)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod cors;
pub mod decision;
pub mod decision_listener;
#[cfg(feature = "dev")]
pub mod dev;
pub mod fetch;
pub mod keys;
pub mod km_sync;
pub mod metrics;
pub mod phase;
pub mod proxy;
pub mod rate_limit;
pub mod refusal;
pub mod reload;
pub mod revocation;
pub mod routes;
pub mod serve;
pub mod shared_state;
pub mod validate_cmd;

// The crates below the gateway, under the names the library has always used: tests, benches and
// embedders reach the clock and TLS helpers through `jwtgate::` as before.
pub use jwtgate_base::{clock, sync};
pub use jwtgate_tls as tls;
