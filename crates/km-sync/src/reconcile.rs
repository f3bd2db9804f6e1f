//! One reconcile pass, like a controller's: list → find by name → create when missing (a 409
//! from a concurrent creator means list again, never POST again) → otherwise GET, compare the
//! managed fields and PUT only when one differs. Nothing is ever deleted. Passes record what
//! they did in the status and metrics, and notice when another writer keeps undoing them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use url::Url;

use crate::apim::{ApimClient, ApimError, Created};
use crate::desired::{self, Change, ASGARDEO_TYPE};
use crate::settings::Settings;
use crate::status::{SyncState, SyncStatus};
use crate::SyncMetrics;
use jwtgate_oidc::discovery::Discovery;

/// What a pass found and did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Nothing differed.
    InSync {
        /// APIM's id.
        id: String,
    },
    /// Created (or, in a dry run, would create).
    Create {
        /// APIM's id, once created.
        id: Option<String>,
        /// Every field sent.
        fields: Vec<Change>,
        /// False in a dry run.
        applied: bool,
    },
    /// Updated (or, in a dry run, would update).
    Update {
        /// APIM's id.
        id: String,
        /// The differing fields.
        changes: Vec<Change>,
        /// False in a dry run.
        applied: bool,
    },
    /// A key manager of another type holds the name: nothing was touched.
    Conflict {
        /// Which one.
        detail: String,
    },
}

impl Outcome {
    /// The plan as printed by `km-sync --once`.
    pub fn plan(&self, name: &str) -> String {
        match self {
            Outcome::InSync { id } => format!("in sync: key manager {name:?} (id {id})"),
            Outcome::Create { fields, .. } => {
                let mut s = format!("create: key manager {name:?} (type {ASGARDEO_TYPE})");
                for f in fields {
                    s.push_str(&format!("\n  {}: {}", f.field, f.new));
                }
                s
            }
            Outcome::Update { id, changes, .. } => {
                let mut s = format!("key manager {name:?} (id {id}) differs in {} field(s):", changes.len());
                for c in changes {
                    s.push_str(&format!("\nupdate: {c}"));
                }
                s
            }
            Outcome::Conflict { detail } => format!("conflict: {detail}; nothing changed"),
        }
    }
}

/// How a pass runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Print the plan, write nothing.
    pub dry_run: bool,
    /// Send the configured management secret even when its fingerprint matches.
    pub push_secret: bool,
}

/// How many recent passes are remembered for flap detection.
const FLAP_WINDOW: usize = 10;
/// Corrections of one field within the window that count as a fight with another writer.
const FLAP_LIMIT: usize = 3;

/// Runs passes against one APIM.
pub struct Syncer {
    /// The settings.
    pub settings: Settings,
    client: ApimClient,
    metrics: SyncMetrics,
    /// The status `/status` shows.
    pub status: Arc<SyncStatus>,
    history: Mutex<VecDeque<Vec<String>>>,
    /// Timestamps and the APIM token's lifetime are kept on it.
    clock: Arc<dyn jwtgate_base::clock::Clock>,
}

/// An RFC 3339 UTC timestamp, to the second.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Syncer {
    /// A syncer with its own APIM client.
    pub fn new(
        settings: Settings,
        metrics: SyncMetrics,
        status: Arc<SyncStatus>,
        clock: Arc<dyn jwtgate_base::clock::Clock>,
    ) -> Result<Syncer, String> {
        let client = ApimClient::new(settings.clone(), clock.clone())?;
        Ok(Syncer { settings, client, metrics, status, history: Mutex::new(VecDeque::new()), clock })
    }

    /// One pass. A dry run reads (and may register and get a token) but never POSTs or PUTs;
    /// `push_secret` sends the configured secret even when the stored fingerprint matches.
    pub async fn pass(
        &self,
        discovery: &Discovery,
        discovery_url: &Url,
        opts: PassOptions,
    ) -> Result<Outcome, ApimError> {
        let result = self.pass_inner(discovery, discovery_url, opts).await;
        self.record(&result, opts.dry_run);
        result
    }

    async fn pass_inner(
        &self,
        discovery: &Discovery,
        discovery_url: &Url,
        opts: PassOptions,
    ) -> Result<Outcome, ApimError> {
        let dry_run = opts.dry_run;
        let secrets = self.settings.secrets().map_err(ApimError::Local)?;
        let desired = desired::managed_fields(&self.settings, discovery, discovery_url, &secrets.mgmt_client_secret);
        let name = self.settings.name.as_str();
        let mut created_elsewhere = false;
        loop {
            let list = self.client.list(&secrets).await?;
            let found = list.iter().find(|km| km.get("name").and_then(Value::as_str) == Some(name));
            let Some(info) = found else {
                if created_elsewhere {
                    return Err(ApimError::Local(format!(
                        "APIM answered 409 for {name:?} but does not list it (another tenant or a global key manager?)"
                    )));
                }
                let fields = desired::describe_create(&desired);
                if dry_run {
                    return Ok(Outcome::Create { id: None, fields, applied: false });
                }
                match self.client.create(&desired::create_body(name, &desired), &secrets).await? {
                    Created::Created(obj) => {
                        self.metrics.writes.with_label_values(&["create"]).inc();
                        let id = obj.get("id").and_then(Value::as_str).map(str::to_string);
                        tracing::info!(
                            key_manager = name,
                            id = id.as_deref().unwrap_or(""),
                            "created the APIM key manager"
                        );
                        return Ok(Outcome::Create { id, fields, applied: true });
                    }
                    Created::AlreadyExists => {
                        tracing::info!(
                            key_manager = name,
                            "another writer created the key manager first; reconciling it"
                        );
                        created_elsewhere = true;
                        continue;
                    }
                }
            };
            let kind = info.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != ASGARDEO_TYPE {
                return Ok(Outcome::Conflict {
                    detail: format!("a key manager named {name:?} exists with type {kind:?}, not {ASGARDEO_TYPE:?}"),
                });
            }
            let Some(id) = info.get("id").and_then(Value::as_str).map(str::to_string) else {
                return Err(ApimError::Local("the key-manager list entry has no id".into()));
            };
            let actual = self.client.get(&id, &secrets).await?;
            let mut changes = desired::diff(&actual, &desired);
            if opts.push_secret && !changes.iter().any(|c| c.field == desired::SECRET_FIELD) {
                // APIM masks the stored secret: a secret typed in the Admin Portal leaves the
                // fingerprint matching, so only the operator can say it must be sent again.
                changes.push(Change {
                    field: desired::SECRET_FIELD.into(),
                    old: Some(serde_json::json!(desired::MASK)),
                    new: serde_json::json!(format!("{} (pushed)", desired::MASK)),
                });
            }
            if changes.is_empty() {
                return Ok(Outcome::InSync { id });
            }
            if dry_run {
                return Ok(Outcome::Update { id, changes, applied: false });
            }
            let rotate = changes.iter().any(|c| c.field == desired::SECRET_FIELD);
            let body = desired::update_body(&actual, &desired, rotate);
            self.client.update(&id, &body, &secrets).await?;
            self.metrics.writes.with_label_values(&["update"]).inc();
            let names: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
            tracing::info!(key_manager = name, %id, fields = ?names, "corrected the APIM key manager");
            return Ok(Outcome::Update { id, changes, applied: true });
        }
    }

    fn record(&self, result: &Result<Outcome, ApimError>, dry_run: bool) {
        let now = self.clock.wall_time();
        let corrected: Vec<String> = match result {
            Ok(Outcome::Update { changes, applied: true, .. }) => changes.iter().map(|c| c.field.clone()).collect(),
            _ => Vec::new(),
        };
        if !dry_run {
            self.detect_flapping(corrected);
        }
        let run = match result {
            Ok(Outcome::Conflict { .. }) => "conflict",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.metrics.runs.with_label_values(&[run]).inc();
        match result {
            Ok(Outcome::Conflict { .. }) | Err(_) => self.metrics.in_sync.set(0),
            Ok(Outcome::InSync { .. }) => self.metrics.in_sync.set(1),
            Ok(Outcome::Create { applied, .. } | Outcome::Update { applied, .. }) => {
                self.metrics.in_sync.set(i64::from(*applied))
            }
        }
        if matches!(result, Ok(o) if !matches!(o, Outcome::Conflict { .. })) {
            let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            self.metrics.last_success.set(secs);
        }
        self.status.update(|s| {
            s.last_run = Some(timestamp(now));
            match result {
                Ok(Outcome::InSync { id }) => {
                    s.state = SyncState::InSync;
                    s.key_manager_id = Some(id.clone());
                    s.last_result = Some("in_sync".into());
                    s.last_error = None;
                    s.last_diff = Vec::new();
                }
                Ok(Outcome::Create { id, fields, applied }) => {
                    s.state = if *applied { SyncState::InSync } else { SyncState::Drifted };
                    s.key_manager_id = id.clone();
                    s.last_result = Some(if *applied { "created" } else { "would_create" }.into());
                    s.last_error = None;
                    s.last_diff = fields.iter().map(|f| f.field.clone()).collect();
                }
                Ok(Outcome::Update { id, changes, applied }) => {
                    s.state = if *applied { SyncState::InSync } else { SyncState::Drifted };
                    s.key_manager_id = Some(id.clone());
                    s.last_result = Some(if *applied { "updated" } else { "would_update" }.into());
                    s.last_error = None;
                    s.last_diff = changes.iter().map(|c| c.field.clone()).collect();
                }
                Ok(Outcome::Conflict { detail }) => {
                    s.state = SyncState::Error;
                    s.last_result = Some("conflict".into());
                    s.last_error = Some(detail.clone());
                }
                Err(e) => {
                    s.state = SyncState::Error;
                    s.last_result = Some("error".into());
                    s.last_error = Some(e.to_string());
                }
            }
        });
    }

    fn detect_flapping(&self, corrected: Vec<String>) {
        let mut history = jwtgate_base::sync::lock(&self.history);
        history.push_back(corrected);
        while history.len() > FLAP_WINDOW {
            history.pop_front();
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for pass in history.iter() {
            for f in pass {
                *counts.entry(f.as_str()).or_default() += 1;
            }
        }
        let fighting: Vec<String> =
            counts.into_iter().filter(|(_, n)| *n >= FLAP_LIMIT).map(|(f, _)| f.to_string()).collect();
        for field in fighting {
            tracing::warn!(
                field = %field,
                "another writer keeps changing {field}: corrected {FLAP_LIMIT} times within {FLAP_WINDOW} passes"
            );
            self.metrics.conflicts.inc();
            for pass in history.iter_mut() {
                pass.retain(|f| f != &field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000)), "2026-11-18T11:06:40Z");
    }
}
