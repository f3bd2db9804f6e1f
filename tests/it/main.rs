//! The integration tests, one binary: the support kit (fake IdP, fake APIM, echo upstream,
//! minter, harness) is compiled once, and every test runs in one process. Each module is one
//! subject; `cargo test --test it <module>::` runs one of them.
// Tests wait on real servers over real sockets (a gateway process, nginx, a fake IdP): those
// waits are real time. The gateway's own time is driven through `ManualClock` where it decides.
#![allow(clippy::disallowed_methods)]

mod support;

mod caddy_forward_auth;
mod cli;
mod connection_lifetimes;
mod cors;
mod decision;
mod deploy;
mod dev_command;
mod dpop;
mod faults;
mod first_contact;
mod fuzz_corpus;
mod hostile_tokens;
mod house;
mod introspection;
mod keys;
mod km_sync;
mod nginx_auth_request;
mod oidc_provider;
mod phases;
mod production;
mod properties;
mod proxy;
mod rate_limits;
mod request_bodies;
mod request_meaning;
mod revocation;
mod route_policy;
mod shared_state;
mod status_codes;
mod token_semantics;
mod upstream_pool;
mod websocket;
