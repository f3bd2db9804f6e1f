//! A running gateway's configuration over time. Everything a request reads is one
//! [`Generation`], built from one [`Config`] and published through one `ArcSwap`: a request
//! loads it once and finishes on it, so a reload ([`Reloader`]: SIGHUP, `POST /reload`, the
//! file watcher) is atomic — in-flight requests end on the old generation, the next request on
//! any connection (keep-alive ones stay open) sees the new one. Every file is read before
//! anything is swapped: all of a reload applies, or none. A reload keeps what did not change:
//! the key stores of unchanged issuers (no refetch burst), the upstream pool, the DPoP replay
//! cache, the verified-token cache, the key-manager sync task. `serve` starts the first
//! generation; the admin listener reloads through the [`Reloader`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::decision::Judge;
use crate::decision_listener::DecisionService;
use crate::fetch::HttpFetcher;
use crate::keys::{IssuerKeys, KeyRegistry};
use crate::km_sync::settings::Settings;
use crate::km_sync::status::{SyncState, SyncStatus};
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamPool;
use crate::proxy::Gateway;
use crate::revocation::DenyList;
use jwtgate_base::clock::Clock;
use jwtgate_edge::TlsSwitch;

/// Why a configuration was not put in force, at start or on reload — nothing of it applies —
/// with every problem found, each naming its key or file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigRefused {
    /// The gateway was not started from a file, so there is nothing to read again.
    #[error("this gateway was not started from a configuration file")]
    NoFile,
    /// The file does not parse or validate.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A listener's certificate or key.
    #[error("{}", .0.join("; "))]
    Tls(Vec<String>),
    /// A file or secret the configuration names (deny list, client secret, password).
    #[error("{}", .0.join("; "))]
    NamedFiles(Vec<String>),
    /// A part that could not be built from it (the upstream's CA, the introspection client,
    /// the shared store, the key-manager sync).
    #[error("{0}")]
    Build(String),
}

impl ConfigRefused {
    /// Each problem on its own (`POST /reload`'s `problems`, `/status`'s `last_reload_error`).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigRefused::NoFile => vec![self.to_string()],
            ConfigRefused::Invalid(p) | ConfigRefused::Tls(p) | ConfigRefused::NamedFiles(p) => p.clone(),
            ConfigRefused::Build(p) => vec![p.clone()],
        }
    }
}

/// What requests read: everything built from one configuration.
pub struct Generation {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// The proxy's handler state.
    pub gateway: Arc<Gateway>,
    /// The decision listener's, when `[decision]` is configured.
    pub decision: Option<Arc<DecisionService>>,
    /// The key stores, in `[[issuers]]` order.
    pub keys: Arc<KeyRegistry>,
    /// When this configuration was loaded.
    pub loaded_at: SystemTime,
    /// Each issuer's deny list as read for this generation (`None`: it has none), put in
    /// force when the generation is.
    deny_lists: Vec<Option<Arc<DenyList>>>,
}

impl Generation {
    /// Puts this generation's deny lists in force (at start, and when a reload publishes it).
    pub(crate) fn publish_deny_lists(&self, metrics: &Metrics) {
        for (k, list) in self.keys.issuers.iter().zip(&self.deny_lists) {
            if let Some(list) = list {
                k.revoked.store(list.clone());
                metrics.deny_list_entries.with_label_values(&[k.name()]).set(list.len() as i64);
            }
        }
    }
}

/// The current generation, swapped whole on reload.
pub type Live = Arc<ArcSwap<Generation>>;

/// The content of the configuration file and of every file the running configuration names,
/// as one digest (a missing or unreadable file counts as its own state). Read off the async
/// runtime: a `worker_threads = 1` gateway must not stall on a slow volume.
async fn watched_digest(source: PathBuf, named: Vec<PathBuf>) -> Vec<u8> {
    let digest = tokio::task::spawn_blocking(move || {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for file in std::iter::once(&source).chain(named.iter()) {
            ctx.update(file.as_os_str().as_encoded_bytes());
            match std::fs::read(file) {
                Ok(bytes) => {
                    ctx.update(b"\x01");
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(&bytes);
                }
                Err(e) => ctx.update(format!("\x00{:?}", e.kind()).as_bytes()),
            }
        }
        ctx.finish().as_ref().to_vec()
    })
    .await;
    digest.unwrap_or_default()
}

/// The digest of the watched files after a reload — unless the configuration file changed again
/// while that reload read it (kubelet swapping twice in a row): then an empty digest, so the
/// next look reloads, instead of taking the newer file for the one that was loaded.
async fn loaded_digest(reloader: &Reloader, source: &std::path::Path, named: Vec<PathBuf>) -> Vec<u8> {
    let digest = watched_digest(source.to_path_buf(), named).await;
    match file_is_loaded(reloader, source).await {
        true => digest,
        false => Vec::new(),
    }
}

/// True when the file at `source` is, byte for byte, the one the running configuration was
/// loaded from (read off the runtime).
async fn file_is_loaded(reloader: &Reloader, source: &std::path::Path) -> bool {
    let path = source.to_path_buf();
    let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || std::fs::read(path)).await else { return true };
    let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    let hex: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    hex == reloader.current().config.sha256
}

/// `server.watch_config_seconds`: polls the configuration file and every file it names (on the
/// gateway's clock) and reloads — all or nothing, as SIGHUP does — when their content changes.
/// A change that is refused is not tried again until the files change once more. With the
/// setting at 0 it only looks every few seconds whether a reload turned it on.
pub(crate) async fn watch_config(reloader: Arc<Reloader>, mut shutdown: watch::Receiver<bool>, clock: Arc<dyn Clock>) {
    let Some(source) = reloader.source.clone() else { return };
    let named = |r: &Reloader| r.current().config.named_files();
    let mut seen = watched_digest(source.clone(), named(&reloader)).await;
    // The file may have changed between its loading and this first look (kubelet swapping the
    // ConfigMap while the pod starts): then what runs is not what the digest above describes.
    if reloader.current().config.server.watch_config_seconds > 0 && !file_is_loaded(&reloader, &source).await {
        tracing::info!(file = %source.display(), "the configuration changed while starting; reloading");
        if reloader.reload().await.is_ok() {
            seen = loaded_digest(&reloader, &source, named(&reloader)).await;
        }
    }
    loop {
        let every = reloader.current().config.server.watch_config_seconds;
        let wait = Duration::from_secs(if every == 0 { 5 } else { every });
        tokio::select! {
            _ = clock.sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if every == 0 {
            continue;
        }
        let now = watched_digest(source.clone(), named(&reloader)).await;
        if now == seen {
            continue;
        }
        seen = now;
        tracing::info!(file = %source.display(), "the configuration or a file it names changed; reloading");
        if reloader.reload().await.is_ok() {
            // The new configuration may name other files: watch those from now on.
            seen = loaded_digest(&reloader, &source, named(&reloader)).await;
        }
    }
}

/// Logs what is legal but weakens the checks, once per load.
pub(crate) fn warn_about(config: &Config) {
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
}

/// What a generation is built with beside its configuration.
pub(crate) struct Parts {
    pub(crate) fetcher: HttpFetcher,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Builds a generation from `config`, reusing from `previous` the key stores of issuers whose
/// configuration is unchanged, the upstream pool if `[upstream]` is unchanged, and the DPoP
/// replay cache. Fails only on an upstream `ca_file` that cannot be used.
pub(crate) fn build(
    config: Config,
    previous: Option<&Generation>,
    parts: &Parts,
    files: NamedFiles,
) -> Result<Generation, String> {
    let mut reusable: Vec<Arc<IssuerKeys>> = previous.map(|p| p.keys.issuers.clone()).unwrap_or_default();
    let issuers = config
        .issuers
        .iter()
        .map(|cfg| match reusable.iter().position(|k| &k.cfg == cfg) {
            Some(i) => reusable.swap_remove(i),
            None => Arc::new(IssuerKeys::new(
                cfg.clone(),
                parts.fetcher.clone(),
                parts.metrics.clone(),
                parts.clock.clone(),
            )),
        })
        .collect();
    let keys = Arc::new(KeyRegistry { issuers });
    let mut auth = Authenticator::new(
        keys.clone(),
        parts.clock.clone(),
        config.server.token_cache_entries,
        config.server.max_token_bytes(),
        parts.metrics.clone(),
    )
    .with_claim_paths(config.claim_paths.clone())
    .with_route_rules(config.rule_paths.clone(), config.routes.iter().any(|r| r.audiences.is_some()))
    .with_introspector(introspector(&config, &keys, parts, files.introspection_secret)?)
    .with_shared_state(shared_store(&config, previous, parts, files.redis_password)?);
    // The proofs seen are kept across reloads (a proof used just before one must not pass just
    // after); a new size takes a restart.
    if let Some(p) = previous {
        auth = auth.keep_token_cache_of(p.gateway.auth());
    }
    auth = auth.with_replay_cache(match previous {
        Some(p) => p.gateway.auth().replay_cache().clone(),
        None => Arc::new(crate::auth::dpop::ReplayCache::with_capacity(config.server.dpop_replay_cache_entries)),
    });
    let auth = Arc::new(auth);
    let pool = match previous.map(|p| p.gateway.pool()).filter(|pool| pool.config() == &config.upstream) {
        Some(pool) => pool.clone(),
        None => UpstreamPool::start(&config.upstream, parts.clock.clone())?,
    };
    let decision = config.decision.as_ref().map(|d| {
        Arc::new(DecisionService::new(
            Judge::new(&config.routes, auth.clone(), &parts.metrics, "decision", &config.server),
            d.front_proxy,
        ))
    });
    let judge = Judge::new(&config.routes, auth, &parts.metrics, "proxy", &config.server)
        .with_access_log(config.server.access_log);
    let gateway = Arc::new(Gateway::new(
        judge,
        config.upstream.clone(),
        pool,
        &config.server,
        config.server_tls.is_some(),
        parts.metrics.clone(),
    ));
    Ok(Generation {
        config: Arc::new(config),
        gateway,
        decision,
        keys,
        loaded_at: parts.clock.wall_time(),
        deny_lists: files.deny_lists,
    })
}

/// The store the replicas share: the previous generation's when `[shared_state]` is unchanged
/// (its connections stay up), else a new one (connected lazily: the store may be down now).
fn shared_store(
    config: &Config,
    previous: Option<&Generation>,
    parts: &Parts,
    password: Option<String>,
) -> Result<Option<Arc<crate::shared_state::SharedStore>>, String> {
    parts.metrics.export_shared_state(config.shared_state.is_some());
    let Some(cfg) = &config.shared_state else { return Ok(None) };
    if let Some(kept) = previous.and_then(|p| p.gateway.auth().shared_state()).filter(|s| s.config() == cfg) {
        return Ok(Some(kept.clone()));
    }
    crate::shared_state::SharedStore::new(cfg, password, parts.clock.clone(), parts.metrics.clone())
        .map(|s| Some(Arc::new(s)))
}

/// The introspection client of the issuer that introspects opaque tokens, if one does.
fn introspector(
    config: &Config,
    keys: &KeyRegistry,
    parts: &Parts,
    secret: Option<String>,
) -> Result<Option<crate::auth::introspection::Introspector>, String> {
    let (Some(i), Some(secret)) = (config.issuers.iter().position(|c| c.introspection.is_some()), secret) else {
        return Ok(None);
    };
    crate::auth::introspection::Introspector::new(
        crate::keys::IssuerId::at(i),
        keys.issuers[i].clone(),
        config,
        secret,
        parts.clock.clone(),
        parts.metrics.clone(),
    )
    .map(Some)
}

/// The files and secrets a configuration names besides its listeners' certificates — every
/// issuer's deny list, the introspection client's secret, the shared store's password — read
/// whole before anything is built: on a blocking thread for a reload (a slow volume never stalls
/// a `worker_threads = 1` gateway), and by `check-config`, so all three refuse the same files.
pub(crate) struct NamedFiles {
    deny_lists: Vec<Option<Arc<DenyList>>>,
    introspection_secret: Option<String>,
    redis_password: Option<String>,
}

impl NamedFiles {
    pub(crate) fn read(config: &Config) -> Result<NamedFiles, ConfigRefused> {
        let mut problems = Vec::new();
        let deny_lists = config
            .issuers
            .iter()
            .enumerate()
            .map(|(i, c)| match &c.deny_list {
                None => None,
                Some(d) => DenyList::read(&d.file)
                    .map(Arc::new)
                    .map_err(|e| problems.push(format!("issuers[{i}].deny_list_file: {e}")))
                    .ok(),
            })
            .collect();
        let mut introspection_secret = None;
        for (i, c) in config.issuers.iter().enumerate() {
            if let Some(x) = &c.introspection {
                match x.client_secret.read() {
                    Ok(secret) => introspection_secret = Some(secret),
                    Err(e) => problems.push(format!("issuers[{i}].introspection.client_secret: {e}")),
                }
            }
        }
        let redis_password = match config.shared_state.as_ref().and_then(|s| s.password.as_ref()).map(|p| p.read()) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                problems.push(format!("shared_state.password: {e}"));
                None
            }
        };
        match problems.is_empty() {
            true => Ok(NamedFiles { deny_lists, introspection_secret, redis_password }),
            false => Err(ConfigRefused::NamedFiles(problems)),
        }
    }
}

/// How often the deny lists are looked at: a revoked token is refused within a second.
const DENY_LIST_POLL: Duration = Duration::from_millis(500);

/// Re-reads an issuer's deny list when its file changes (its inode, size or times: the content
/// is read only then): a good file is in force at once; a malformed one is refused (logged once
/// per change, counted), and the list in force stays.
pub(crate) async fn watch_deny_lists(
    reloader: Arc<Reloader>,
    mut shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) {
    let mut seen: std::collections::HashMap<PathBuf, Vec<u8>> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = clock.sleep(DENY_LIST_POLL) => {}
            _ = shutdown.changed() => return,
        }
        let keys = reloader.current().keys.clone();
        for k in &keys.issuers {
            let Some(d) = &k.cfg.deny_list else { continue };
            let path = d.file.clone();
            // The file's identity and times, not its content: a list of millions of lines is
            // read again only when it changed (kubelet's symlink swap changes the inode).
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let stamp = [m.dev(), m.ino(), m.len(), m.mtime() as u64, m.mtime_nsec() as u64, m.ctime_nsec() as u64]
                    .iter()
                    .flat_map(|v| v.to_be_bytes())
                    .collect::<Vec<u8>>();
                Ok::<_, String>((stamp, path))
            })
            .await;
            let (digest, path) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => (format!("unreadable: {e}").into_bytes(), d.file.clone()),
                Err(_) => continue,
            };
            if seen.get(&path) == Some(&digest) {
                continue;
            }
            seen.insert(path.clone(), digest);
            // First sight included: the file may have changed since start or the last reload
            // read it (an unchanged list is not put in force again).
            let file = path.clone();
            let parsed = tokio::task::spawn_blocking(move || DenyList::read(&file)).await;
            let issuer = k.name();
            match parsed {
                Ok(Ok(list)) if list == **k.revoked.load() => {}
                Ok(Ok(list)) => {
                    metrics.deny_list_entries.with_label_values(&[issuer]).set(list.len() as i64);
                    metrics.deny_list_reloads.with_label_values(&[issuer, "ok"]).inc();
                    tracing::info!(issuer, entries = list.len(), file = %path.display(), "deny list reloaded");
                    k.revoked.store(Arc::new(list));
                }
                Ok(Err(e)) => {
                    metrics.deny_list_reloads.with_label_values(&[issuer, "error"]).inc();
                    tracing::error!(issuer, problem = %e, "deny list refused; the list in force stays");
                }
                Err(_) => {}
            }
        }
    }
}

/// The running key-manager sync: the settings and key store it runs with, and its task.
type KmTask = (Settings, Arc<IssuerKeys>, JoinHandle<()>);

/// Starts a prepared sync, noting what it runs with (a reload compares against it).
pub(crate) fn start_km(
    p: crate::km_sync::PreparedSync,
    shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
) -> KmTask {
    let (settings, issuer) = (p.settings().clone(), p.issuer().clone());
    (settings, issuer, p.start(shutdown, clock))
}

/// The background tasks of the current generation.
pub(crate) struct Background {
    /// Each key store's refresher.
    pub(crate) refreshers: Vec<(Arc<IssuerKeys>, JoinHandle<()>)>,
    /// The key-manager sync, with the settings and key store it runs with.
    pub(crate) km: Option<KmTask>,
}

/// What a reload changed.
#[derive(Debug, Clone, Default)]
pub struct Reloaded {
    /// Settings that changed in the file but take effect only after a restart.
    pub restart_needed: Vec<String>,
    /// The new configuration's SHA-256.
    pub sha256: String,
}

/// The configuration file's history, for `/status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadHistory {
    /// Reloads applied.
    pub ok: u64,
    /// Reloads refused.
    pub failed: u64,
    /// Why the last refused reload was refused (cleared by a successful one).
    pub last_error: Option<Vec<String>>,
    /// Settings changed in the file that wait for a restart.
    pub restart_needed: Vec<String>,
}

/// Re-reads the configuration file and swaps in a new generation (SIGHUP, `POST /reload`).
pub struct Reloader {
    pub(crate) live: Live,
    /// The proxy's handler state alone, swapped right after `live`: a request loads one `Arc`
    /// (see `Gateway::handle`).
    pub(crate) proxy: Arc<ArcSwap<Gateway>>,
    pub(crate) source: Option<PathBuf>,
    pub(crate) parts: Parts,
    pub(crate) background: tokio::sync::Mutex<Background>,
    pub(crate) km_status: Arc<SyncStatus>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) proxy_tls: Option<TlsSwitch>,
    pub(crate) decision_tls: Option<TlsSwitch>,
    pub(crate) history: std::sync::Mutex<ReloadHistory>,
    /// The configuration the process started with: what its listeners, limits, runtime and
    /// logging actually run with (a reload never changes those), so `restart_needed` is
    /// measured against it, not against the last file read.
    pub(crate) started: Arc<Config>,
}

impl Reloader {
    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.live.load_full()
    }

    /// The reload history.
    pub fn history(&self) -> ReloadHistory {
        jwtgate_base::sync::lock(&self.history).clone()
    }

    /// Reads the file again. A valid one (TLS files included) replaces routes, issuers,
    /// upstream and sync settings at once; an invalid one changes nothing and its problems
    /// are returned (and logged). Listener addresses and connection limits changed in the
    /// file are reported as needing a restart. One reload runs at a time.
    pub async fn reload(&self) -> Result<Reloaded, ConfigRefused> {
        let mut background = self.background.lock().await;
        let result = match self.read_files().await {
            Ok((config, certs, files)) => self.reload_locked(&mut background, config, certs, files),
            Err(refused) => Err(refused),
        };
        let reloads = &self.parts.metrics.config_reloads;
        let mut history = jwtgate_base::sync::lock(&self.history);
        match &result {
            Ok(r) => {
                reloads.with_label_values(&["ok"]).inc();
                history.ok += 1;
                history.last_error = None;
                history.restart_needed.clone_from(&r.restart_needed);
                if r.restart_needed.is_empty() {
                    tracing::info!(sha256 = %r.sha256, "configuration reloaded");
                } else {
                    tracing::warn!(sha256 = %r.sha256, restart_needed = ?r.restart_needed, "configuration reloaded; these changes need a restart to take effect");
                }
            }
            Err(refused) => {
                reloads.with_label_values(&["error"]).inc();
                history.failed += 1;
                let problems = refused.problems();
                tracing::error!(problems = ?problems, "configuration reload refused; the running configuration stays");
                history.last_error = Some(problems);
            }
        }
        result
    }

    /// The configuration file and the listeners' certificates, read on a blocking thread: a
    /// `worker_threads = 1` gateway keeps serving while a slow volume answers.
    async fn read_files(&self) -> Result<(Config, ListenerCerts, NamedFiles), ConfigRefused> {
        let Some(path) = self.source.clone() else { return Err(ConfigRefused::NoFile) };
        tokio::task::spawn_blocking(move || {
            let config = Config::load(&path)
                .map_err(|e| ConfigRefused::Invalid(e.problems.iter().map(ToString::to_string).collect()))?;
            let certs = ListenerCerts::read(&config)?;
            let files = NamedFiles::read(&config)?;
            Ok((config, certs, files))
        })
        .await
        .unwrap_or_else(|e| Err(ConfigRefused::Build(format!("reading the configuration failed: {e}"))))
    }

    fn reload_locked(
        &self,
        background: &mut Background,
        config: Config,
        certs: ListenerCerts,
        files: NamedFiles,
    ) -> Result<Reloaded, ConfigRefused> {
        let old = self.live.load_full();
        let restart_needed = restart_needed(&self.started, &config);
        // Every file is read before anything is swapped: all of it applies, or none.
        let sha256 = config.sha256.clone();
        let new = Arc::new(build(config, Some(&old), &self.parts, files).map_err(ConfigRefused::Build)?);
        // The sync restarts only when what it runs with changed; a new one is built (its APIM
        // client and CA bundle) before anything is published.
        let wanted = new.config.key_manager_sync.for_serve();
        let km_unchanged = match (&background.km, wanted) {
            (Some((s, k, _)), Some(w)) => {
                s == w && new.keys.issuers.get(w.issuer_index).is_some_and(|n| Arc::ptr_eq(n, k))
            }
            (None, None) => true,
            _ => false,
        };
        let km = if km_unchanged {
            None
        } else {
            Some(
                crate::km_sync::prepare(
                    &new.config,
                    &new.keys.issuers,
                    self.parts.metrics.clone(),
                    self.km_status.clone(),
                    self.parts.clock.clone(),
                )
                .map_err(ConfigRefused::Build)?,
            )
        };

        // Everything that can fail has been done: from here on, all of it applies.
        warn_about(&new.config);
        certs.publish_expiry(&self.parts.metrics);
        if let (Some(switch), Some(c)) = (&self.proxy_tls, certs.proxy) {
            switch.store(c.config);
        }
        if let (Some(switch), Some(c)) = (&self.decision_tls, certs.decision) {
            switch.store(c.config);
        }
        self.proxy.store(new.gateway.clone());
        self.live.store(new.clone());
        new.publish_deny_lists(&self.parts.metrics);

        // Refreshers: kept for the key stores carried over, started for new ones, stopped for
        // the ones gone.
        let mut old_refreshers = std::mem::take(&mut background.refreshers);
        for k in &new.keys.issuers {
            match old_refreshers.iter().position(|(o, _)| Arc::ptr_eq(o, k)) {
                Some(i) => background.refreshers.push(old_refreshers.swap_remove(i)),
                None => background.refreshers.push((k.clone(), tokio::spawn(k.clone().run_refresher()))),
            }
        }
        for (k, handle) in old_refreshers {
            tracing::info!(issuer = %k.name(), "issuer removed; its key refresher stops");
            handle.abort();
        }
        if let Some(prepared) = km {
            if let Some((_, _, handle)) = background.km.take() {
                handle.abort();
                self.km_status.update(|s| s.state = SyncState::Disabled);
            }
            self.parts.metrics.export_km_sync(prepared.is_some());
            background.km = prepared.map(|p| start_km(p, self.shutdown.clone(), self.parts.clock.clone()));
        }
        Ok(Reloaded { restart_needed, sha256 })
    }

    pub(crate) async fn stop_background(&self) {
        let mut b = self.background.lock().await;
        for (_, h) in b.refreshers.drain(..) {
            h.abort();
        }
        if let Some((_, _, h)) = b.km.take() {
            h.abort();
        }
    }
}

/// The settings that differ between `old` and `new` but are fixed while running: listener
/// addresses, TLS on or off, connection limits, the runtime and logging.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let (o, n) = (&old.server, &new.server);
    let mut changed = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            changed.push(key.to_string());
        }
    };
    check("server.listen", o.listen != n.listen);
    check("server.admin_listen", o.admin_listen != n.admin_listen);
    check("server.health_listen", o.health_listen != n.health_listen);
    check("server.tls", old.server_tls.is_some() != new.server_tls.is_some());
    check("decision", old.decision.is_some() != new.decision.is_some());
    if let (Some(a), Some(b)) = (&old.decision, &new.decision) {
        check("decision.listen", a.listen != b.listen);
        check("decision.tls", a.tls.is_some() != b.tls.is_some());
    }
    check("server.max_header_bytes", o.max_header_bytes() != n.max_header_bytes());
    check("server.header_read_timeout_seconds", o.header_read_timeout_seconds != n.header_read_timeout_seconds);
    check("server.idle_timeout_seconds", o.idle_timeout_seconds != n.idle_timeout_seconds);
    check("server.max_connections", o.max_connections != n.max_connections);
    check("server.send_timeout_seconds", o.send_timeout_seconds != n.send_timeout_seconds);
    check("server.max_concurrent_streams", o.max_concurrent_streams != n.max_concurrent_streams);
    check("server.dpop_replay_cache_entries", o.dpop_replay_cache_entries != n.dpop_replay_cache_entries);
    check("server.drain_timeout_seconds", o.drain_timeout_seconds != n.drain_timeout_seconds);
    check("server.worker_threads", o.worker_threads != n.worker_threads);
    check("server.log_format", o.log_format != n.log_format);
    check("server.log_level", o.log_level != n.log_level);
    changed
}

/// The listeners' certificates and keys, read from their files: one reading for `start`, a
/// reload and `check-config`, so all three accept and refuse the same files.
pub(crate) struct ListenerCerts {
    pub(crate) proxy: Option<jwtgate_tls::LoadedTls>,
    pub(crate) decision: Option<jwtgate_tls::LoadedTls>,
}

impl ListenerCerts {
    /// Reads both listeners' files; every problem is named with its section.
    pub(crate) fn read(config: &Config) -> Result<ListenerCerts, ConfigRefused> {
        let mut problems = Vec::new();
        let mut load = |what: &str, t: Option<&crate::config::ListenerTls>| {
            t.and_then(|t| t.load().map_err(|e| problems.push(format!("{what}: {e}"))).ok())
        };
        let proxy = load("server.tls", config.server_tls.as_ref());
        let decision = load("decision.tls", config.decision.as_ref().and_then(|d| d.tls.as_ref()));
        match problems.is_empty() {
            true => Ok(ListenerCerts { proxy, decision }),
            false => Err(ConfigRefused::Tls(problems)),
        }
    }

    /// Sets `jwtgate_tls_certificate_expiry_timestamp_seconds` for each listener serving TLS.
    pub(crate) fn publish_expiry(&self, metrics: &Metrics) {
        for (listener, tls) in [("proxy", &self.proxy), ("decision", &self.decision)] {
            let _ = metrics.tls_expiry.remove_label_values(&[listener]);
            match tls.as_ref().map(|t| t.not_after) {
                Some(Some(at)) => metrics.tls_expiry.with_label_values(&[listener]).set(at as f64),
                Some(None) => tracing::warn!(
                    listener,
                    "the certificate's notAfter could not be read; it is served, but its expiry is not exported"
                ),
                None => {}
            }
        }
    }
}

/// Reads every file a gateway started from `config` would read — the listeners' certificates
/// and keys, the upstream's `ca_file`, the key-manager sync's `ca_file` when the sync runs —
/// and returns what is wrong with them (`check-config` fails on any; `start` and a reload would
/// refuse the same file).
pub fn check_files(config: &Config) -> Vec<String> {
    let mut problems = ListenerCerts::read(config).err().map(|e| e.problems()).unwrap_or_default();
    if let Err(e) = NamedFiles::read(config) {
        problems.extend(e.problems());
    }
    if let Some(t) = &config.upstream.tls {
        if let Err(e) = jwtgate_tls::client_config(t.ca_file.as_deref(), &[b"http/1.1"]) {
            problems.push(format!("upstream.ca_file: {e}"));
        }
    }
    if let Some(settings) = config.key_manager_sync.for_serve() {
        if let Err(e) =
            crate::km_sync::apim::ApimClient::new(settings.clone(), Arc::new(jwtgate_base::clock::SystemClock))
        {
            problems.push(format!("key_manager_sync: {e}"));
        }
    }
    problems
}
