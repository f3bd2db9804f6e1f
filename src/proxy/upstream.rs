//! The upstream connection pool: plain HTTP/1.1 keep-alive connections to the one configured
//! upstream, built on hyper's low-level `client::conn::http1`. It replaces hyper-util's
//! general-purpose pooled client, which on every request hashed a pool key, took its lock
//! twice and spawned a task to wait for the connection to become idle again — measurable on a
//! hop that costs a few tens of microseconds in total.
//!
//! A connection is lent for one request and comes back when its response body has been read
//! to the end (see [`UpstreamBody`]); a response abandoned half-way closes its connection, as
//! HTTP/1.1 requires. Idle connections are reused last-in-first-out, dropped once the upstream
//! closes them, and closed after `pool_idle_timeout_seconds` by a background reaper that counts
//! ticks, so the hot path reads no clock.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// No TCP connection could be made (refused, unresolvable, or past the connect timeout).
    Connect(String),
    /// The connection failed while sending the request or reading the response head.
    Exchange(hyper::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(m) => write!(f, "connect: {m}"),
            UpstreamError::Exchange(e) => write!(f, "{}", crate::fetch::error_chain(e)),
        }
    }
}

struct IdleConn {
    tx: SendRequest<Incoming>,
    /// The reaper tick at which it was returned.
    since: u64,
}

/// Keep-alive connections to the upstream, shared by every request.
pub struct UpstreamPool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<IdleConn>>,
    /// Advanced by the reaper; stamps returned connections instead of a clock read.
    tick: AtomicU64,
    /// Idle connections older than this many ticks are closed by the reaper.
    idle_ticks: u64,
}

/// How often the reaper looks at idle connections, as a fraction of the idle timeout.
const REAP_DIVISIONS: u32 = 4;
/// A pooled connection may turn out closed by the upstream; at most this many are tried
/// before a fresh connection is made.
const MAX_STALE_TRIES: usize = 4;

impl UpstreamPool {
    /// A pool for `host:port`; call [`UpstreamPool::reap_idle`] in a task to enforce the idle timeout.
    pub fn new(host: String, port: u16, connect_timeout: Duration, max_idle: usize) -> Arc<UpstreamPool> {
        Arc::new(UpstreamPool {
            host,
            port,
            connect_timeout,
            max_idle,
            idle: Mutex::new(Vec::with_capacity(max_idle.min(1024))),
            tick: AtomicU64::new(0),
            idle_ticks: u64::from(REAP_DIVISIONS),
        })
    }

    /// Closes connections idle for longer than `idle_timeout`; returns when the pool is dropped.
    pub async fn reap_idle(pool: Weak<UpstreamPool>, idle_timeout: Duration) {
        let period = (idle_timeout / REAP_DIVISIONS).max(Duration::from_millis(100));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let now = pool.tick.fetch_add(1, Ordering::Relaxed) + 1;
            let mut idle = pool.lock_idle();
            let before = idle.len();
            idle.retain(|c| !c.tx.is_closed() && now.saturating_sub(c.since) <= pool.idle_ticks);
            if idle.len() != before {
                tracing::debug!(closed = before - idle.len(), kept = idle.len(), "idle upstream connections closed");
            }
        }
    }

    /// How many connections are idle in the pool (for tests and `/status`).
    pub fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        // The critical sections below cannot panic, so a poisoned lock still holds a valid list.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response head; the body
    /// streams from the connection and hands it back to the pool when it ends.
    pub async fn send(self: &Arc<Self>, mut req: Request<Incoming>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut stale = 0;
        loop {
            let pooled = if stale < MAX_STALE_TRIES { self.checkout() } else { None };
            let reused = pooled.is_some();
            let mut tx = match pooled {
                Some(tx) => tx,
                // Boxed: connecting is rare and its future large; the common path stays small.
                None => Box::pin(self.connect()).await?,
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease { tx, pool: Arc::clone(self) };
                    return Ok(resp.map(|inner| UpstreamBody { inner, lease: Some(lease) }));
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request was written (the upstream
                    // dropped an idle connection just now): nothing was sent, so try again.
                    Some(r) if reused => {
                        stale += 1;
                        req = r;
                    }
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// The most recently returned connection that is ready; closed ones are dropped.
    fn checkout(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.lock_idle();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].tx.is_closed() {
                idle.swap_remove(i);
            } else if idle[i].tx.is_ready() {
                // swap_remove moves the last entry here; it has been looked at already.
                return Some(idle.swap_remove(i).tx);
            }
            // Otherwise it is finishing its previous exchange; it will be ready shortly.
        }
        None
    }

    fn put_back(&self, tx: SendRequest<Incoming>) {
        if tx.is_closed() {
            return;
        }
        let since = self.tick.load(Ordering::Relaxed);
        let mut idle = self.lock_idle();
        if idle.len() < self.max_idle {
            idle.push(IdleConn { tx, since });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, UpstreamError> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect((self.host.as_str(), self.port))).await
            {
                Err(_) => return Err(UpstreamError::Connect(format!("timed out after {:?}", self.connect_timeout))),
                Ok(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(crate::fetch::error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended with an error: {}", crate::fetch::error_chain(&e));
            }
        });
        Ok(tx)
    }
}

struct Lease {
    tx: SendRequest<Incoming>,
    pool: Arc<UpstreamPool>,
}

/// An upstream response body; its connection goes back to the pool once it has been read to
/// the end, and is closed if it is dropped before that.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.put_back(lease.tx);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so, without a final `None`.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
