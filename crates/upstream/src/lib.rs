//! The upstream connection pool: HTTP/1.1 keep-alive connections (over TCP or TLS) to the one
//! configured upstream, built on hyper's low-level `client::conn::http1` — or, with
//! `protocol = "h2c" | "h2"`, one shared HTTP/2 connection that every request multiplexes on
//! (re-made when the upstream closes it), for gRPC services. It replaces hyper-util's
//! general-purpose pooled client, which on every request hashed a pool key, took its lock
//! twice and spawned a task to wait for the connection to become idle again — measurable on a
//! hop that costs a few tens of microseconds in total.
//!
//! A connection is lent for one request and comes back when its response body has been read
//! to the end (see [`UpstreamBody`]); a response abandoned half-way closes its connection, as
//! HTTP/1.1 requires. Idle connections are reused last-in-first-out, dropped once the upstream
//! closes them, and closed after `pool_idle_timeout_seconds` by a background reaper that counts
//! ticks, so the hot path reads no clock.
//!
//! An upstream may close an idle keep-alive connection just as a request goes out on it (Node's
//! default keep-alive timeout is 5 s, shorter than most pools'). If the request was not yet
//! written, it goes out again on another connection. If it was, and it is idempotent with no
//! body (RFC 9110 §9.2.2) and the connection had sat idle across a reaper tick, it is sent once
//! more on a fresh connection — like nginx does — rather than answered with 502. Only such
//! requests pay for the copy of their head that this takes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub mod client_body;
mod settings;

use client_body::ClientBody;
use jwtgate_tls::MaybeTls;
pub use settings::{Upstream, UpstreamProtocol, UpstreamTls};
use tokio::net::TcpStream;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug)]
pub enum UpstreamError {
    /// No TCP connection could be made (refused, unresolvable, or past the connect timeout).
    Connect(String),
    /// The connection failed while sending the request or reading the response head.
    Exchange(hyper::Error),
    /// `upstream.max_connections` are open and none came free within the connect timeout.
    Saturated,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(m) => write!(f, "connect: {m}"),
            UpstreamError::Exchange(e) => write!(f, "{}", jwtgate_base::error_chain(e)),
            UpstreamError::Saturated => write!(f, "every upstream connection (upstream.max_connections) is in use"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Exchange(e) => Some(e),
            _ => None,
        }
    }
}

/// The body of a request to the upstream: the client's, streamed, or none for a replay.
pub type UpstreamRequestBody = Either<ClientBody, Empty<Bytes>>;

/// The body of an HTTP/2 upstream request: the same as HTTP/1.1's under its own name, so that
/// hyper's client dispatch code is compiled once per protocol. Shared by both, it stopped
/// being inlined on the HTTP/1.1 path (measured: about 600 instructions a request).
pub struct H2Body(UpstreamRequestBody);

impl Body for H2Body {
    type Data = Bytes;
    type Error = <UpstreamRequestBody as Body>::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

struct IdleConn {
    tx: SendRequest<UpstreamRequestBody>,
    /// The reaper tick at which it was returned.
    since: u64,
}

/// Keep-alive connections to the upstream, shared by every request.
pub struct UpstreamPool {
    /// The `[upstream]` it was built for (a reload keeps the pool while this is unchanged).
    config: Upstream,
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// TLS to the upstream: the connector and the name its certificate must carry.
    tls: Option<UpstreamTlsConnectors>,
    /// The shared HTTP/2 connection (`h2c`/`h2`); `None` until first used or after it closed.
    h2: Mutex<Option<http2::SendRequest<H2Body>>>,
    /// Held while an HTTP/2 connection is being made, so a burst makes one, not many.
    h2_connecting: tokio::sync::Mutex<()>,
    /// `:scheme`, and the `:authority` of HTTP/2 requests that came without a `Host`.
    h2_scheme: http::uri::Scheme,
    h2_authority: Option<http::uri::Authority>,
    max_idle: usize,
    idle: Mutex<Vec<IdleConn>>,
    /// Advanced by the reaper; stamps returned connections instead of a clock read.
    tick: AtomicU64,
    /// Idle connections older than this many ticks are closed by the reaper.
    idle_ticks: u64,
    /// One permit per upstream connection (`upstream.max_connections`), held by the
    /// connection's task, and by a tunnel while it is open.
    slots: Arc<tokio::sync::Semaphore>,
    /// Connect, TLS handshake and the wait for a free connection run on it.
    clock: Arc<dyn jwtgate_base::clock::Clock>,
}

/// An upstream connection's place under `upstream.max_connections`.
pub type UpstreamSlot = Arc<tokio::sync::OwnedSemaphorePermit>;

/// How often the reaper ticks: at most this, and at least four times per idle timeout.
const MAX_TICK: Duration = Duration::from_secs(1);
/// A pooled connection may turn out closed by the upstream; at most this many are tried
/// before a fresh connection is made.
const MAX_STALE_TRIES: usize = 4;

impl UpstreamPool {
    /// The reaper's period and the number of its ticks that make up `idle_timeout`.
    fn tick_period(idle_timeout: Duration) -> (Duration, u64) {
        let period = (idle_timeout / 4).clamp(Duration::from_millis(100), MAX_TICK);
        let ticks = idle_timeout.as_nanos().div_ceil(period.as_nanos()).max(1);
        (period, u64::try_from(ticks).unwrap_or(u64::MAX))
    }

    /// A pool for `upstream` whose idle connections are closed after its idle timeout by a
    /// reaper task spawned here (so it must be called inside the runtime); the task ends when
    /// the pool is dropped. Fails only when the upstream's `ca_file` cannot be used.
    pub fn start(upstream: &Upstream, clock: Arc<dyn jwtgate_base::clock::Clock>) -> Result<Arc<UpstreamPool>, String> {
        let tls = match &upstream.tls {
            None => None,
            Some(t) => {
                let alpn: &[&[u8]] = match upstream.protocol {
                    UpstreamProtocol::H2 => &[b"h2"],
                    _ => &[b"http/1.1"],
                };
                let config = |alpn: &[&[u8]]| {
                    jwtgate_tls::client_config(t.ca_file.as_deref(), alpn).map_err(|e| format!("upstream.ca_file: {e}"))
                };
                let main = tokio_rustls::TlsConnector::from(config(alpn)?);
                // A WebSocket upgrade is HTTP/1.1 whatever the requests speak.
                let http1 = match upstream.protocol {
                    UpstreamProtocol::H2 => tokio_rustls::TlsConnector::from(config(&[b"http/1.1"])?),
                    _ => main.clone(),
                };
                let name = jwtgate_tls::server_name(&t.server_name).map_err(|e| format!("upstream.url: {e}"))?;
                Some(UpstreamTlsConnectors { main, http1, name })
            }
        };
        let (period, idle_ticks) = Self::tick_period(upstream.pool_idle_timeout);
        let max_idle = upstream.pool_max_idle;
        let pool = Arc::new(UpstreamPool {
            host: upstream.host.clone(),
            port: upstream.port,
            connect_timeout: upstream.connect_timeout,
            tls,
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            h2_scheme: if upstream.tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP },
            h2_authority: upstream.authority.parse().ok(),
            config: upstream.clone(),
            max_idle,
            idle: Mutex::new(Vec::with_capacity(max_idle.min(1024))),
            tick: AtomicU64::new(0),
            idle_ticks,
            slots: Arc::new(tokio::sync::Semaphore::new(upstream.max_connections)),
            clock: clock.clone(),
        });
        pool.tick.store(Self::tick_at(&*clock, period), Ordering::Relaxed);
        tokio::spawn(Self::reap_idle(Arc::downgrade(&pool), period, clock));
        Ok(pool)
    }

    /// The reaper tick `clock` is at: its monotonic time in whole periods.
    fn tick_at(clock: &dyn jwtgate_base::clock::Clock, period: Duration) -> u64 {
        u64::try_from(clock.monotonic().as_nanos() / period.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// The reaper's current tick (it advances once per period of the gateway's clock).
    pub fn ticks(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }

    /// True when requests go over HTTP/2 (`h2c`, `h2`): send them with [`UpstreamPool::send_h2`].
    pub fn is_h2(&self) -> bool {
        self.config.protocol != UpstreamProtocol::Http1
    }

    /// The `[upstream]` this pool serves.
    pub fn config(&self) -> &Upstream {
        &self.config
    }

    /// Every `period`: sets the tick from the clock and closes connections idle for longer than
    /// the pool's `idle_ticks`; returns when the pool is dropped.
    async fn reap_idle(pool: Weak<UpstreamPool>, period: Duration, clock: Arc<dyn jwtgate_base::clock::Clock>) {
        loop {
            clock.sleep(period).await;
            let Some(pool) = pool.upgrade() else { return };
            let now = Self::tick_at(&*clock, period);
            pool.tick.store(now, Ordering::Relaxed);
            let mut idle = pool.lock_idle();
            let before = idle.len();
            idle.retain(|c| !c.tx.is_closed() && now.saturating_sub(c.since) <= pool.idle_ticks);
            if idle.len() != before {
                tracing::debug!(closed = before - idle.len(), kept = idle.len(), "idle upstream connections closed");
            }
        }
    }

    /// A place for a new upstream connection, waiting at most the connect timeout for one to
    /// come free.
    async fn slot(&self) -> Result<UpstreamSlot, UpstreamError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(Arc::new(p));
        }
        match jwtgate_base::clock::timeout(&*self.clock, self.connect_timeout, self.slots.clone().acquire_owned()).await
        {
            Some(Ok(p)) => Ok(Arc::new(p)),
            _ => Err(UpstreamError::Saturated),
        }
    }

    /// Upstream connections open now (pooled, in use, HTTP/2, tunnels).
    pub fn open_connections(&self) -> usize {
        self.config.max_connections - self.slots.available_permits()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        // The critical sections below cannot panic, so a poisoned lock still holds a valid list.
        jwtgate_base::sync::lock(&self.idle)
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response head; the body
    /// streams from the connection and hands it back to the pool when it ends.
    /// HTTP/1.1 only: an HTTP/2 pool ([`UpstreamPool::is_h2`]) sends with
    /// [`UpstreamPool::send_h2`] (kept apart so that the common path's future stays small).
    pub async fn send(self: &Arc<Self>, req: Request<ClientBody>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut req = req.map(Either::Left);
        let mut stale = 0;
        let mut replayed = false;
        loop {
            let pooled = if stale < MAX_STALE_TRIES && !replayed { self.checkout() } else { None };
            let reused = pooled.is_some();
            let (mut tx, replay) = match pooled {
                Some((tx, since)) => {
                    let idled = self.tick.load(Ordering::Relaxed) > since;
                    (tx, if idled { replayable_copy(&req) } else { None })
                }
                // Boxed: connecting is rare and its future large; the common path stays small.
                None => (Box::pin(self.connect()).await?, None),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease { tx, pool: Arc::clone(self) };
                    return Ok(resp.map(|inner| UpstreamBody { inner, lease: Some(lease) }));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // The connection closed before the request was written (the upstream
                    // dropped an idle connection just now): nothing was sent, so try again.
                    (Some(r), _) if reused => {
                        stale += 1;
                        req = r;
                    }
                    // Written, then the connection failed without an answer: an idempotent,
                    // bodiless request may be sent once more, on a fresh connection.
                    (None, Some(copy)) => {
                        tracing::debug!(
                            "pooled upstream connection failed ({}); sending the request again on a new one",
                            jwtgate_base::error_chain(e.error())
                        );
                        replayed = true;
                        req = copy;
                    }
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// Sends `req` on the shared HTTP/2 connection (made first if there is none). A request the
    /// connection refused before sending it (it had just closed) goes out on a new one.
    pub async fn send_h2(&self, req: Request<ClientBody>) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (mut parts, body) = req.into_parts();
        // HTTP/2 carries the target as `:scheme` and `:authority`: an absolute URI, no `Host`.
        // The client's `Host` becomes `:authority`, as it stays `Host` over HTTP/1.1.
        let host = parts.headers.remove(http::header::HOST);
        let mut uri = http::uri::Parts::from(std::mem::take(&mut parts.uri));
        uri.scheme = Some(self.h2_scheme.clone());
        uri.authority =
            host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok()).or_else(|| self.h2_authority.clone());
        parts.uri = http::Uri::from_parts(uri).map_err(|e| UpstreamError::Connect(format!("request target: {e}")))?;
        parts.version = http::Version::HTTP_2;
        let mut req = Request::from_parts(parts, H2Body(Either::Left(body)));
        for attempt in 0..2 {
            let mut tx = self.h2_sender().await?;
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp.map(UpstreamBody::unpooled)),
                Err(mut e) => match e.take_message() {
                    Some(r) if attempt == 0 => {
                        self.forget_h2(&tx);
                        req = r;
                    }
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        Err(UpstreamError::Connect("the HTTP/2 connection closed twice in a row".into()))
    }

    /// Drops the shared HTTP/2 connection if it is still `tx`'s.
    fn forget_h2(&self, tx: &http2::SendRequest<H2Body>) {
        let mut h2 = jwtgate_base::sync::lock(&self.h2);
        if h2.as_ref().is_some_and(|cur| cur.is_closed() || std::ptr::eq(cur, tx)) || tx.is_closed() {
            *h2 = None;
        }
    }

    /// The shared HTTP/2 connection's sender, connecting when there is none (or it closed).
    async fn h2_sender(&self) -> Result<http2::SendRequest<H2Body>, UpstreamError> {
        let current = || {
            let h2 = jwtgate_base::sync::lock(&self.h2);
            h2.as_ref().filter(|tx| !tx.is_closed()).cloned()
        };
        if let Some(tx) = current() {
            return Ok(tx);
        }
        let _connecting = self.h2_connecting.lock().await;
        if let Some(tx) = current() {
            return Ok(tx);
        }
        let slot = self.slot().await?;
        let io = self.connect_io(false).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A dead upstream connection is noticed by its missing ping answers.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Connect(jwtgate_base::error_chain(&e)))?;
        drive(conn, slot, "upstream HTTP/2 connection");
        *jwtgate_base::sync::lock(&self.h2) = Some(tx.clone());
        Ok(tx)
    }

    /// Sends a WebSocket upgrade request on a connection of its own (an upgraded connection is
    /// never pooled) that can hand over its I/O when the upstream switches protocols.
    /// Its slot comes back with the response: a tunnel holds it while it is open.
    pub async fn send_upgrade(
        &self,
        req: Request<ClientBody>,
    ) -> Result<(Response<Incoming>, UpstreamSlot), UpstreamError> {
        let slot = self.slot().await?;
        // Boxed: a TLS handshake's future is kilobytes, and this one sits inside every
        // request's future (the proxy's handler may take the upgrade branch).
        let stream = Box::pin(self.connect_io(true)).await?;
        let (mut tx, conn) = http1::Builder::new()
            .handshake::<_, ClientBody>(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(jwtgate_base::error_chain(&e)))?;
        drive(conn.with_upgrades(), slot.clone(), "upstream upgrade connection");
        let resp = tx.send_request(req).await.map_err(UpstreamError::Exchange)?;
        Ok((resp, slot))
    }

    /// The most recently returned connection that is ready; closed ones are dropped.
    fn checkout(&self) -> Option<(SendRequest<UpstreamRequestBody>, u64)> {
        let mut idle = self.lock_idle();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].tx.is_closed() {
                idle.swap_remove(i);
            } else if idle[i].tx.is_ready() {
                // swap_remove moves the last entry here; it has been looked at already.
                let c = idle.swap_remove(i);
                return Some((c.tx, c.since));
            }
            // Otherwise it is finishing its previous exchange; it will be ready shortly.
        }
        None
    }

    fn put_back(&self, tx: SendRequest<UpstreamRequestBody>) {
        if tx.is_closed() {
            return;
        }
        let since = self.tick.load(Ordering::Relaxed);
        let mut idle = self.lock_idle();
        if idle.len() < self.max_idle {
            idle.push(IdleConn { tx, since });
        }
    }

    async fn connect_tcp(&self) -> Result<TcpStream, UpstreamError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match jwtgate_base::clock::timeout(&*self.clock, self.connect_timeout, connect).await {
            None => return Err(UpstreamError::Connect(format!("timed out after {:?}", self.connect_timeout))),
            Some(Err(e)) => return Err(UpstreamError::Connect(e.to_string())),
            Some(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A TCP connection, with the TLS handshake done over it for an `https://` upstream (both
    /// within the connect timeout).
    /// `http1`: offer only HTTP/1.1 by ALPN (an upgrade), whatever the pool's protocol.
    async fn connect_io(&self, http1: bool) -> Result<MaybeTls, UpstreamError> {
        let Some(tls) = &self.tls else {
            return Ok(MaybeTls::Plain(self.connect_tcp().await?));
        };
        let (connector, name) = (if http1 { &tls.http1 } else { &tls.main }, &tls.name);
        let handshake = async {
            let tcp = self.connect_tcp().await?;
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| UpstreamError::Connect(format!("TLS handshake with the upstream: {e}")))
        };
        match jwtgate_base::clock::timeout(&*self.clock, self.connect_timeout, handshake).await {
            None => Err(UpstreamError::Connect(format!("timed out after {:?}", self.connect_timeout))),
            Some(r) => Ok(MaybeTls::Tls(Box::new(r?.into()))),
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamRequestBody>, UpstreamError> {
        let slot = self.slot().await?;
        let stream = self.connect_io(false).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(jwtgate_base::error_chain(&e)))?;
        drive(conn, slot, "upstream connection");
        Ok(tx)
    }
}

/// Runs one upstream connection's task until the connection ends, then gives its slot back
/// (`upstream.max_connections` counts it until then).
fn drive(
    conn: impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
    slot: UpstreamSlot,
    what: &'static str,
) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("{what} ended with an error: {}", jwtgate_base::error_chain(&e));
        }
        drop(slot);
    });
}

/// TLS to the upstream: the connector requests use, the one upgrades use (ALPN `http/1.1`
/// only; the same one unless requests speak HTTP/2), and the name the certificate must carry.
struct UpstreamTlsConnectors {
    main: tokio_rustls::TlsConnector,
    http1: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

/// A copy of an idempotent request without a body, to send again if its connection fails.
fn replayable_copy(req: &Request<UpstreamRequestBody>) -> Option<Request<UpstreamRequestBody>> {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    // PUT and DELETE are idempotent but carry a body more often than not; only empty ones count.
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

struct Lease {
    tx: SendRequest<UpstreamRequestBody>,
    pool: Arc<UpstreamPool>,
}

/// An upstream response body; its connection goes back to the pool once it has been read to
/// the end, and is closed if it is dropped before that.
pub struct UpstreamBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl UpstreamBody {
    /// A body whose connection is not returned to the pool (an upgrade's).
    pub fn unpooled(inner: Incoming) -> UpstreamBody {
        UpstreamBody { inner, lease: None }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reaper_ticks_at_most_every_second_and_counts_the_idle_timeout_in_ticks() {
        let ms = Duration::from_millis;
        assert_eq!(UpstreamPool::tick_period(Duration::from_secs(90)), (Duration::from_secs(1), 90));
        assert_eq!(UpstreamPool::tick_period(Duration::from_secs(1)), (ms(250), 4));
        assert_eq!(UpstreamPool::tick_period(ms(1500)), (ms(375), 4));
        assert_eq!(UpstreamPool::tick_period(ms(0)), (ms(100), 1));
    }
}
