//! WebSocket upgrades (HTTP/1.1 `Upgrade: websocket`), after the request was judged like any
//! other (route, token, scopes): the upgrade request goes upstream on a connection of its own
//! (an upgraded connection never returns to the pool) with `Upgrade` and `Connection: upgrade`
//! kept; when the upstream switches protocols, the `101` goes back to the client and the two
//! connections are joined byte for byte until either side closes, no byte moves either way for
//! `tunnel_idle_timeout_seconds`, or the tunnel's lifetime (`tunnel_max_lifetime_seconds`) runs
//! out. A tunnel keeps its client connection's place under `max_connections` (and in
//! `jwtgate_open_connections`) until it closes. Any other answer is passed back as it is.
#![allow(clippy::disallowed_methods)] // a tunnel's idle and lifetime timers are reset per frame: tokio's resettable Sleep, no allocation each time

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// True for an HTTP/1.1 request asking to switch to WebSocket (RFC 6455 §4.1): `Upgrade:
/// websocket` and an `upgrade` token in `Connection`. Other upgrades are not tunnelled (their
/// `Upgrade` header is dropped as hop-by-hop).
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    if req.version() != Version::HTTP_11 {
        return false;
    }
    let h = req.headers();
    let upgrade = h.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Puts back what hop-by-hop stripping removed from an upgrade request or its `101`.
pub fn restore_upgrade_headers(h: &mut HeaderMap) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
}

/// How long a tunnel may stay open, and stay silent.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    /// Whatever passes through it.
    pub lifetime: Duration,
    /// With no byte moving either way.
    pub idle: Duration,
}

/// One side of a tunnel, noting when a byte last arrived from it.
struct Noted<T> {
    io: T,
    last: Arc<AtomicU64>,
    start: tokio::time::Instant,
}

impl<T: AsyncRead + Unpin> AsyncRead for Noted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Noted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a tunnel ended.
enum Ended {
    Closed(std::io::Result<(u64, u64)>),
    Lifetime,
    Idle,
}

/// Joins the client's upgraded connection with the upstream's once both are ready, within
/// `limits`, holding the upstream connection's place under `upstream.max_connections` until it
/// closes (the client connection's place lives in its socket, which the tunnel owns). Runs on its own task;
/// counts the tunnel while it is open.
pub fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    limits: TunnelLimits,
    upstream_slot: super::upstream::UpstreamSlot,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::info!("websocket upgrade not completed: {e}");
                return;
            }
        };
        metrics.open_tunnels.inc();
        let start = tokio::time::Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let mut client = Noted { io: TokioIo::new(client), last: last.clone(), start };
        let mut upstream = Noted { io: TokioIo::new(upstream), last: last.clone(), start };
        let ended = {
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            let end_of_life = start + limits.lifetime;
            loop {
                let quiet_until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + limits.idle;
                tokio::select! {
                    r = &mut copy => break Ended::Closed(r),
                    _ = tokio::time::sleep_until(end_of_life.min(quiet_until)) => {
                        let now = tokio::time::Instant::now();
                        if now >= end_of_life {
                            break Ended::Lifetime;
                        }
                        let quiet_until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + limits.idle;
                        if now >= quiet_until {
                            break Ended::Idle;
                        }
                    }
                }
            }
        };
        match ended {
            Ended::Closed(Ok((up, down))) => {
                tracing::debug!(bytes_up = up, bytes_down = down, "websocket tunnel closed")
            }
            Ended::Closed(Err(e)) => tracing::debug!("websocket tunnel ended: {e}"),
            Ended::Lifetime => {
                tracing::info!(
                    lifetime_s = limits.lifetime.as_secs(),
                    "websocket tunnel closed at its maximum lifetime"
                );
                metrics.tunnels_expired.inc();
            }
            Ended::Idle => {
                tracing::debug!(idle_s = limits.idle.as_secs(), "websocket tunnel closed: nothing moved");
                metrics.connections_closed.with_label_values(&["tunnel_idle_timeout"]).inc();
            }
        }
        metrics.open_tunnels.dec();
        drop(upstream_slot);
    });
}

/// The `101` for the client: the upstream's head (its `Sec-WebSocket-*` answers included)
/// with the upgrade headers restored.
pub fn switching_protocols<B>(upstream: &Response<hyper::body::Incoming>, body: B) -> Response<B> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    for (name, value) in upstream.headers() {
        if name != header::CONNECTION && name != header::UPGRADE && name != header::TRANSFER_ENCODING {
            h.append(name.clone(), value.clone());
        }
    }
    restore_upgrade_headers(h);
    resp
}
