//! Keeps WSO2 API Manager's Asgardeo key-manager registration in step with the configuration
//! and the live discovery document, through APIM's Admin REST API, as a reconciled resource:
//! desired state from settings + discovery ([`desired`]), actual state from APIM ([`apim`]), and
//! only the difference is written ([`reconcile`]); what it did is kept for `/status`
//! ([`status`]) and counted ([`SyncMetrics`]). When to run a pass — at start, on an interval, on
//! a discovery change, once from the command line — is the gateway's business, not this crate's.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apim;
pub mod desired;
pub mod reconcile;
pub mod settings;
pub mod status;

/// The sync's metrics, registered by the gateway with the rest.
#[derive(Clone)]
pub struct SyncMetrics {
    /// `jwtgate_km_sync_runs_total{result}`: `ok|error|conflict`.
    pub runs: prometheus::IntCounterVec,
    /// `jwtgate_km_sync_writes_total{op}`: `create|update`.
    pub writes: prometheus::IntCounterVec,
    /// `jwtgate_km_sync_in_sync`: 1 when the last pass found nothing to change or applied it.
    pub in_sync: prometheus::IntGauge,
    /// `jwtgate_km_sync_last_success_timestamp_seconds`.
    pub last_success: prometheus::Gauge,
    /// `jwtgate_km_sync_conflicts_total`: another writer keeps changing a managed field.
    pub conflicts: prometheus::IntCounter,
}
