//! Keeps WSO2 API Manager's Asgardeo key-manager registration in step with the configuration
//! and the live discovery document, through APIM's Admin REST API, as a reconciled resource:
//! desired state from config + discovery, actual state from APIM, and only the difference is
//! written. The background task runs at start, every interval (plus jitter), and at once when
//! the key refresher sees the discovery document change; it never blocks the hot path and never
//! panics the process. `km-sync --once` runs one pass from the command line.

// Reconciling APIM is the `jwtgate-km-sync` crate's job; when to reconcile is the gateway's.
pub use jwtgate_km_sync::{apim, desired, reconcile, settings, status};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::fetch::HttpFetcher;
use crate::keys::IssuerKeys;
use crate::metrics::Metrics;
use apim::ApimError;
use jwtgate_base::clock::Clock;
pub use reconcile::PassOptions;
use reconcile::{timestamp, Outcome, Syncer};
use settings::Settings;
use status::{SyncState, SyncStatus};

use jwtgate_base::clock::{jittered, Backoff};

/// The background sync: waits for the refresher's first discovery document, then passes at
/// start, every interval and on every discovery change, retrying transient failures with
/// exponential backoff (with jitter) up to `max_backoff_seconds`.
pub async fn run_task(
    syncer: Arc<Syncer>,
    keys: Arc<IssuerKeys>,
    mut shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) {
    let mut discovery = keys.subscribe_discovery();
    let settings = syncer.settings.clone();
    loop {
        let doc = discovery.borrow_and_update().clone();
        let Some(doc) = doc else {
            tokio::select! {
                r = discovery.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        };
        let url = keys.discovery_url();
        let cap = settings.max_backoff.max(Duration::from_secs(1));
        let mut backoff = Backoff::new(Duration::from_secs(1), cap);
        loop {
            match syncer.pass(&doc, &url, PassOptions::default()).await {
                Ok(outcome) => {
                    if let Outcome::Conflict { detail } = &outcome {
                        tracing::error!("key-manager sync: {detail}; nothing changed");
                    }
                    break;
                }
                Err(e) if e.is_transient() => {
                    let wait = backoff.next_delay().min(cap);
                    tracing::warn!(retry_in_ms = wait.as_millis() as u64, "key-manager sync failed, retrying: {e}");
                    syncer.status.update(|s| s.next_run = Some(timestamp(clock.wall_time() + wait)));
                    tokio::select! {
                        _ = clock.sleep(wait) => {}
                        r = discovery.changed() => if r.is_err() { return } else { break },
                        _ = shutdown.changed() => return,
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "key-manager sync refused by APIM or misconfigured (no retry until the next pass): {e}"
                    );
                    break;
                }
            }
        }
        let wait = jittered(settings.interval, settings.jitter);
        syncer.status.update(|s| s.next_run = Some(timestamp(clock.wall_time() + wait)));
        tokio::select! {
            _ = clock.sleep(wait) => {}
            r = discovery.changed() => {
                if r.is_err() { return }
                tracing::info!("the discovery document changed; syncing the APIM key manager now");
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// An inline password works but sits in a file that is often world-readable or committed.
fn warn_inline_password(settings: &Settings) {
    if matches!(settings.password, settings::SecretSource::Inline(_)) {
        tracing::warn!("key_manager_sync.password is inline in the config file; prefer password_env or password_file");
    }
}

/// A background sync built and ready to start: everything that can fail (the settings' issuer,
/// the APIM client with its CA bundle) has been done, nothing has changed yet. A reload
/// prepares the new sync before it publishes anything, so a bad `ca_file` refuses the whole
/// reload.
pub struct PreparedSync {
    syncer: Arc<Syncer>,
    issuer: Arc<IssuerKeys>,
}

/// Builds the background sync `config` asks for (`None` when it runs none).
pub fn prepare(
    config: &Config,
    keys: &[Arc<IssuerKeys>],
    metrics: Arc<Metrics>,
    status: Arc<SyncStatus>,
    clock: Arc<dyn Clock>,
) -> Result<Option<PreparedSync>, String> {
    let Some(settings) = config.key_manager_sync.for_serve() else { return Ok(None) };
    let settings = settings.clone();
    let Some(issuer) = keys.get(settings.issuer_index).cloned() else {
        return Err("key_manager_sync.issuer: no such issuer".into());
    };
    let syncer = Arc::new(
        Syncer::new(settings, metrics.km_sync(), status, clock).map_err(|e| format!("key_manager_sync: {e}"))?,
    );
    Ok(Some(PreparedSync { syncer, issuer }))
}

impl PreparedSync {
    /// The key store of the issuer it describes.
    pub fn issuer(&self) -> &Arc<IssuerKeys> {
        &self.issuer
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.syncer.settings
    }

    /// Starts the background task (infallible).
    pub fn start(self, shutdown: watch::Receiver<bool>, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
        warn_inline_password(&self.syncer.settings);
        self.syncer.status.update(|s| s.state = SyncState::Drifted);
        tokio::spawn(run_task(self.syncer, self.issuer, shutdown, clock))
    }
}

/// The result of `km-sync --once`: what to print and the exit code.
pub struct OnceResult {
    /// Lines for stdout.
    pub output: String,
    /// 0 success, 1 failure, 2 configuration error.
    pub exit_code: i32,
}

/// `km-sync --once [--dry-run] [--push-secret]`: fetches discovery itself, runs one pass,
/// retries transient failures (backing off on `clock`) for at most `budget` of `clock`'s
/// time, and prints the plan. Each request's own timeout is real time.
pub async fn run_once(config: &Config, opts: PassOptions, budget: Duration, clock: Arc<dyn Clock>) -> OnceResult {
    let dry_run = opts.dry_run;
    let fail = |output: String, exit_code| OnceResult { output, exit_code };
    let settings = match config.key_manager_sync.for_one_pass() {
        Ok(Some(s)) => s.clone(),
        Ok(None) => return fail("no [key_manager_sync] section in the configuration".into(), 2),
        Err(problems) => return fail(problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"), 2),
    };
    warn_inline_password(&settings);
    if let Err(e) = settings.secrets() {
        return fail(format!("key_manager_sync: {e}"), 2);
    }
    let fetcher = match HttpFetcher::new() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot build the HTTP client: {e}"), 1),
    };
    let metrics = Arc::new(Metrics::new());
    let Some(issuer) = config.issuers.get(settings.issuer_index) else {
        return fail("key_manager_sync.issuer: no such issuer".into(), 2);
    };
    let keys = IssuerKeys::new(issuer.clone(), fetcher, metrics.clone(), Arc::new(jwtgate_base::clock::SystemClock));
    let doc = match keys.fetch_discovery().await {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot read the issuer's discovery document: {e}"), 1),
    };
    let url = keys.discovery_url();
    let name = settings.name.clone();
    let max_backoff = settings.max_backoff;
    let syncer =
        match Syncer::new(settings, metrics.km_sync(), Arc::new(SyncStatus::new(SyncState::Drifted)), clock.clone()) {
            Ok(s) => s,
            Err(e) => return fail(e, 2),
        };
    let deadline = clock.monotonic() + budget;
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    loop {
        match syncer.pass(&doc, &url, opts).await {
            Ok(outcome) => {
                let mut output = outcome.plan(&name);
                let code = if matches!(outcome, Outcome::Conflict { .. }) { 1 } else { 0 };
                if code == 0 {
                    output.push('\n');
                    output.push_str(match (&outcome, dry_run) {
                        (Outcome::InSync { .. }, _) => "nothing to do",
                        (_, true) => "dry run: nothing written",
                        _ => "applied",
                    });
                }
                return OnceResult { output, exit_code: code };
            }
            Err(e) if e.is_transient() && clock.monotonic() + backoff.peek() < deadline => {
                tracing::warn!(retry_in_s = backoff.peek().as_secs(), "km-sync: {e}; retrying");
                clock.sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                let last = match &e {
                    ApimError::Transient { status: Some(s), .. } => format!(" (last status: HTTP {s})"),
                    _ => String::new(),
                };
                let prefix =
                    if e.is_transient() { format!("giving up after {} s: ", budget.as_secs()) } else { String::new() };
                return fail(format!("km-sync failed: {prefix}{e}{last}"), 1);
            }
        }
    }
}
