//! An echo upstream on loopback: answers every request with a JSON description of what it
//! received (method, path, headers, body size, trailers), counts hits and bodies that ended in
//! an error, and can be slowed down. A request carrying `x-echo-trailer` gets that value back
//! as a response trailer (declared in `Trailer`, as gRPC servers send their status); one carrying
//! `x-echo-status: NNN` is answered with that status (an API failing, for the tests). It backs
//! `jwtgate dev` and the tests' "what did the API actually get" checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use jwtgate_edge::{serve, ServerLimits};

/// A running echo server.
pub struct EchoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    body_errors: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
}

/// The echo's response body: the JSON document, and trailers when asked for.
pub type EchoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

impl EchoUpstream {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<EchoUpstream> {
        EchoUpstream::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<EchoUpstream> {
        EchoUpstream::start_tls(addr, None).await
    }

    /// Starts on `addr`, serving TLS with `tls` when given (an `https://` upstream; the
    /// document's `authority` then shows the `:authority` an HTTP/2 client sent).
    pub async fn start_tls(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<EchoUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let body_errors = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let (h, e, d) = (hits.clone(), body_errors.clone(), delay_ms.clone());
        tokio::spawn(serve(
            listener,
            move |req, _| {
                let (h, e, d) = (h.clone(), e.clone(), d.clone());
                async move { echo(req, &h, &e, &d).await }
            },
            stop_rx,
            ServerLimits { drain: Duration::from_millis(200), ..ServerLimits::default() },
            None,
            tls.map(|c| Arc::new(arc_swap::ArcSwap::new(c))),
            Arc::new(jwtgate_base::clock::SystemClock),
        ));
        Ok(EchoUpstream { addr, hits, body_errors, delay_ms, stop })
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Request bodies that ended in an error (a sender that gave up mid-body).
    pub fn body_errors(&self) -> usize {
        self.body_errors.load(Ordering::SeqCst)
    }

    /// Delays every answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn echo(
    req: Request<Incoming>,
    hits: &AtomicUsize,
    body_errors: &AtomicUsize,
    delay_ms: &AtomicU64,
) -> Response<EchoBody> {
    hits.fetch_add(1, Ordering::SeqCst);
    let delay = delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let (parts, body) = req.into_parts();
    let (body_bytes, trailers) = match body.collect().await {
        Ok(b) => {
            let trailers = b.trailers().map(header_map_json);
            (b.to_bytes().len(), trailers)
        }
        Err(_) => {
            body_errors.fetch_add(1, Ordering::SeqCst);
            (0, None)
        }
    };
    let doc = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": header_map_json(&parts.headers),
        "body_bytes": body_bytes,
        "trailers": trailers,
    });
    let wanted = parts.headers.get("x-echo-trailer").cloned();
    let body = match &wanted {
        None => Full::new(Bytes::from(doc.to_string())).boxed(),
        Some(v) => {
            // Trailers need chunked framing: a stream of frames has no known length.
            let mut t = header::HeaderMap::new();
            t.insert("x-echo-trailer", v.clone());
            let frames = [Ok(http_body::Frame::data(Bytes::from(doc.to_string()))), Ok(http_body::Frame::trailers(t))];
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
    };
    let mut r = Response::new(body);
    if let Some(status) = parts
        .headers
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http::StatusCode::from_bytes(v.trim().as_bytes()).ok())
    {
        *r.status_mut() = status;
    }
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r.headers_mut().insert("x-echo", header::HeaderValue::from_static("1"));
    if wanted.is_some() {
        r.headers_mut().insert(header::TRAILER, header::HeaderValue::from_static("x-echo-trailer"));
    }
    r
}

fn header_map_json(h: &header::HeaderMap) -> Value {
    let mut headers = Map::new();
    for (name, value) in h {
        let v = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            _ => {
                headers.insert(name.as_str().to_string(), Value::Array(vec![v]));
            }
        }
    }
    Value::Object(headers)
}
