//! Assembles a running gateway from a validated configuration: key stores and their
//! refreshers, the authenticator, the route table, the proxy and admin listeners. `serve`,
//! `dev` and the integration tests all start jwtgate through [`start`], so they run the same
//! code. Shutdown stops accepting, drains in-flight requests within the configured bound and
//! stops the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminState, ADMIN_DRAIN};
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::decision::Judge;
use crate::decision_listener::DecisionService;
use crate::fetch::HttpFetcher;
use crate::keys::KeyRegistry;
use crate::km_sync::status::{SyncState, SyncStatus};
use crate::metrics::Metrics;
use crate::proxy::server::{serve, ServerLimits};
use crate::proxy::Gateway;

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
    /// The configuration is unusable beyond what parsing could tell.
    #[error("{0}")]
    Config(String),
}

/// A running gateway.
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// Where the decision listener listens, when `[decision]` is configured.
    pub decision_addr: Option<SocketAddr>,
    /// The key stores (tests look at them).
    pub keys: Arc<KeyRegistry>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Key-manager sync status.
    pub km_status: Arc<SyncStatus>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains in-flight requests (bounded), stops background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        for b in self.background {
            b.abort();
        }
    }
}

/// Starts the gateway; the first key load runs in the background (readiness waits for it).
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let fetcher = HttpFetcher::new().map_err(|e| StartError::Client(e.to_string()))?;
    let keys = Arc::new(KeyRegistry::new(&config.issuers, fetcher, metrics.clone()));
    for i in &config.issuers {
        if i.audiences.is_empty() {
            tracing::warn!(issuer = %i.name, "audiences = []: tokens are accepted whatever their aud");
        }
        if !i.require_access_token_typ {
            tracing::warn!(
                issuer = %i.name,
                "access_token_typ = \"any\": tokens without typ at+jwt are accepted (ID tokens, with a nonce, are still refused)"
            );
        }
    }
    let auth = Arc::new(
        Authenticator::new(
            keys.clone(),
            clock,
            config.server.token_cache_entries,
            config.server.max_token_bytes(),
            metrics.clone(),
        )
        .with_claim_paths(config.claim_paths.clone()),
    );
    if config.routes.is_empty() {
        tracing::warn!("no [[routes]] configured: every request gets 404");
    }
    let decision_judge =
        config.decision.as_ref().map(|_| Judge::new(&config.routes, auth.clone(), &metrics, "decision"));
    let judge = Judge::new(&config.routes, auth.clone(), &metrics, "proxy");
    let gateway = Arc::new(Gateway::new(judge, config.upstream.clone(), &config.server, metrics.clone()));
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
    };
    let proxy_listener = bind("server.listen", config.server.listen).await?;
    let admin_listener = bind("server.admin_listen", config.server.admin_listen).await?;
    let proxy_addr = proxy_listener.local_addr().map_err(|source| StartError::Bind {
        what: "server.listen",
        addr: config.server.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
        what: "server.admin_listen",
        addr: config.server.admin_listen,
        source,
    })?;

    let km_status = Arc::new(SyncStatus::new(SyncState::Disabled));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let limits = ServerLimits {
        max_header_bytes: config.server.max_header_bytes(),
        header_read_timeout: Duration::from_secs(config.server.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(config.server.idle_timeout_seconds),
        max_connections: config.server.max_connections,
        drain: Duration::from_secs(config.server.drain_timeout_seconds),
    };
    let gw = gateway.clone();
    let proxy = tokio::spawn(serve(
        proxy_listener,
        move |req, peer| Gateway::handle(gw.clone(), req, peer),
        shutdown_rx.clone(),
        limits,
        Some(metrics.connections()),
    ));
    let admin_state = Arc::new(AdminState { keys: keys.clone(), metrics: metrics.clone(), km_sync: km_status.clone() });
    let admin = tokio::spawn(serve(
        admin_listener,
        move |req, _peer| {
            let st = admin_state.clone();
            async move { st.handle(&req) }
        },
        shutdown_rx,
        ServerLimits { drain: ADMIN_DRAIN, max_connections: 1024, ..limits },
        None,
    ));
    let mut servers = vec![proxy, admin];
    let mut decision_addr = None;
    if let (Some(d), Some(judge)) = (&config.decision, decision_judge) {
        let listener = bind("decision.listen", d.listen).await?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            what: "decision.listen",
            addr: d.listen,
            source,
        })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the decision listener trusts X-Original-* / X-Forwarded-* headers: make sure only the front proxy can reach it");
        }
        let service = Arc::new(DecisionService::new(judge, &config.server));
        servers.push(tokio::spawn(serve(
            listener,
            move |req, peer| DecisionService::handle(service.clone(), req, peer),
            shutdown.subscribe(),
            limits,
            None,
        )));
        decision_addr = Some(addr);
    }
    let mut background = keys.spawn_refreshers();
    let km = crate::km_sync::spawn(&config, &keys.issuers, metrics.clone(), km_status.clone(), shutdown.subscribe())
        .map_err(StartError::Config)?;
    background.extend(km);
    tracing::info!(%proxy_addr, %admin_addr, upstream = %config.upstream.url, issuers = config.issuers.len(), routes = config.routes.len(), "jwtgate listening");
    Ok(Running { proxy_addr, admin_addr, decision_addr, keys, metrics, km_status, shutdown, servers, background })
}
