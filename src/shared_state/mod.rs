//! What many replicas must agree on, kept in a Redis or Valkey the user already runs: the DPoP
//! proofs seen (RFC 9449 §11.1: a proof replayed to another replica must fail there too) and the
//! rate-limit buckets (N replicas must not grant N times the rate). Absent `[shared_state]`,
//! nothing here exists and every replica keeps its own, as before.
//!
//! One command per decision, each on a multiplexed connection that pipelines every concurrent
//! command, each bounded by `timeout_ms` on the gateway's clock. The connections are made lazily
//! and remade by the connection manager when they fail, so a store that was down at start, or
//! went away, is used again as soon as it answers — no restart. What a failure means is the
//! caller's choice: DPoP fails closed (503), rate limits fall back to the local limiter.
//!
//! Keys hold no token, subject or `jti`: a proof's key is a SHA-256 of its `jkt` and `jti` (the
//! values are random per proof, so a digest hides them as well as a MAC would, and every replica
//! computes the same one without sharing a key), a bucket's is a SHA-256 of the caller's key.

/// `[shared_state]`'s settings live with the rest of the file model (`config::shared_state`).
pub use crate::config::shared_state as settings;

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::json;

use crate::metrics::Metrics;
use jwtgate_base::clock::Clock;
use jwtgate_base::sync::lock;
use settings::SharedStateConfig;

/// GCRA in one server-side step, on the server's clock (so every replica measures time alike):
/// the bucket's theoretical arrival time, in microseconds, under KEYS[1]; ARGV[1] the emission
/// interval, ARGV[2] the tolerance (burst - 1 intervals). Returns {1, 0} when allowed, {0, wait}
/// (microseconds until one more would be) when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000) + 1)
return {1, 0}
";

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why the store could not answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within `timeout_ms`.
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The command failed (connection refused or lost, authentication, a Redis error).
    #[error("{0}")]
    Failed(String),
}

/// The connections to the store and what is known of its health.
pub struct SharedStore {
    cfg: SharedStateConfig,
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    gcra: redis::Script,
    clock: Arc<dyn Clock>,
    /// `UNKNOWN` until the first command, then `UP` or `DOWN` (a change is logged once).
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    last_latency_us: AtomicU64,
    metrics: Arc<Metrics>,
}

fn digest_hex(parts: &[&[u8]]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let d = ctx.finish();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for b in &d.as_ref()[..16] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

impl SharedStore {
    /// Connections to `cfg`'s store, made lazily (the store may be down now: it is used as soon
    /// as it answers), authenticating with `password` (read by the caller from `password_env` /
    /// `_file`; a password in the URL is used otherwise). Fails only on a CA file that cannot
    /// be read.
    pub fn new(
        cfg: &SharedStateConfig,
        password: Option<String>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<SharedStore, String> {
        use redis::IntoConnectionInfo;
        jwtgate_tls::install_crypto_provider();
        let mut info = cfg.url.as_str().into_connection_info().map_err(|e| format!("shared_state.redis_url: {e}"))?;
        if let Some(password) = password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = match (&cfg.ca_file, cfg.tls) {
            (Some(ca), true) => {
                let pem = std::fs::read(ca).map_err(|e| format!("shared_state.ca_file {}: {e}", ca.display()))?;
                redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| format!("shared_state: {e}"))?;
        // A reconnection is tried at the next command after a failure (no retries inside one:
        // the command's own time limit is short); connecting may take longer than one command.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(Some(cfg.timeout.max(Duration::from_millis(100))))
            .set_number_of_retries(0);
        let conns = (0..cfg.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("shared_state: {e}"))?;
        metrics.shared_state_up.set(0);
        for op in ["dpop", "rate_limit"] {
            for result in ["ok", "error", "timeout"] {
                metrics.shared_state_requests.with_label_values(&[op, result]);
            }
        }
        Ok(SharedStore {
            cfg: cfg.clone(),
            conns,
            next: AtomicUsize::new(0),
            gcra: redis::Script::new(GCRA),
            clock,
            state: AtomicU8::new(UNKNOWN),
            last_error: Mutex::default(),
            last_latency_us: AtomicU64::new(0),
            metrics,
        })
    }

    /// The configuration it was built from (a reload keeps the store when it is unchanged).
    pub fn config(&self) -> &SharedStateConfig {
        &self.cfg
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Runs one command within `timeout_ms`, counting and timing it, and logging when the store
    /// goes away or comes back (once each way, not per request).
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let started = self.clock.monotonic();
        let outcome = jwtgate_base::clock::timeout(&*self.clock, self.cfg.timeout, fut).await;
        let took = self.clock.monotonic().saturating_sub(started);
        self.metrics.shared_state_duration.with_label_values(&[op]).observe(took.as_secs_f64());
        let result = match outcome {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(StoreError::Failed(crate::fetch::error_chain(&e))),
            None => Err(StoreError::Timeout(self.cfg.timeout.as_millis())),
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(StoreError::Timeout(_)) => "timeout",
            Err(StoreError::Failed(_)) => "error",
        };
        self.metrics.shared_state_requests.with_label_values(&[op, label]).inc();
        match &result {
            Ok(_) => {
                self.last_latency_us.store(took.as_micros() as u64, Ordering::Relaxed);
                if self.state.swap(UP, Ordering::Relaxed) != UP {
                    self.metrics.shared_state_up.set(1);
                    tracing::info!(store = %self.cfg.shown_url(), "shared state reachable: DPoP replay and rate limits are shared");
                }
            }
            Err(e) => {
                *lock(&self.last_error) = Some(e.to_string());
                if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
                    self.metrics.shared_state_up.set(0);
                    tracing::error!(store = %self.cfg.shown_url(), problem = %e, "shared state unreachable: DPoP requests answer 503, rate limits are per replica until it is back");
                }
            }
        }
        result
    }

    /// Records a DPoP proof (`jkt`, `jti`) for `ttl` with one `SET NX PX`: `true` when it was
    /// not seen before, by any replica.
    pub async fn first_use(&self, jkt: &str, jti: &str, ttl: Duration) -> Result<bool, StoreError> {
        let key = format!("{}dpop:{}", self.cfg.key_prefix, digest_hex(&[jkt.as_bytes(), jti.as_bytes()]));
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut c = self.conn();
        let set = async move {
            redis::cmd("SET").arg(key).arg(1).arg("NX").arg("PX").arg(ms).query_async::<Option<String>>(&mut c).await
        };
        Ok(self.timed("dpop", set).await?.is_some())
    }

    /// Counts one request of `caller` on `route` against the shared bucket (GCRA, on the
    /// store's clock): `None` when allowed, else how long until one more would be.
    pub async fn rate_limit(
        &self,
        route: &str,
        caller: &[u8],
        interval: Duration,
        tolerance: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        let key = format!("{}rl:{}:{}", self.cfg.key_prefix, route, digest_hex(&[caller]));
        let mut c = self.conn();
        let mut invocation = self.gcra.key(key);
        invocation.arg(interval.as_micros().max(1) as u64).arg(tolerance.as_micros() as u64);
        let run = async move { invocation.invoke_async::<(i64, i64)>(&mut c).await };
        let (allowed, wait_us) = self.timed("rate_limit", run).await?;
        Ok((allowed == 0).then(|| Duration::from_micros(wait_us.max(0) as u64)))
    }

    /// Counts a rate-limit check made by a replica alone because the store did not answer.
    pub fn count_rate_limit_fallback(&self) {
        self.metrics.rate_limit_fallbacks.inc();
    }

    /// `/status`: where, whether it answered last time, how fast, what went wrong last.
    pub fn status_json(&self) -> serde_json::Value {
        json!({
            "url": self.cfg.shown_url(),
            "reachable": self.state.load(Ordering::Relaxed) == UP,
            "last_latency_seconds": self.last_latency_us.load(Ordering::Relaxed) as f64 / 1e6,
            "last_error": lock(&self.last_error).clone(),
            "key_prefix": self.cfg.key_prefix,
            "pool_size": self.cfg.pool_size,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_a_digest_of_length_prefixed_parts() {
        let a = super::digest_hex(&[b"jkt", b"jti"]);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, super::digest_hex(&[b"jk", b"tjti"]), "parts cannot run into each other");
        assert_eq!(a, super::digest_hex(&[b"jkt", b"jti"]));
    }
}
