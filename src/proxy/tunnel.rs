//! WebSocket upgrades (HTTP/1.1 `Upgrade: websocket`), after the request was judged like any
//! other (route, token, scopes): the upgrade request goes upstream on a connection of its own
//! (an upgraded connection never returns to the pool) with `Upgrade` and `Connection: upgrade`
//! kept; when the upstream switches protocols, the `101` goes back to the client and the two
//! connections are joined byte for byte until either side closes or the tunnel's lifetime
//! (`tunnel_max_lifetime_seconds`) runs out. Any other answer is passed back as it is.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

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

/// Joins the client's upgraded connection with the upstream's once both are ready, for at most
/// `lifetime`. Runs on its own task; counts the tunnel while it is open.
pub fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, lifetime: Duration, metrics: std::sync::Arc<Metrics>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::info!("websocket upgrade not completed: {e}");
                return;
            }
        };
        metrics.open_tunnels.inc();
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::time::timeout(lifetime, tokio::io::copy_bidirectional(&mut client, &mut upstream)).await {
            Ok(Ok((up, down))) => tracing::debug!(bytes_up = up, bytes_down = down, "websocket tunnel closed"),
            Ok(Err(e)) => tracing::debug!("websocket tunnel ended: {e}"),
            Err(_) => {
                tracing::info!(lifetime_s = lifetime.as_secs(), "websocket tunnel closed at its maximum lifetime");
                metrics.tunnels_expired.inc();
            }
        }
        metrics.open_tunnels.dec();
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
