//! Keys per issuer: OIDC discovery, the JWKS parsed into an immutable [`jwks::KeySet`] swapped
//! whole through `ArcSwap`, a background refresher, and the one rate-limited, single-flight
//! refetch an unknown `kid` may trigger. The last good set keeps serving while the IdP fails,
//! up to the configured maximum staleness. Nothing here blocks a reader: the hot path only
//! loads an `Arc`.

pub use jwtgate_jose::jwks;
pub use jwtgate_oidc::discovery;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use url::Url;

use crate::config::IssuerConfig;
use crate::fetch::{FetchError, HttpFetcher};
use crate::metrics::Metrics;
use discovery::{Discovery, DiscoveryError};
use jwks::{JwksError, KeySet};
use jwtgate_base::clock::Clock;

/// Why a refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    /// Transport, status, timeout or size.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The discovery document is unusable.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The JWKS is unusable.
    #[error("JWKS {url}: {source}")]
    Jwks {
        /// Where it came from.
        url: String,
        /// What is wrong.
        source: JwksError,
    },
}

/// A successfully loaded discovery document and key set.
pub struct Loaded {
    /// The discovery document in use.
    pub discovery: Arc<Discovery>,
    /// The keys.
    pub keys: Arc<KeySet>,
    /// When this set was last confirmed by the IdP, on the store's clock's monotonic time.
    pub confirmed_at: Duration,
    /// Bumped whenever the key material changes; verified-token cache entries remember it.
    pub generation: u64,
    jwks_hash: u64,
    fetch_seq: u64,
}

/// The keys of one `[[issuers]]` entry.
pub struct IssuerKeys {
    /// Its configuration.
    pub cfg: IssuerConfig,
    /// Its deny list (`deny_list_file`), swapped when the file changes or on reload.
    pub revoked: arc_swap::ArcSwap<crate::revocation::DenyList>,
    state: ArcSwapOption<Loaded>,
    discovery_url: Mutex<Url>,
    refetch_gate: tokio::sync::Mutex<Option<Duration>>,
    /// One discovery/JWKS fetch per issuer at a time (background refresh and unknown-`kid`
    /// refetch alike), so a slow answer can never land after, and overwrite, a newer one.
    fetch_lock: tokio::sync::Mutex<()>,
    /// The generation of the set in place.
    generation: AtomicU64,
    /// Hands out generations: every new key set gets a number no other set ever had.
    generations_issued: AtomicU64,
    /// Numbers JWKS fetches in the order they start; a set is published only if its fetch
    /// started after the one that produced the set in place.
    fetches_started: AtomicU64,
    last_error: Mutex<Option<String>>,
    fetcher: HttpFetcher,
    metrics: Arc<Metrics>,
    /// Staleness, the refresh schedule, the refetch rate limit and fetch timeouts run on it.
    clock: Arc<dyn Clock>,
    discovery_tx: watch::Sender<Option<Arc<Discovery>>>,
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

impl IssuerKeys {
    /// A store with nothing loaded yet, keeping time on `clock`.
    pub fn new(cfg: IssuerConfig, fetcher: HttpFetcher, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> IssuerKeys {
        // An IdP behind a private CA: only its CAs are trusted for its discovery and JWKS.
        let fetcher = fetcher.with_ca_file(cfg.ca_file.as_deref());
        let (discovery_tx, _) = watch::channel(None);
        // This issuer's bounded series exist from the start (0, not absent, on a dashboard).
        for r in ["ok", "error"] {
            metrics.jwks_fetches.with_label_values(&[cfg.name.as_str(), r]);
        }
        for r in ["ok", "error", "throttled"] {
            metrics.jwks_refetches.with_label_values(&[cfg.name.as_str(), r]);
        }
        IssuerKeys {
            revoked: arc_swap::ArcSwap::default(),
            discovery_url: Mutex::new(cfg.discovery_url.clone()),
            cfg,
            state: ArcSwapOption::empty(),
            refetch_gate: tokio::sync::Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            generations_issued: AtomicU64::new(0),
            fetches_started: AtomicU64::new(0),
            last_error: Mutex::new(None),
            fetcher,
            metrics,
            clock,
            discovery_tx,
        }
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The loaded state, usable or not.
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.state.load_full()
    }

    /// The loaded state if it is not older than the maximum staleness.
    pub fn usable(&self) -> Option<Arc<Loaded>> {
        self.state.load_full().filter(|l| self.is_fresh(l))
    }

    /// True when the key set is loaded and fresh enough to use.
    pub fn is_usable(&self) -> bool {
        self.state.load().as_ref().is_some_and(|l| self.is_fresh(l))
    }

    /// How long ago `loaded` was last confirmed by the IdP.
    pub fn age(&self, loaded: &Loaded) -> Duration {
        self.clock.monotonic().saturating_sub(loaded.confirmed_at)
    }

    /// True when `loaded` is not older than the maximum staleness.
    pub fn is_fresh(&self, loaded: &Loaded) -> bool {
        self.age(loaded) <= self.cfg.max_stale
    }

    /// The current key generation (0 before the first load).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The last refresh error, if the last refresh failed.
    pub fn last_error(&self) -> Option<String> {
        jwtgate_base::sync::lock(&self.last_error).clone()
    }

    /// The discovery URL in use (after the Asgardeo `/token/` fallback, if it was needed).
    pub fn discovery_url(&self) -> Url {
        jwtgate_base::sync::lock(&self.discovery_url).clone()
    }

    /// Receives every changed discovery document (the key-manager sync listens).
    pub fn subscribe_discovery(&self) -> watch::Receiver<Option<Arc<Discovery>>> {
        self.discovery_tx.subscribe()
    }

    fn set_error(&self, e: Option<String>) {
        *jwtgate_base::sync::lock(&self.last_error) = e;
    }

    /// Fetches the discovery document, falling back from Asgardeo's legacy path to the
    /// `/token/` form on a 404 (and remembering the form that worked).
    pub async fn fetch_discovery(&self) -> Result<Discovery, RefreshError> {
        let url = self.discovery_url();
        let timeout = self.cfg.fetch_timeout;
        let limit = self.cfg.max_response_bytes;
        let clock = &*self.clock;
        let fetched = match (self.fetcher.get(&url, timeout, limit, clock).await, discovery::token_form(&url)) {
            (Ok(f), _) => (url, f),
            (Err(FetchError::Status { status: 404, .. }), Some(alt)) => {
                let f = self.fetcher.get(&alt, timeout, limit, clock).await?;
                tracing::info!(
                    issuer = %self.cfg.name,
                    tried = %url,
                    using = %alt,
                    "discovery: the legacy Asgardeo path answered 404; the /oauth2/token/ form worked and is used from now on"
                );
                *jwtgate_base::sync::lock(&self.discovery_url) = alt.clone();
                (alt, f)
            }
            (Err(e), _) => return Err(e.into()),
        };
        let doc = Discovery::parse(&fetched.0, &fetched.1.body)?;
        Ok(doc)
    }

    /// Re-reads discovery, then the JWKS, and swaps the set in. Returns how long until the
    /// next refresh should run.
    pub async fn refresh(&self) -> Result<Duration, RefreshError> {
        let _one_fetch = self.fetch_lock.lock().await;
        let result = async {
            let doc = self.fetch_discovery().await?;
            self.refresh_jwks(Arc::new(doc)).await
        }
        .await;
        self.record(&result);
        result
    }

    /// Refetches only the JWKS named by the current discovery document (or does a full refresh
    /// when nothing is loaded yet). `None` when, once this fetch's turn came, a set newer than
    /// generation `seen` was already in place: nothing to fetch.
    async fn refetch_jwks(&self, seen: u64) -> Option<Result<Duration, RefreshError>> {
        let guard = self.fetch_lock.lock().await;
        if self.generation() != seen {
            return None;
        }
        match self.loaded() {
            Some(l) => {
                let r = self.refresh_jwks(l.discovery.clone()).await;
                self.record(&r);
                Some(r)
            }
            None => {
                drop(guard);
                Some(self.refresh().await)
            }
        }
    }

    fn record(&self, result: &Result<Duration, RefreshError>) {
        let issuer = self.cfg.name.as_str();
        match result {
            Ok(_) => {
                self.metrics.jwks_fetches.with_label_values(&[issuer, "ok"]).inc();
                self.metrics.jwks_last_success.with_label_values(&[issuer]).set(self.clock.now_unix() as f64);
                self.set_error(None);
            }
            Err(e) => {
                self.metrics.jwks_fetches.with_label_values(&[issuer, "error"]).inc();
                self.set_error(Some(e.to_string()));
            }
        }
    }

    async fn refresh_jwks(&self, doc: Arc<Discovery>) -> Result<Duration, RefreshError> {
        let fetch_seq = self.fetches_started.fetch_add(1, Ordering::AcqRel) + 1;
        let fetched =
            self.fetcher.get(&doc.jwks_uri, self.cfg.fetch_timeout, self.cfg.max_response_bytes, &*self.clock).await?;
        let hash = hash_bytes(&fetched.body);
        let prev = self.state.load_full();
        let (keys, generation) = match &prev {
            Some(p) if p.jwks_hash == hash => (p.keys.clone(), p.generation),
            _ => {
                let parsed = KeySet::parse(&fetched.body, &self.cfg.algorithms)
                    .map_err(|source| RefreshError::Jwks { url: doc.jwks_uri.to_string(), source })?;
                for why in &parsed.skipped {
                    tracing::warn!(issuer = %self.cfg.name, jwks = %doc.jwks_uri, "skipped a JWK: {why}");
                }
                let kids: Vec<&str> = parsed.set.keys().iter().filter_map(|k| k.kid.as_deref()).collect();
                tracing::info!(issuer = %self.cfg.name, keys = parsed.set.len(), ?kids, "key set loaded");
                self.metrics.jwks_keys.with_label_values(&[self.cfg.name.as_str()]).set(parsed.set.len() as i64);
                (Arc::new(parsed.set), self.generations_issued.fetch_add(1, Ordering::AcqRel) + 1)
            }
        };
        let discovery_changed = prev.as_ref().is_none_or(|p| *p.discovery != *doc);
        if discovery_changed && !doc.issuer_matches_url() {
            tracing::info!(
                issuer = %self.cfg.name,
                iss = %doc.issuer,
                url = %doc.url,
                "the discovery document's issuer is not its URL's prefix (normal for Asgardeo); tokens must carry this iss exactly"
            );
        }
        let next = self.cfg.refresh.min(fetched.max_age.unwrap_or(self.cfg.refresh).max(self.cfg.refresh_floor));
        // Fetches are serialised by `fetch_lock`, so this set is the newest; the check keeps the
        // rule explicit: a set is published only if its fetch started after the one in place.
        let newer = Arc::new(Loaded {
            discovery: doc.clone(),
            keys,
            confirmed_at: self.clock.monotonic(),
            generation,
            jwks_hash: hash,
            fetch_seq,
        });
        let mut published = false;
        self.state.rcu(|current| match current {
            Some(c) if c.fetch_seq > fetch_seq => {
                published = false;
                current.clone()
            }
            _ => {
                published = true;
                Some(newer.clone())
            }
        });
        if !published {
            tracing::warn!(issuer = %self.cfg.name, "a key set fetched before the one in place was not published");
            return Ok(next);
        }
        self.generation.store(generation, Ordering::Release);
        if discovery_changed {
            self.discovery_tx.send_replace(Some(doc));
        }
        Ok(next)
    }

    /// The refetch an unknown `kid` may trigger: single flight (concurrent callers wait for the
    /// one fetch in progress) and at most one per `jwks_min_refetch_seconds`. `seen` is the
    /// generation the caller looked at; if it has moved on, the caller just looks again.
    pub async fn refetch_for_unknown_kid(&self, seen: u64) {
        let mut last = self.refetch_gate.lock().await;
        if self.generation() != seen {
            return;
        }
        let issuer = self.cfg.name.as_str();
        let now = self.clock.monotonic();
        if let Some(t) = *last {
            if now.saturating_sub(t) < self.cfg.min_refetch {
                self.metrics.jwks_refetches.with_label_values(&[issuer, "throttled"]).inc();
                return;
            }
        }
        *last = Some(now);
        match self.refetch_jwks(seen).await {
            // A fetch in progress (the background refresh) brought a newer set meanwhile.
            None => {}
            Some(Ok(_)) => self.metrics.jwks_refetches.with_label_values(&[issuer, "ok"]).inc(),
            Some(Err(e)) => {
                self.metrics.jwks_refetches.with_label_values(&[issuer, "error"]).inc();
                tracing::warn!(issuer, "JWKS refetch for an unknown kid failed: {e}");
            }
        }
    }

    /// Runs forever: refresh, then sleep until the next refresh is due; on failure retry with
    /// exponential backoff (1 s doubling, capped at 32 s or the refresh interval) plus jitter,
    /// keeping the last good set.
    pub async fn run_refresher(self: Arc<Self>) {
        let mut failures: u32 = 0;
        let mut backoff =
            jwtgate_base::clock::Backoff::new(Duration::from_secs(1), self.cfg.refresh.min(Duration::from_secs(32)));
        loop {
            let delay = match self.refresh().await {
                Ok(next) => {
                    if failures > 0 {
                        tracing::info!(issuer = %self.cfg.name, "key refresh recovered after {failures} failure(s)");
                    }
                    failures = 0;
                    backoff.reset();
                    next
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff.next_delay();
                    let state = match self.loaded() {
                        Some(l) if self.is_fresh(&l) => "serving the last good key set",
                        Some(_) => "the last key set is too old to use",
                        None => "no key set loaded yet",
                    };
                    tracing::warn!(issuer = %self.cfg.name, retry_in_ms = delay.as_millis() as u64, "key refresh failed ({state}): {e}");
                    delay
                }
            };
            self.clock.sleep(delay).await;
        }
    }
}

/// The key stores of every issuer, in config order.
pub struct KeyRegistry {
    /// One per `[[issuers]]` entry.
    pub issuers: Vec<Arc<IssuerKeys>>,
}

/// An issuer as verdicts, refusals and the judge name it: its place among `[[issuers]]`, in
/// file order — a number, not a name, so the hot path carries and compares no strings. It means
/// something only in the generation that made it; a reload keeps the verified-token cache only
/// when no issuer moved (`Authenticator::keep_token_cache_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IssuerId(u32);

impl IssuerId {
    /// The issuer at `position` in `[[issuers]]` (validated configurations have far fewer than
    /// 2³² issuers).
    pub fn at(position: usize) -> IssuerId {
        IssuerId(u32::try_from(position).unwrap_or(u32::MAX))
    }

    /// Its place in `[[issuers]]`.
    pub fn position(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for IssuerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Index<IssuerId> for KeyRegistry {
    type Output = Arc<IssuerKeys>;

    /// The issuer's store; an id is only ever made from this registry's configuration, so it
    /// is in range (a stray id panics like any out-of-range index).
    fn index(&self, id: IssuerId) -> &Arc<IssuerKeys> {
        &self.issuers[id.position()]
    }
}

impl KeyRegistry {
    /// The issuer's store, if `id` names one.
    pub fn get(&self, id: IssuerId) -> Option<&Arc<IssuerKeys>> {
        self.issuers.get(id.position())
    }

    /// Its name (`""` for an id naming none).
    pub fn name(&self, id: IssuerId) -> &str {
        self.get(id).map_or("", |k| k.name())
    }

    /// Stores for the configured issuers, nothing loaded.
    pub fn new(
        cfgs: &[IssuerConfig],
        fetcher: HttpFetcher,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> KeyRegistry {
        KeyRegistry {
            issuers: cfgs
                .iter()
                .map(|c| Arc::new(IssuerKeys::new(c.clone(), fetcher.clone(), metrics.clone(), clock.clone())))
                .collect(),
        }
    }

    /// The issuer whose discovered `issuer` equals `iss` byte for byte, with its loaded state
    /// (usable or stale).
    pub fn by_iss(&self, iss: &str) -> Option<(IssuerId, Arc<Loaded>)> {
        self.issuers
            .iter()
            .enumerate()
            .find_map(|(i, k)| k.loaded().filter(|l| l.discovery.issuer == iss).map(|l| (IssuerId::at(i), l)))
    }

    /// True when every issuer has a usable key set.
    pub fn all_usable(&self) -> bool {
        self.issuers.iter().all(|k| k.is_usable())
    }

    /// One refresh of every issuer, concurrently; then a check that no two issuers discovered
    /// the same `issuer`. Returns the per-issuer results and, separately, a duplicate found.
    pub async fn load_all_once(&self) -> (Vec<Result<Duration, RefreshError>>, Option<String>) {
        let futs = self.issuers.iter().map(|k| k.refresh());
        let results = futures_util::future::join_all(futs).await;
        (results, self.duplicate_issuer())
    }

    /// A description of two issuers that discovered the same `issuer` value, if any.
    pub fn duplicate_issuer(&self) -> Option<String> {
        let loaded: Vec<(usize, String)> = self
            .issuers
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.loaded().map(|l| (i, l.discovery.issuer.clone())))
            .collect();
        for (a, (i, iss)) in loaded.iter().enumerate() {
            if let Some((j, _)) = loaded[a + 1..].iter().find(|(_, other)| other == iss) {
                return Some(format!("issuers[{i}] and issuers[{j}] both discovered the issuer {iss:?}"));
            }
        }
        None
    }
}
