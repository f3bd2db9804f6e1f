//! Every metric jwtgate exports, registered once in a registry of its own (so several gateways
//! can live in one test process). Labels are low-cardinality by construction: route names,
//! issuer names, outcome and reason labels from fixed lists — never a token, subject or raw path.
//! The hot path uses handles resolved at start-up (see `routes`), not label lookups.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The metric families.
pub struct Metrics {
    registry: Registry,
    /// `jwtgate_requests_total{listener,route,outcome}`.
    pub requests: IntCounterVec,
    /// `jwtgate_request_duration_seconds{listener,route}`: time to the response headers.
    pub duration: HistogramVec,
    /// `jwtgate_upstream_duration_seconds{route}`: from sending a request upstream to its
    /// response headers, so the upstream's share of a slow request is told from jwtgate's.
    pub upstream_duration: HistogramVec,
    /// `jwtgate_token_rejections_total{issuer,reason}`.
    pub rejections: IntCounterVec,
    /// `jwtgate_token_cache_total{result}`: verified-token cache hits and misses.
    pub token_cache: IntCounterVec,
    /// `jwtgate_jwks_fetches_total{issuer,result}`: discovery + JWKS refreshes.
    pub jwks_fetches: IntCounterVec,
    /// `jwtgate_jwks_refetches_total{issuer,result}`: unknown-`kid` refetches (`ok|error|throttled`).
    pub jwks_refetches: IntCounterVec,
    /// `jwtgate_jwks_keys{issuer}`: usable keys in the current set.
    pub jwks_keys: IntGaugeVec,
    /// `jwtgate_jwks_last_success_timestamp_seconds{issuer}`.
    pub jwks_last_success: GaugeVec,
    /// `jwtgate_upstream_errors_total{kind}`: `connect|timeout|other|saturated|unexpected_101`.
    pub upstream_errors: IntCounterVec,
    /// `jwtgate_upstream_responses_total{class}`: upstream answers by status class (`1xx`…`5xx`),
    /// indexed by the status's first digit.
    pub upstream_responses: [IntCounter; 5],
    /// `jwtgate_deny_list_entries{issuer}`: identifiers in the deny list in force.
    pub deny_list_entries: IntGaugeVec,
    /// `jwtgate_deny_list_reloads_total{issuer,result}`: changed deny list files read (`ok`,
    /// `error`: refused, the list in force stays).
    pub deny_list_reloads: IntCounterVec,
    /// `jwtgate_introspection_requests_total{issuer,result}`: calls to an introspection endpoint
    /// (`active|inactive|unreachable|timeout|busy|bad_status|malformed|no_endpoint`).
    pub introspection_calls: IntCounterVec,
    /// `jwtgate_introspection_duration_seconds{issuer}`: one call, from its start to its answer.
    pub introspection_duration: HistogramVec,
    /// `jwtgate_introspection_cache_total{issuer,result}`: opaque-token cache hits and misses.
    pub introspection_cache: IntCounterVec,
    /// `jwtgate_shared_state_requests_total{op,result}`: commands to the shared store
    /// (`dpop|rate_limit`, `ok|error|timeout`).
    pub shared_state_requests: IntCounterVec,
    /// `jwtgate_shared_state_duration_seconds{op}`: one command, answered or not.
    pub shared_state_duration: HistogramVec,
    /// `jwtgate_shared_state_up`: 1 when the shared store answered the last command.
    pub shared_state_up: IntGauge,
    /// `jwtgate_rate_limit_local_fallbacks_total`: rate-limit checks made by the replica's own
    /// limiter because the shared store did not answer.
    pub rate_limit_fallbacks: IntCounter,
    /// `jwtgate_log_lines_dropped_total`: lines the log writer's full queue dropped, brought up
    /// to date at each scrape.
    pub log_lines_dropped: IntCounter,
    /// `jwtgate_tls_certificate_expiry_timestamp_seconds{listener}`: the served certificate's
    /// `notAfter`, set at start and on each reload.
    pub tls_expiry: GaugeVec,
    /// `jwtgate_jwks_seconds_until_stale{issuer}`: set at each scrape.
    pub jwks_until_stale: GaugeVec,
    /// Whether this process runs the key-manager sync: without it, the `jwtgate_km_sync_*`
    /// families are not exported (a sidecar whose sync runs in a CronJob would otherwise say
    /// "not in sync" and "57 years since the last success").
    km_sync_exported: std::sync::atomic::AtomicBool,
    /// Whether a shared store is configured: without one, `jwtgate_shared_state_up` is not
    /// exported (it would read "down" for every gateway that never had a store).
    shared_state_exported: std::sync::atomic::AtomicBool,
    /// `jwtgate_km_sync_runs_total{result}`: `ok|error|conflict`.
    pub km_sync_runs: IntCounterVec,
    /// `jwtgate_km_sync_writes_total{op}`: `create|update`.
    pub km_sync_writes: IntCounterVec,
    /// `jwtgate_km_sync_in_sync`: 1 when the last pass found nothing to change or applied it.
    pub km_sync_in_sync: IntGauge,
    /// `jwtgate_km_sync_last_success_timestamp_seconds`.
    pub km_sync_last_success: Gauge,
    /// `jwtgate_km_sync_conflicts_total`: another writer keeps changing a managed field.
    pub km_sync_conflicts: IntCounter,
    /// `jwtgate_open_connections`: client connections on the proxy listener.
    pub open_connections: IntGauge,
    /// `jwtgate_connections_closed_total{reason}`: `header_timeout|idle_timeout`.
    pub connections_closed: IntCounterVec,
    /// `jwtgate_connection_limit_waits_total`: accepts that waited for `max_connections`.
    pub connection_limit_waits: IntCounter,
    /// `jwtgate_accept_errors_total`: failed accepts on the proxy listener.
    pub accept_errors: IntCounter,
    /// `jwtgate_config_reloads_total{result}`: `ok|error`.
    pub config_reloads: IntCounterVec,
    /// `jwtgate_upgrades_total{result}`: allowed WebSocket upgrades, `tunnelled|declined`
    /// (the upstream did not switch protocols) or `failed` (the upstream was unreachable).
    pub upgrades: IntCounterVec,
    /// `jwtgate_open_tunnels`: WebSocket tunnels open now.
    pub open_tunnels: IntGauge,
    /// `jwtgate_tunnels_expired_total`: tunnels closed at `tunnel_max_lifetime_seconds`.
    pub tunnels_expired: IntCounter,
    /// `jwtgate_build_info{version}`: always 1, so dashboards can show what runs.
    pub build_info: IntGaugeVec,
}

/// Request outcomes, the `outcome` label of `jwtgate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Token valid, forwarded.
    Allowed,
    /// Anonymous route, forwarded.
    Anonymous,
    /// 401 without a bearer token.
    MissingToken,
    /// 400 malformed request.
    InvalidRequest,
    /// 401 bad token.
    InvalidToken,
    /// 403 scope missing.
    InsufficientScope,
    /// 503 no usable key set.
    Unavailable,
    /// 404 no route.
    NoRoute,
    /// 405: `CONNECT` where no route allows it.
    MethodNotAllowed,
    /// 408: the client stopped sending its request body.
    RequestTimeout,
    /// 501: a transfer coding jwtgate does not forward.
    NotImplemented,
    /// 431 headers too large.
    HeadersTooLarge,
    /// 502 upstream unreachable.
    UpstreamError,
    /// 504 upstream too slow.
    UpstreamTimeout,
    /// 503: every upstream connection (`upstream.max_connections`) in use.
    UpstreamBusy,
    /// 403: a claim rule (`require_claims`) fails.
    InsufficientClaims,
    /// 401: the route's step-up (`acr_values`, `max_age_seconds`) is not met.
    InsufficientUserAuthentication,
    /// 429: over the route's rate limit.
    RateLimited,
    /// A CORS preflight answered by jwtgate.
    Preflight,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 19] = [
        Outcome::Allowed,
        Outcome::Anonymous,
        Outcome::MissingToken,
        Outcome::InvalidRequest,
        Outcome::InvalidToken,
        Outcome::InsufficientScope,
        Outcome::Unavailable,
        Outcome::NoRoute,
        Outcome::MethodNotAllowed,
        Outcome::RequestTimeout,
        Outcome::NotImplemented,
        Outcome::HeadersTooLarge,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
        Outcome::UpstreamBusy,
        Outcome::InsufficientClaims,
        Outcome::InsufficientUserAuthentication,
        Outcome::RateLimited,
        Outcome::Preflight,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Anonymous => "anonymous",
            Outcome::MissingToken => "missing_token",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::InvalidToken => "invalid_token",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::Unavailable => "unavailable",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::RequestTimeout => "request_timeout",
            Outcome::NotImplemented => "not_implemented",
            Outcome::HeadersTooLarge => "headers_too_large",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamBusy => "upstream_busy",
            Outcome::InsufficientClaims => "insufficient_claims",
            Outcome::InsufficientUserAuthentication => "insufficient_user_authentication",
            Outcome::RateLimited => "rate_limited",
            Outcome::Preflight => "preflight",
        }
    }
}

/// Counter and histogram handles for one route, resolved once.
pub struct RouteMetrics {
    /// The route's name (`""`: no route matched).
    pub route: Box<str>,
    outcomes: Vec<IntCounter>,
    /// The route's latency histogram.
    pub duration: prometheus::Histogram,
    /// The route's upstream latency (proxy listener only: the decision listener sends nothing).
    pub upstream_duration: Option<prometheus::Histogram>,
}

impl RouteMetrics {
    /// Counts one request with `outcome`.
    pub fn count(&self, outcome: Outcome) {
        // `outcomes` holds one counter per `Outcome::ALL` entry, in order.
        if let Some(c) = self.outcomes.get(outcome as usize) {
            c.inc();
        }
    }

    /// Records the upstream's time to answer a request sent at `asked`.
    pub fn observe_upstream(&self, asked: std::time::Instant) {
        if let Some(h) = &self.upstream_duration {
            h.observe(asked.elapsed().as_secs_f64());
        }
    }
}

/// How many log lines the process's log writer has dropped so far (installed by the binary's
/// logging setup; absent in tests that embed the gateway).
static DROPPED_LOG_LINES: std::sync::OnceLock<Box<dyn Fn() -> u64 + Send + Sync>> = std::sync::OnceLock::new();

/// Installs the source of `jwtgate_log_lines_dropped_total` (the first call wins).
pub fn count_dropped_log_lines(source: Box<dyn Fn() -> u64 + Send + Sync>) {
    let _ = DROPPED_LOG_LINES.set(source);
}

/// Buckets for both latency histograms (100 µs to 30 s), the same so they can be subtracted.
const LATENCY_BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static strings registered once in a fresh registry: the only
    // possible errors (bad names, duplicates) are programming errors caught by every test run.
    r.expect("static metric definition")
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let requests = counter(
            "jwtgate_requests_total",
            "Requests by listener (proxy, decision), route and outcome.",
            &["listener", "route", "outcome"],
        );
        let rejections =
            counter("jwtgate_token_rejections_total", "Rejected tokens by issuer and reason.", &["issuer", "reason"]);
        let token_cache = counter("jwtgate_token_cache_total", "Verified-token cache lookups.", &["result"]);
        let jwks_fetches =
            counter("jwtgate_jwks_fetches_total", "Discovery and JWKS refreshes by result.", &["issuer", "result"]);
        let jwks_refetches = counter(
            "jwtgate_jwks_refetches_total",
            "JWKS refetches caused by an unknown kid, by result.",
            &["issuer", "result"],
        );
        let upstream_errors = counter("jwtgate_upstream_errors_total", "Failed upstream exchanges.", &["kind"]);
        let responses = counter("jwtgate_upstream_responses_total", "Upstream responses by status class.", &["class"]);
        let upstream_responses = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| responses.with_label_values(&[c]));
        let jwks_until_stale = must(GaugeVec::new(
            Opts::new(
                "jwtgate_jwks_seconds_until_stale",
                "Seconds until the issuer's key set passes jwks_max_stale_seconds without a refresh (negative: stale).",
            ),
            &["issuer"],
        ));
        must(registry.register(Box::new(jwks_until_stale.clone())));
        let tls_expiry = must(GaugeVec::new(
            Opts::new(
                "jwtgate_tls_certificate_expiry_timestamp_seconds",
                "When the certificate a TLS listener serves expires (its notAfter, Unix seconds).",
            ),
            &["listener"],
        ));
        must(registry.register(Box::new(tls_expiry.clone())));
        let deny_list_entries = must(IntGaugeVec::new(
            Opts::new("jwtgate_deny_list_entries", "Identifiers (jti, sub, client_id) in the issuer's deny list."),
            &["issuer"],
        ));
        must(registry.register(Box::new(deny_list_entries.clone())));
        let deny_list_reloads = counter(
            "jwtgate_deny_list_reloads_total",
            "Changed deny list files read, by result (error: refused, the list in force stays).",
            &["issuer", "result"],
        );
        let introspection_calls = counter(
            "jwtgate_introspection_requests_total",
            "Calls to an issuer's introspection endpoint (opaque tokens), by result.",
            &["issuer", "result"],
        );
        let introspection_cache = counter(
            "jwtgate_introspection_cache_total",
            "Opaque-token answer cache lookups by result (hit, miss).",
            &["issuer", "result"],
        );
        let introspection_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_introspection_duration_seconds",
                "Time of one call to an introspection endpoint, waiting for a free slot included.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["issuer"],
        ));
        must(registry.register(Box::new(introspection_duration.clone())));
        let shared_state_requests = counter(
            "jwtgate_shared_state_requests_total",
            "Commands to the shared store (Redis/Valkey) by operation and result.",
            &["op", "result"],
        );
        let shared_state_duration = must(HistogramVec::new(
            HistogramOpts::new("jwtgate_shared_state_duration_seconds", "Time of one command to the shared store.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        ));
        must(registry.register(Box::new(shared_state_duration.clone())));
        let shared_state_up =
            must(IntGauge::new("jwtgate_shared_state_up", "1 when the shared store answered the last command."));
        must(registry.register(Box::new(shared_state_up.clone())));
        let rate_limit_fallbacks = must(IntCounter::new(
            "jwtgate_rate_limit_local_fallbacks_total",
            "Rate-limit checks made by this replica alone because the shared store did not answer.",
        ));
        must(registry.register(Box::new(rate_limit_fallbacks.clone())));
        let log_lines_dropped = must(IntCounter::new(
            "jwtgate_log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full (stderr not keeping up).",
        ));
        must(registry.register(Box::new(log_lines_dropped.clone())));
        // CPU, resident memory, open descriptors, start time (process_* families, Linux).
        must(registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())));
        let km_sync_runs = counter("jwtgate_km_sync_runs_total", "Key-manager sync passes by result.", &["result"]);
        let km_sync_writes = counter("jwtgate_km_sync_writes_total", "Key-manager writes by operation.", &["op"]);
        let duration = must(HistogramVec::new(
            HistogramOpts::new("jwtgate_request_duration_seconds", "Time from request to response headers.")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["listener", "route"],
        ));
        must(registry.register(Box::new(duration.clone())));
        let upstream_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "jwtgate_upstream_duration_seconds",
                "Time from sending a request upstream to its response headers, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        ));
        must(registry.register(Box::new(upstream_duration.clone())));
        let jwks_keys = must(IntGaugeVec::new(Opts::new("jwtgate_jwks_keys", "Usable keys per issuer."), &["issuer"]));
        must(registry.register(Box::new(jwks_keys.clone())));
        let jwks_last_success = must(GaugeVec::new(
            Opts::new("jwtgate_jwks_last_success_timestamp_seconds", "Last successful key refresh."),
            &["issuer"],
        ));
        must(registry.register(Box::new(jwks_last_success.clone())));
        let km_sync_in_sync = must(IntGauge::new("jwtgate_km_sync_in_sync", "1 when APIM's registration matches."));
        must(registry.register(Box::new(km_sync_in_sync.clone())));
        let km_sync_last_success = must(Gauge::new(
            "jwtgate_km_sync_last_success_timestamp_seconds",
            "Last successful key-manager sync pass.",
        ));
        must(registry.register(Box::new(km_sync_last_success.clone())));
        let km_sync_conflicts =
            must(IntCounter::new("jwtgate_km_sync_conflicts_total", "Managed fields another writer keeps changing."));
        must(registry.register(Box::new(km_sync_conflicts.clone())));
        let open_connections =
            must(IntGauge::new("jwtgate_open_connections", "Open client connections on the proxy listener."));
        must(registry.register(Box::new(open_connections.clone())));
        let connections_closed = counter(
            "jwtgate_connections_closed_total",
            "Client connections jwtgate closed: no request head (or TLS handshake) in time, idle, or a failed TLS handshake.",
            &["reason"],
        );
        for r in ["header_timeout", "idle_timeout", "tls_handshake"] {
            connections_closed.with_label_values(&[r]);
        }
        let config_reloads = counter(
            "jwtgate_config_reloads_total",
            "Configuration reloads (SIGHUP, POST /reload): ok, or error (refused; the running one stays).",
            &["result"],
        );
        for r in ["ok", "error"] {
            config_reloads.with_label_values(&[r]);
        }
        let connection_limit_waits = must(IntCounter::new(
            "jwtgate_connection_limit_waits_total",
            "Times the proxy listener stopped accepting because max_connections were open.",
        ));
        must(registry.register(Box::new(connection_limit_waits.clone())));
        let accept_errors = must(IntCounter::new(
            "jwtgate_accept_errors_total",
            "Failed accepts on the proxy listener (e.g. out of file descriptors); each backs off.",
        ));
        must(registry.register(Box::new(accept_errors.clone())));
        let upgrades = counter("jwtgate_upgrades_total", "Allowed WebSocket upgrades by result.", &["result"]);
        for r in ["tunnelled", "declined", "failed"] {
            upgrades.with_label_values(&[r]);
        }
        let open_tunnels = must(IntGauge::new("jwtgate_open_tunnels", "WebSocket tunnels open now."));
        must(registry.register(Box::new(open_tunnels.clone())));
        let tunnels_expired = must(IntCounter::new(
            "jwtgate_tunnels_expired_total",
            "WebSocket tunnels closed at their maximum lifetime.",
        ));
        must(registry.register(Box::new(tunnels_expired.clone())));
        let build_info =
            must(IntGaugeVec::new(Opts::new("jwtgate_build_info", "The running version (always 1)."), &["version"]));
        must(registry.register(Box::new(build_info.clone())));
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for r in ["ok", "error", "conflict"] {
            km_sync_runs.with_label_values(&[r]);
        }
        for op in ["create", "update"] {
            km_sync_writes.with_label_values(&[op]);
        }
        // Bounded label sets are created up front, so dashboards see 0 rather than no data.
        for k in ["connect", "timeout", "other", "saturated", "unexpected_101"] {
            upstream_errors.with_label_values(&[k]);
        }
        for r in ["hit", "miss"] {
            token_cache.with_label_values(&[r]);
        }
        Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            tls_expiry,
            log_lines_dropped,
            deny_list_entries,
            deny_list_reloads,
            introspection_calls,
            introspection_duration,
            introspection_cache,
            shared_state_requests,
            shared_state_duration,
            shared_state_up,
            rate_limit_fallbacks,
            rejections,
            token_cache,
            jwks_fetches,
            jwks_refetches,
            jwks_keys,
            jwks_last_success,
            upstream_errors,
            upstream_responses,
            jwks_until_stale,
            km_sync_exported: false.into(),
            shared_state_exported: false.into(),
            km_sync_runs,
            km_sync_writes,
            km_sync_in_sync,
            km_sync_last_success,
            km_sync_conflicts,
            open_connections,
            connections_closed,
            connection_limit_waits,
            accept_errors,
            config_reloads,
            upgrades,
            open_tunnels,
            tunnels_expired,
            build_info,
        }
    }

    /// The key-manager sync's metrics.
    pub fn km_sync(&self) -> jwtgate_km_sync::SyncMetrics {
        jwtgate_km_sync::SyncMetrics {
            runs: self.km_sync_runs.clone(),
            writes: self.km_sync_writes.clone(),
            in_sync: self.km_sync_in_sync.clone(),
            last_success: self.km_sync_last_success.clone(),
            conflicts: self.km_sync_conflicts.clone(),
        }
    }

    /// The proxy listener's connection metrics.
    pub fn connections(&self) -> jwtgate_edge::ConnMetrics {
        jwtgate_edge::ConnMetrics {
            open: self.open_connections.clone(),
            closed: self.connections_closed.clone(),
            limit_waits: self.connection_limit_waits.clone(),
            accept_errors: self.accept_errors.clone(),
        }
    }

    /// Handles for one route of one listener (every outcome pre-created so it shows as 0).
    pub fn route(&self, listener: &str, route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.into(),
            outcomes: Outcome::ALL
                .iter()
                .map(|o| self.requests.with_label_values(&[listener, route, o.label()]))
                .collect(),
            duration: self.duration.with_label_values(&[listener, route]),
            upstream_duration: (listener == "proxy" && !route.is_empty())
                .then(|| self.upstream_duration.with_label_values(&[route])),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(dropped) = DROPPED_LOG_LINES.get() {
            let total = dropped();
            self.log_lines_dropped.inc_by(total.saturating_sub(self.log_lines_dropped.get()));
        }
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        if !self.km_sync_exported.load(std::sync::atomic::Ordering::Relaxed) {
            families.retain(|f| !f.name().starts_with("jwtgate_km_sync_"));
        }
        if !self.shared_state_exported.load(std::sync::atomic::Ordering::Relaxed) {
            families.retain(|f| f.name() != "jwtgate_shared_state_up");
        }
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Metrics {
    /// Says whether this process runs the key-manager sync (its series are exported only then).
    pub fn export_km_sync(&self, running: bool) {
        self.km_sync_exported.store(running, std::sync::atomic::Ordering::Relaxed);
    }

    /// Says whether a shared store is configured (`jwtgate_shared_state_up` is exported only then).
    pub fn export_shared_state(&self, configured: bool) {
        self.shared_state_exported.store(configured, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts an upstream response by its status class.
    pub fn count_upstream_response(&self, status: http::StatusCode) {
        if let Some(c) = self.upstream_responses.get(usize::from(status.as_u16() / 100).wrapping_sub(1)) {
            c.inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
