//! The key-manager sync's externally visible state (`GET /status` → `key_manager_sync`). It is
//! written by the sync task and read by the admin listener; it never holds a secret.

use std::sync::Mutex;

use serde::Serialize;

/// The state names of the contract.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The registration matches.
    InSync,
    /// A difference was found and is being (or, in dry run, would be) corrected.
    Drifted,
    /// The last pass failed.
    Error,
    /// The sync does not run in this process.
    Disabled,
}

/// What `/status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The state.
    pub state: SyncState,
    /// APIM's id of the registration, once known.
    pub key_manager_id: Option<String>,
    /// RFC 3339 time of the last pass.
    pub last_run: Option<String>,
    /// `created`, `updated`, `in_sync`, `conflict` or `error`.
    pub last_result: Option<String>,
    /// The last error, secrets masked.
    pub last_error: Option<String>,
    /// The managed fields that differed in the last pass.
    pub last_diff: Vec<String>,
    /// RFC 3339 time of the next scheduled pass.
    pub next_run: Option<String>,
}

/// Shared holder of the report.
#[derive(Debug)]
pub struct SyncStatus(Mutex<SyncReport>);

impl SyncStatus {
    /// A status in the given initial state.
    pub fn new(state: SyncState) -> SyncStatus {
        SyncStatus(Mutex::new(SyncReport {
            state,
            key_manager_id: None,
            last_run: None,
            last_result: None,
            last_error: None,
            last_diff: Vec::new(),
            next_run: None,
        }))
    }

    /// A copy of the current report.
    pub fn snapshot(&self) -> SyncReport {
        jwtgate_base::sync::lock(&self.0).clone()
    }

    /// Applies `f` to the report.
    pub fn update(&self, f: impl FnOnce(&mut SyncReport)) {
        f(&mut jwtgate_base::sync::lock(&self.0))
    }
}
