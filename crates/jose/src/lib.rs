//! jwtgate's JOSE core: the algorithms it accepts (`alg`), compact JWS/JWT decoding (`jwt`),
//! JWK sets and signature checks (`jwks`), DPoP proofs and their replay cache (`dpop`), and why
//! a token is refused (`error`). Pure functions over bytes and aws-lc-rs: no async runtime, no
//! HTTP types, no I/O — the gateway crate does the fetching, caching and answering.

pub mod alg;
pub mod dpop;
pub mod error;
pub mod jwks;
pub mod jwt;
#[cfg(any(test, feature = "mint"))]
pub mod mint;
