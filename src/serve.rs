//! Assembles a running gateway from a validated configuration: the first [`Generation`] (key
//! stores, the authenticator, the route table, the handlers — see `reload`, which also swaps
//! the next ones in), the proxy, decision, admin and health listeners, and the background tasks
//! (key refreshers, the key-manager sync, the watchers of the configuration file and deny
//! lists). `serve`, `dev` and the integration tests all start jwtgate through [`start`], so they
//! run the same code. Shutdown stops accepting, drains in-flight requests within the configured
//! bound and stops the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminScope, AdminState, ADMIN_DRAIN};
use crate::config::Config;
use crate::decision_listener::DecisionService;
use crate::fetch::HttpFetcher;
use crate::keys::KeyRegistry;
use crate::km_sync::status::{SyncState, SyncStatus};
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::{
    build, start_km, warn_about, watch_config, watch_deny_lists, Background, ListenerCerts, NamedFiles, Parts,
};
pub use crate::reload::{check_files, ConfigRefused, Generation, Live, ReloadHistory, Reloaded, Reloader};
use jwtgate_base::clock::Clock;
use jwtgate_edge::{serve, ServerLimits, TlsSwitch};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The outbound HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The configuration cannot be put in force (a TLS file, a named file, a part that will not
    /// build): the same refusal a reload would give.
    #[error(transparent)]
    Config(#[from] ConfigRefused),
}

/// A running gateway.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// Where the decision listener listens, when `[decision]` is configured.
    pub decision_addr: Option<SocketAddr>,
    /// Where the health listener listens, when `server.health_listen` is set.
    pub health_addr: Option<SocketAddr>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Key-manager sync status.
    pub km_status: Arc<SyncStatus>,
    /// Re-reads the configuration file (SIGHUP, `POST /reload`).
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    /// Set as shutdown begins (`/readyz` then answers 503).
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl Running {
    /// The key stores requests use now.
    pub fn keys(&self) -> Arc<KeyRegistry> {
        self.reloader.live.load().keys.clone()
    }

    /// Re-reads the configuration file; see [`Reloader::reload`].
    pub async fn reload(&self) -> Result<Reloaded, ConfigRefused> {
        self.reloader.reload().await
    }

    /// Fails readiness, keeps serving for `shutdown_delay_seconds` (load balancers still send
    /// for a while after a pod is marked terminating), then stops accepting, drains in-flight
    /// requests (bounded) and stops background tasks.
    pub async fn shutdown(self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        let delay = self.reloader.current().config.server.shutdown_delay_seconds;
        if delay > 0 {
            tracing::info!(
                shutdown_delay_seconds = delay,
                "shutting down: /readyz answers 503; still serving until the delay is over"
            );
            self.reloader.parts.clock.sleep(Duration::from_secs(delay)).await;
        }
        tracing::info!("shutting down: draining in-flight requests");
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        self.reloader.stop_background().await;
    }
}

/// Starts the gateway; the first key load runs in the background (readiness waits for it).
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let fetcher = HttpFetcher::new().map_err(|e| StartError::Client(e.to_string()))?;
    let certs = ListenerCerts::read(&config)?;
    certs.publish_expiry(&metrics);
    let switch =
        |t: Option<jwtgate_tls::LoadedTls>| -> Option<TlsSwitch> { t.map(|t| Arc::new(ArcSwap::new(t.config))) };
    let (proxy_tls, decision_tls) = (switch(certs.proxy), switch(certs.decision));
    warn_about(&config);
    let parts = Parts { fetcher, metrics: metrics.clone(), clock: clock.clone() };
    let source = config.source.clone();
    let files = NamedFiles::read(&config)?;
    let generation = Arc::new(build(config, None, &parts, files).map_err(ConfigRefused::Build)?);
    generation.publish_deny_lists(&metrics);
    let config = generation.config.clone();
    let km_status = Arc::new(SyncStatus::new(SyncState::Disabled));
    // Everything that can fail is done before a listener binds or a task starts.
    let km =
        crate::km_sync::prepare(&config, &generation.keys.issuers, metrics.clone(), km_status.clone(), clock.clone())
            .map_err(ConfigRefused::Build)?;
    let live: Live = Arc::new(ArcSwap::new(generation.clone()));
    let proxy_gateway = Arc::new(ArcSwap::new(generation.gateway.clone()));

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
    };
    let local = |what: &'static str, l: &TcpListener, addr: SocketAddr| {
        l.local_addr().map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy_listener = bind("server.listen", config.server.listen).await?;
    let admin_listener = bind("server.admin_listen", config.server.admin_listen).await?;
    let proxy_addr = local("server.listen", &proxy_listener, config.server.listen)?;
    let admin_addr = local("server.admin_listen", &admin_listener, config.server.admin_listen)?;
    let health_listener = match config.server.health_listen {
        Some(h) => {
            let l = bind("server.health_listen", h).await?;
            let addr = local("server.health_listen", &l, h)?;
            Some((l, addr))
        }
        None => None,
    };
    let decision_listener = match &config.decision {
        Some(d) => {
            let l = bind("decision.listen", d.listen).await?;
            let addr = local("decision.listen", &l, d.listen)?;
            Some((l, addr))
        }
        None => None,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let reloader = Arc::new(Reloader {
        live: live.clone(),
        proxy: proxy_gateway.clone(),
        source,
        parts,
        background: tokio::sync::Mutex::new(Background { refreshers: Vec::new(), km: None }),
        km_status: km_status.clone(),
        shutdown: shutdown_rx.clone(),
        proxy_tls: proxy_tls.clone(),
        decision_tls: decision_tls.clone(),
        history: Default::default(),
        started: config.clone(),
    });
    let limits = ServerLimits {
        max_header_bytes: config.server.max_header_bytes(),
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_seconds),
        max_connections: config.server.max_connections,
        send_timeout: Duration::from_secs(config.server.send_timeout_seconds),
        max_concurrent_streams: config.server.max_concurrent_streams,
        drain: Duration::from_secs(config.server.drain_timeout_seconds),
    };
    let proxy = tokio::spawn(serve(
        proxy_listener,
        // One load per request, inside the request's future (see `Gateway::handle`).
        move |req, peer| Gateway::handle(proxy_gateway.clone(), req, peer),
        shutdown_rx.clone(),
        limits,
        Some(metrics.connections()),
        proxy_tls,
        clock.clone(),
    ));
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin_state = Arc::new(AdminState {
        reloader: reloader.clone(),
        metrics: metrics.clone(),
        km_sync: km_status.clone(),
        stopping: stopping.clone(),
    });
    let admin_limits = ServerLimits { drain: ADMIN_DRAIN, max_connections: 1024, ..limits };
    let state = admin_state.clone();
    let admin = tokio::spawn(serve(
        admin_listener,
        move |req, _peer| AdminState::handle(state.clone(), req, AdminScope::Full),
        shutdown_rx.clone(),
        admin_limits,
        None,
        None,
        // Operations plumbing: its connections live on real time whatever the gateway's clock.
        Arc::new(jwtgate_base::clock::SystemClock),
    ));
    let mut servers = vec![proxy, admin];
    servers.push(tokio::spawn(watch_config(reloader.clone(), shutdown_rx.clone(), clock.clone())));
    servers.push(tokio::spawn(watch_deny_lists(reloader.clone(), shutdown_rx.clone(), clock.clone(), metrics.clone())));
    let mut health_addr = None;
    if let Some((listener, addr)) = health_listener {
        servers.push(tokio::spawn(serve(
            listener,
            move |req, _peer| AdminState::handle(admin_state.clone(), req, AdminScope::Health),
            shutdown_rx.clone(),
            admin_limits,
            None,
            None,
            Arc::new(jwtgate_base::clock::SystemClock),
        )));
        health_addr = Some(addr);
    }
    let mut decision_addr = None;
    if let Some((listener, addr)) = decision_listener {
        let l = live.clone();
        servers.push(tokio::spawn(serve(
            listener,
            move |req, peer| {
                // The decision service exists in every generation while `[decision]` does
                // (adding or removing the section needs a restart).
                // `Either`, not an `async` wrapper: each wrapper copies the request future once more.
                match l.load().decision.clone() {
                    Some(s) => futures_util::future::Either::Left(DecisionService::handle(s, req, peer)),
                    None => {
                        futures_util::future::Either::Right(std::future::ready(crate::decision_listener::unavailable()))
                    }
                }
            },
            shutdown_rx.clone(),
            limits,
            None,
            decision_tls,
            clock.clone(),
        )));
        decision_addr = Some(addr);
    }
    {
        let mut b = reloader.background.lock().await;
        b.refreshers =
            generation.keys.issuers.iter().map(|k| (k.clone(), tokio::spawn(k.clone().run_refresher()))).collect();
        metrics.export_km_sync(km.is_some());
        b.km = km.map(|p| start_km(p, shutdown_rx.clone(), clock.clone()));
    }
    tracing::info!(%proxy_addr, %admin_addr, decision_addr = decision_addr.map(tracing::field::display), upstream = %config.upstream.url, issuers = config.issuers.len(), routes = config.routes.len(), tls = config.server_tls.is_some(), "jwtgate listening");
    Ok(Running {
        proxy_addr,
        admin_addr,
        decision_addr,
        health_addr,
        metrics,
        km_status,
        reloader,
        shutdown,
        servers,
        stopping,
    })
}
