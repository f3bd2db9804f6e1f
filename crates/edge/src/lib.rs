//! One accept loop for every listener jwtgate runs (proxy, admin, the dev fakes): hyper-util's
//! auto builder (HTTP/1.1 and h2c by prior knowledge, with upgrades), header limits, and a
//! lifetime for every connection: a client must finish its first request head within the
//! header-read timeout *from accept* (a connection that never sends a byte is closed too), and
//! a connection with nothing in flight — HTTP/1 keep-alive or HTTP/2, mid-HEADERS included — is
//! closed after the idle timeout; HTTP/2 peers are pinged so dead ones go away. A connection cap
//! makes new clients wait in the kernel's backlog instead of exhausting descriptors. Graceful
//! shutdown stops accepting, lets in-flight requests finish within a bound, then closes the
//! rest. Accept errors (e.g. out of file descriptors) are logged and retried, never fatal.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jwtgate_base::clock::{self, Clock};
use jwtgate_tls::MaybeTls;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

/// Limits applied to every connection of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Request headers above this get 431 (HTTP/1) or a stream error (HTTP/2).
    pub max_header_bytes: usize,
    /// From accept to the end of the first request head, and for each later head once it
    /// started; a connection that sends nothing is closed after it.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Open connections at most; 0 = no cap. Beyond it, new connections wait to be accepted.
    pub max_connections: usize,
    /// A response waiting on a client that reads nothing for this long closes the connection.
    pub send_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 0,
            send_timeout: Duration::from_secs(60),
            max_concurrent_streams: 100,
            drain: Duration::from_secs(30),
        }
    }
}

/// The connection metrics of a listener (the proxy's; other listeners run without).
#[derive(Clone)]
pub struct ConnMetrics {
    /// `jwtgate_open_connections`.
    pub open: prometheus::IntGauge,
    /// `jwtgate_connections_closed_total{reason}` for the closes jwtgate decides.
    pub closed: prometheus::IntCounterVec,
    /// `jwtgate_connection_limit_waits_total`: accepts that waited for the cap.
    pub limit_waits: prometheus::IntCounter,
    /// `jwtgate_accept_errors_total`: failed accepts (e.g. out of descriptors).
    pub accept_errors: prometheus::IntCounter,
}

/// A client connection's place under `max_connections` and in `jwtgate_open_connections`,
/// held by the connection's socket wrapper ([`WatchedStream`]): after a WebSocket upgrade the
/// socket lives on inside the tunnel (hyper's connection task ends at the `101`), so the place
/// is given back only when the tunnel closes, and tunnels cannot escape the limit — at no cost
/// to an ordinary request.
struct ConnSlot {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    open: Option<prometheus::IntGauge>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

/// What a connection task needs to know about its requests: how many are in flight and when
/// the last one finished (milliseconds since the connection was accepted).
struct Activity {
    clock: CoarseClock,
    /// When the connection was accepted, in the clock's milliseconds.
    accepted_ms: u64,
    in_flight: AtomicUsize,
    served: AtomicU64,
    last_done_ms: AtomicU64,
    /// When the first byte of the next HTTP/1 request head arrived (`NOT_READING`: none yet).
    head_since_ms: AtomicU64,
    /// Responses whose body has a frame the client has not taken yet (or none polled so far):
    /// they wait on the client, not on the upstream.
    send_waiting: AtomicUsize,
    /// When a response body last moved (a frame taken, an end, a new response).
    send_progress_ms: AtomicU64,
}

const NOT_READING: u64 = u64::MAX;

impl Activity {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Milliseconds of the gateway's clock, advanced by a ticker a few times a second: the
/// per-request bookkeeping reads one atomic instead of the clock (the timeouts it serves are in
/// seconds). The watchdogs decide with the precise time, and sleep on the gateway's clock.
#[derive(Clone)]
struct CoarseClock(Arc<AtomicU64>, Arc<dyn Clock>);

/// How often the coarse clock advances.
const CLOCK_TICK: Duration = Duration::from_millis(250);

impl CoarseClock {
    /// A coarse view of `source` and the task that advances it (stopped by aborting it).
    fn start(source: Arc<dyn Clock>) -> (CoarseClock, tokio::task::JoinHandle<()>) {
        let clock = CoarseClock(Arc::new(AtomicU64::new(0)), source);
        clock.0.store(clock.precise_ms(), Ordering::Release);
        let c = clock.clone();
        let ticker = tokio::spawn(async move {
            loop {
                c.1.sleep(CLOCK_TICK).await;
                c.0.store(c.precise_ms(), Ordering::Release);
            }
        });
        (clock, ticker)
    }

    /// The coarse time: one atomic load.
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// The gateway clock's own time, for the rare decisions (a watchdog waking up).
    fn precise_ms(&self) -> u64 {
        u64::try_from(self.1.monotonic().as_millis()).unwrap_or(u64::MAX)
    }

    /// A sleep on the gateway's clock.
    fn sleep(&self, d: Duration) -> clock::Sleep {
        self.1.sleep(d)
    }
}

/// Marks one request in flight until the response body is finished or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.served.fetch_add(1, Ordering::AcqRel);
        a.head_since_ms.store(NOT_READING, Ordering::Release);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done_ms.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight while it streams, and notes
/// whether it waits on the client (a frame produced and not yet taken: the client reads
/// nothing, or an HTTP/2 window of 0) or on the upstream (its last poll was pending), for the
/// send timeout.
pub struct Tracked<B> {
    inner: B,
    in_flight: InFlight,
    waiting: bool,
}

impl<B> Tracked<B> {
    fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        let a = &in_flight.0;
        a.send_progress_ms.store(a.now_ms(), Ordering::Release);
        a.send_waiting.fetch_add(1, Ordering::AcqRel);
        Tracked { inner, in_flight, waiting: true }
    }

    fn set_waiting(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            let count = &self.in_flight.0.send_waiting;
            if waiting {
                count.fetch_add(1, Ordering::AcqRel);
            } else {
                count.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.set_waiting(false);
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let a = &self.in_flight.0;
        if polled.is_ready() {
            a.send_progress_ms.store(a.now_ms(), Ordering::Release);
        }
        // A frame handed over waits on the client until the next poll; pending waits on us.
        self.set_waiting(matches!(polled, Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client socket, noting when the first byte of an HTTP/1 request head arrives on a
/// connection with nothing in flight: the header-read timeout of a keep-alive request counts
/// from there (hyper's own timer would start right after the previous response and cut every
/// keep-alive connection at the header timeout). HTTP/2 connections, recognised by their
/// preface, carry pings and settings between requests; the idle timeout covers them.
struct WatchedStream<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Decided on the first bytes: `Some(true)` for HTTP/2.
    h2: Option<bool>,
    /// The connection's place under the cap, for as long as the socket lives.
    _slot: ConnSlot,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WatchedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            let h2 = *self.h2.get_or_insert_with(|| fresh.starts_with(b"PRI "));
            let a = &self.activity;
            if !h2 && a.in_flight.load(Ordering::Acquire) == 0 && a.head_since_ms.load(Ordering::Acquire) == NOT_READING
            {
                a.head_since_ms.store(a.now_ms(), Ordering::Release);
            }
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WatchedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why jwtgate closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// No complete request head within the header-read timeout of accept.
    Header,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// A response waited on a client that took nothing for the send timeout.
    Send,
}

impl Expiry {
    fn label(self) -> &'static str {
        match self {
            Expiry::Header => "header_timeout",
            Expiry::Idle => "idle_timeout",
            Expiry::Send => "send_timeout",
        }
    }
}

/// How long until this connection expires if nothing changes (`None`: busy, waiting on the
/// upstream), and why.
fn remaining(a: &Activity, limits: &ServerLimits) -> Option<(Duration, Expiry)> {
    if a.in_flight.load(Ordering::Acquire) > 0 {
        if a.send_waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        // Responses wait on the client: the connection goes when no response has moved for
        // the send timeout (HTTP/2 offers no way to reset one stream whose body is not polled,
        // so a connection whose every stream is stuck is closed whole).
        let since = a.send_progress_ms.load(Ordering::Acquire);
        let elapsed = Duration::from_millis(a.clock.precise_ms().saturating_sub(since));
        return Some((limits.send_timeout.saturating_sub(elapsed), Expiry::Send));
    }
    let (since, limit, why) = match a.head_since_ms.load(Ordering::Acquire) {
        NOT_READING if a.served.load(Ordering::Acquire) == 0 => {
            (a.accepted_ms, limits.header_read_timeout, Expiry::Header)
        }
        NOT_READING => (a.last_done_ms.load(Ordering::Acquire), limits.idle_timeout, Expiry::Idle),
        head => (head, limits.header_read_timeout, Expiry::Header),
    };
    let elapsed = Duration::from_millis(a.clock.precise_ms().saturating_sub(since));
    Some((limit.saturating_sub(elapsed), why))
}

/// What the watchdog tells a connection.
enum Order {
    /// Finish what is in flight, then close (shutdown).
    Drain,
    /// Close now (a timeout, or the drain ran out).
    Close,
}

/// Watches one connection from its own task, so that the connection's task polls nothing but
/// the connection and one channel: closes it when its header-read or idle time runs out,
/// drains it on shutdown and closes it when the drain runs out.
async fn watchdog(
    activity: Arc<Activity>,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
    orders: mpsc::Sender<Order>,
    metrics: Option<ConnMetrics>,
) {
    loop {
        let wait = match remaining(&activity, &limits) {
            Some((left, why)) if left.is_zero() => {
                tracing::debug!(reason = why.label(), "closing the connection");
                if let Some(m) = &metrics {
                    m.closed.with_label_values(&[why.label()]).inc();
                }
                let _ = orders.send(Order::Close).await;
                return;
            }
            // Look again when it would expire (a request may start or end meanwhile); a busy
            // connection is looked at again after a while.
            Some((left, _)) => left + CLOCK_TICK,
            None => limits.idle_timeout.min(limits.header_read_timeout).min(limits.send_timeout),
        };
        tokio::select! {
            _ = activity.clock.sleep(wait) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    let _ = orders.send(Order::Drain).await;
                    let _ = force.changed().await;
                    let _ = orders.send(Order::Close).await;
                    return;
                }
            }
            _ = orders.closed() => return,
        }
    }
}

/// A listener's TLS configuration; a reload swaps in a new one, which new connections use.
pub type TlsSwitch = Arc<arc_swap::ArcSwap<rustls::ServerConfig>>;

/// Serves `handler` on `listener` (over TLS when `tls` is set) until `shutdown` turns true,
/// then drains.
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
    limits: ServerLimits,
    metrics: Option<ConnMetrics>,
    tls: Option<TlsSwitch>,
    clock: Arc<dyn Clock>,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The header-read timeout is jwtgate's own (see `WatchedStream`): hyper's starts as soon
        // as a keep-alive connection waits for its next request.
        .header_read_timeout(None)
        // hyper answers 431 itself when the head does not fit; leave room for the request line.
        .max_buf_size((limits.max_header_bytes + 16 * 1024).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        // Each stream may hold an upstream connection: bounded per client connection.
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Dead peers (a vanished NAT entry, a killed client) are found by pings.
        .keep_alive_interval(Some(limits.idle_timeout.min(Duration::from_secs(30))))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let cap = (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
    // Every connection task holds a sender; when all are gone, the drain is over.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (force_tx, force_rx) = watch::channel(false);
    let (clock, ticker) = CoarseClock::start(clock);
    let mut accept_failures = AcceptFailures::default();
    let limit_warnings = jwtgate_base::log_limit::EverySecond::new();
    loop {
        let permit = match &cap {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if let Some(m) = &metrics {
                        m.limit_waits.inc();
                    }
                    if let Some(held_back) = limit_warnings.admit() {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            held_back,
                            "connection limit reached; new connections wait"
                        );
                    }
                    tokio::select! {
                        p = sem.clone().acquire_owned() => p.ok(),
                        changed = shutdown.changed() => {
                            if changed.is_err() || *shutdown.borrow() { break } else { continue }
                        }
                    }
                }
            },
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_failures.failed(&e, metrics.as_ref(), &*clock.1).await;
                        continue;
                    }
                };
                accept_failures.succeeded();
                let _ = stream.set_nodelay(true);
                let conn = Connection {
                    builder: builder.clone(),
                    limits,
                    metrics: metrics.clone(),
                    shutdown: shutdown.clone(),
                    force: force_rx.clone(),
                    alive: alive_tx.clone(),
                    permit,
                    clock: clock.clone(),
                    tls: tls.clone(),
                };
                tokio::spawn(conn.run(stream, handler.clone(), peer));
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(alive_tx);
    tokio::select! {
        _ = alive_rx.recv() => tracing::debug!("all connections drained"),
        _ = clock.sleep(limits.drain) => {
            tracing::warn!("drain timeout of {:?} reached; closing the remaining connections", limits.drain);
            let _ = force_tx.send(true);
        }
    }
    ticker.abort();
}

/// Accept errors (descriptors exhausted, above all) back off, 10 ms doubling to 1 s, and are
/// logged at most once a second with how many were not: a listener out of descriptors must not
/// spin, nor flood its log.
#[derive(Default)]
struct AcceptFailures {
    backoff: Duration,
    logged: jwtgate_base::log_limit::EverySecond,
}

impl AcceptFailures {
    async fn failed(&mut self, e: &std::io::Error, metrics: Option<&ConnMetrics>, clock: &dyn clock::Clock) {
        if let Some(m) = metrics {
            m.accept_errors.inc();
        }
        if let Some(held_back) = self.logged.admit() {
            tracing::warn!(held_back, "accept failed: {e}; backing off");
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        clock.sleep(self.backoff).await;
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// One accepted connection and what it needs to run and end.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ServerLimits,
    metrics: Option<ConnMetrics>,
    shutdown: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    clock: CoarseClock,
    tls: Option<TlsSwitch>,
}

impl Connection {
    async fn run<F, Fut, B>(mut self, stream: tokio::net::TcpStream, handler: F, peer: SocketAddr)
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let slot = ConnSlot {
            _permit: self.permit.take(),
            open: self.metrics.as_ref().map(|m| {
                m.open.inc();
                m.open.clone()
            }),
        };
        match self.tls.take() {
            None => self.serve_io(MaybeTls::Plain(stream), handler, peer, slot).await,
            Some(tls) => {
                // The handshake counts against the header-read timeout, like the first head.
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
                // Boxed: the handshake's state is kilobytes, and would otherwise sit in every
                // connection task.
                let handshake = Box::pin(acceptor.accept(stream));
                match clock::timeout(&*self.clock.1, self.limits.header_read_timeout, handshake).await {
                    Some(Ok(stream)) => {
                        self.serve_io(MaybeTls::Tls(Box::new(stream.into())), handler, peer, slot).await
                    }
                    Some(Err(e)) => {
                        drop(slot);
                        self.closed_early("tls_handshake", &format!("TLS handshake failed: {e}"), peer)
                    }
                    None => {
                        drop(slot);
                        self.closed_early(Expiry::Header.label(), "TLS handshake timed out", peer)
                    }
                }
            }
        }
        drop(self.alive);
    }

    /// A connection that ended before HTTP started on it.
    fn closed_early(&self, reason: &'static str, detail: &str, peer: SocketAddr) {
        tracing::debug!(%peer, reason, "{detail}");
        if let Some(m) = &self.metrics {
            m.closed.with_label_values(&[reason]).inc();
        }
    }

    /// One type of connection for plain and TLS alike: hyper's connection code is then
    /// compiled once per handler, and stays inlined as it was before TLS existed (two
    /// instantiations cost about 1,500 instructions a request in lost inlining).
    async fn serve_io<F, Fut, B>(&self, stream: MaybeTls, handler: F, peer: SocketAddr, slot: ConnSlot)
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<B>> + Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let activity = Arc::new(Activity {
            accepted_ms: self.clock.now_ms(),
            clock: self.clock.clone(),
            in_flight: 0.into(),
            served: 0.into(),
            last_done_ms: 0.into(),
            head_since_ms: NOT_READING.into(),
            send_waiting: 0.into(),
            send_progress_ms: 0.into(),
        });
        let io = TokioIo::new(WatchedStream { inner: stream, activity: activity.clone(), h2: None, _slot: slot });
        let a = activity.clone();
        // `map` instead of an `async` wrapper: each wrapping async block copies the whole
        // request future once more when first polled.
        let svc = service_fn(move |req| {
            let in_flight = InFlight::new(&a);
            handler(req, peer).map(move |resp| Ok::<_, Infallible>(resp.map(|inner| Tracked::new(inner, in_flight))))
        });
        let (orders_tx, mut orders) = mpsc::channel(2);
        tokio::spawn(watchdog(
            activity,
            self.limits,
            self.shutdown.clone(),
            self.force.clone(),
            orders_tx,
            self.metrics.clone(),
        ));
        let conn = self.builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let mut watched = true;
        loop {
            tokio::select! {
                biased;
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                    break;
                }
                order = orders.recv(), if watched => match order {
                    Some(Order::Drain) => conn.as_mut().graceful_shutdown(),
                    Some(Order::Close) => break,
                    None => watched = false,
                },
            }
        }
        // Dropping the receiver ends the watchdog.
        drop(orders);
    }
}
