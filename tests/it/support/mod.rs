//! Shared fixtures for the integration tests: a fake Asgardeo organization and an echo
//! upstream (the same ones `jwtgate dev` uses, from the `jwtgate-testkit` crate), a gateway started from a
//! real configuration on ephemeral loopback ports, token minting with real signatures, and an
//! HTTP client plus a raw-socket client for requests no well-behaved client would send.
#![allow(dead_code)]

pub use jwtgate_testkit::apim;
pub mod dpop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jwtgate::auth::alg::Alg;
use jwtgate::clock::{Clock, SystemClock};
use jwtgate::config::Config;
use jwtgate::serve::{start, Running};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use jwtgate_testkit::echo::EchoUpstream;
pub use jwtgate_testkit::issuer::FakeIssuer;
pub use jwtgate_testkit::mint::SigningKey;

/// The audience tests use.
pub const AUD: &str = "test-client";

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemClock.now_unix()
}

/// A fake organization, an echo upstream and a gateway in front of it.
pub struct Harness {
    pub idp: FakeIssuer,
    pub upstream: EchoUpstream,
    pub gw: Running,
    pub key: Arc<SigningKey>,
    pub client: reqwest::Client,
    /// The gateway's clock, when the harness was started on a manual one.
    pub clock: Option<Arc<ManualClock>>,
}

pub use jwtgate::clock::ManualClock;

/// Polls `cond` every 5 ms until it holds, calling `between` after each miss; false after 10 s
/// of real time.
async fn poll_until<F, Fut>(mut cond: F, mut between: impl FnMut()) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        between();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Moves `clock` forward by `step` and polls `cond`, again and again, until it holds. For
/// effects of time that a background task produces: the task may not have armed its next
/// sleep yet when the clock is first moved, so one advance is not enough; small steps keep the
/// effect close to when it becomes due.
pub async fn advance_until<F, Fut>(clock: &ManualClock, step: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !poll_until(cond, || clock.advance(step)).await {
        panic!("timed out waiting until {what}");
    }
}

/// Runs `request` to its end while moving `clock` forward by `step`: for an answer that a
/// timer on the gateway's clock produces (a timeout moved past instead of waited for).
pub async fn advance_until_answered<T: Send + 'static>(
    clock: &ManualClock,
    step: Duration,
    what: &str,
    request: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let task = tokio::spawn(request);
    advance_until(clock, step, what, || async { task.is_finished() }).await;
    task.await.expect("the request's task")
}

/// Polls `cond` until it holds: for effects that happen over real sockets (a request reaching
/// the upstream, a connection task ending). The one way the tests wait.
pub async fn wait_until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until_or(what, cond, String::new).await
}

/// [`wait_until`], with `context` (a process's own log, say) in the panic when it never holds.
pub async fn wait_until_or<F, Fut>(what: &str, cond: F, context: impl FnOnce() -> String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !poll_until(cond, || {}).await {
        panic!("timed out waiting until {what} {}", context());
    }
}

/// A fresh folder for one test's files (named after `tag`, the process and a random number):
/// the one way the tests make one.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("jwtgate-{tag}-{}-{:x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    dir
}

/// Every harness's RS256 key (`k1_RS256`), generated once per test process: an RSA key costs a few
/// hundred milliseconds in a debug build, and a harness needs *a* key, not a new one — each fake
/// issuer has its own `iss`, so one harness's tokens never pass another's gateway. Tests about
/// rotation or foreign keys generate their own.
pub fn harness_key() -> Arc<SigningKey> {
    static KEY: std::sync::OnceLock<Arc<SigningKey>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| Arc::new(SigningKey::generate(Alg::RS256, "k1_RS256").expect("key"))).clone()
}

/// Routes every harness gets unless the test supplies its own.
pub const ROUTES: &str = r#"
[[routes]]
name = "public"
path_prefix = "/public"
auth = "anonymous"

[[routes]]
name = "orders-read"
path_prefix = "/orders"
methods = ["GET"]
scopes = ["orders:read"]

[[routes]]
name = "orders-write"
path_prefix = "/orders"
methods = ["POST", "PUT"]
scopes = ["orders:write", "orders:read"]

[[routes]]
name = "any"
path_prefix = "/api"
"#;

/// The config text for one issuer; `issuer_extra` lines go into `[[issuers]]`.
pub fn config_text(discovery_url: &str, upstream: SocketAddr, issuer_extra: &str, server_extra: &str) -> String {
    let algs = if issuer_extra.contains("algorithms") { "" } else { "algorithms = [\"RS256\"]" };
    let refetch = if issuer_extra.contains("jwks_min_refetch_seconds") { "" } else { "jwks_min_refetch_seconds = 10" };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
drain_timeout_seconds = 5
{server_extra}

[upstream]
url = "http://{upstream}"
timeout_seconds = 2
connect_timeout_seconds = 1

[[issuers]]
name = "asgardeo"
discovery_url = "{discovery_url}"
audiences = ["{AUD}"]
{algs}
{refetch}
{issuer_extra}
{ROUTES}
"#
    )
}

/// A gateway started from config text, without waiting for its keys (the IdP may be down).
pub async fn start_gateway(text: &str) -> Running {
    let config = Config::parse(text, None).expect("config");
    start(config, Arc::new(SystemClock)).await.expect("gateway")
}

pub fn http_client() -> reqwest::Client {
    jwtgate::tls::install_crypto_provider();
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().expect("client")
}

impl Harness {
    /// The default harness: one RS256 key, default routes.
    pub async fn start() -> Harness {
        Harness::start_with("", "").await
    }

    /// A harness with extra `[[issuers]]` and `[server]` lines.
    pub async fn start_with(issuer_extra: &str, server_extra: &str) -> Harness {
        Harness::start_on(issuer_extra, server_extra, None).await
    }

    /// A harness whose gateway keeps time on a manual clock (at the real now): refreshes,
    /// staleness, timeouts and schedules move only with [`Harness::advance`].
    pub async fn start_manual(issuer_extra: &str, server_extra: &str) -> Harness {
        Harness::start_manual_edited(issuer_extra, server_extra, |t| t).await
    }

    /// [`Harness::start_manual`] with the configuration text changed by `edit` first.
    pub async fn start_manual_edited(issuer_extra: &str, server_extra: &str, edit: fn(String) -> String) -> Harness {
        Harness::start_on_edited(issuer_extra, server_extra, Some(Arc::new(ManualClock::at_system_now())), edit).await
    }

    async fn start_on(issuer_extra: &str, server_extra: &str, clock: Option<Arc<ManualClock>>) -> Harness {
        Harness::start_on_edited(issuer_extra, server_extra, clock, |t| t).await
    }

    async fn start_on_edited(
        issuer_extra: &str,
        server_extra: &str,
        clock: Option<Arc<ManualClock>>,
        edit: fn(String) -> String,
    ) -> Harness {
        let idp = FakeIssuer::start("acme").await.expect("idp");
        let key = idp.add_shared_key(harness_key());
        let upstream = EchoUpstream::start().await.expect("upstream");
        let text = edit(config_text(&idp.discovery_url(), upstream.addr, issuer_extra, server_extra));
        let config = Config::parse(&text, None).expect("config");
        let gw_clock: Arc<dyn Clock> = match &clock {
            Some(c) => c.clone(),
            None => Arc::new(SystemClock),
        };
        let gw = start(config, gw_clock).await.expect("gateway");
        let h = Harness { idp, upstream, gw, key, client: http_client(), clock };
        h.wait_ready().await;
        h
    }

    /// The gateway's manual clock, to move from inside a task or a stream.
    pub fn gw_clock(&self) -> Arc<ManualClock> {
        self.clock.clone().expect("a harness started with start_manual")
    }

    /// Moves the gateway's manual clock forward.
    pub fn advance(&self, d: Duration) {
        self.manual_clock().advance(d);
    }

    /// The gateway's manual clock.
    pub fn manual_clock(&self) -> &ManualClock {
        self.clock.as_ref().expect("a harness started with start_manual")
    }

    /// `/status`.
    pub async fn status(&self) -> Value {
        self.client.get(self.admin("/status")).send().await.expect("status").json().await.expect("json")
    }

    /// Waits until `/readyz` says 200 (keys loaded).
    pub async fn wait_ready(&self) {
        wait_until("the gateway is ready", || async {
            self.client.get(self.admin("/readyz")).send().await.is_ok_and(|r| r.status() == 200)
        })
        .await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.proxy_addr, path)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.admin_addr, path)
    }

    /// Valid claims with `scope`.
    pub fn claims(&self, scope: &str) -> Value {
        self.idp.claims(now(), "alice", AUD, scope)
    }

    /// A valid token signed by the published key.
    pub fn token(&self, scope: &str) -> String {
        self.key.token(&self.claims(scope))
    }

    /// GET `path` with `Authorization: Bearer <token>`.
    pub async fn get_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request")
    }

    /// The metrics text.
    pub async fn metrics(&self) -> String {
        self.client.get(self.admin("/metrics")).send().await.expect("metrics").text().await.expect("text")
    }
}

/// A metric sample's value, e.g. `metric(&text, "jwtgate_requests_total{route=\"any\",outcome=\"allowed\"}")`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// The JSON the echo upstream answered with.
pub async fn echoed(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200, "expected the upstream's 200");
    assert_eq!(resp.headers().get("x-echo").map(|v| v.as_bytes()), Some(&b"1"[..]), "not from the upstream");
    resp.json().await.expect("echo json")
}

/// The values of header `name` the upstream received.
pub fn upstream_header(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A raw HTTP/1.1 exchange (one request, `Connection: close`): status, head text, body.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Asserts a JSON error body with `error`.
pub async fn assert_error(resp: reqwest::Response, status: u16, error: &str) -> reqwest::header::HeaderMap {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.expect("json error body");
    assert_eq!(body["error"], error, "body: {body}");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "body: {body}");
    headers
}

pub fn www_authenticate(h: &reqwest::header::HeaderMap) -> String {
    h.get("www-authenticate").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default()
}

/// Runs the jwtgate binary with `args` to its end (no `JWTGATE_CONFIG` from the environment).
/// `jwtgate validate --config <config> <args>`, `stdin` written to its input: its exit code and
/// the JSON verdict it printed (panics, with its stderr, on anything else). The one way the
/// tests ask `validate`.
pub async fn validate(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (i32, Value) {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"));
    c.env_remove("JWTGATE_CONFIG").arg("validate").arg("--config").arg(config).args(args);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("jwtgate validate");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await.expect("validate's stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().await.expect("validate's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("not JSON: {stdout:?} / {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v)
}

pub fn run_jwtgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_jwtgate")).env_remove("JWTGATE_CONFIG").args(args).output().unwrap()
}

/// `jwtgate serve --config path` on the ports its file says (0: the system's choice), with
/// JSON logs; returns the child and its proxy and admin addresses, read from its "listening"
/// log line (no port is chosen by the test and released for the child to reuse). The rest of
/// its log is drained in the background.
pub async fn spawn_serve(path: &std::path::Path) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let (child, proxy, admin, _) = spawn_serve_with(path, None).await;
    (child, proxy, admin)
}

/// [`spawn_serve`], optionally under a descriptor limit (`ulimit -n`), keeping every log line.
pub async fn spawn_serve_with(
    path: &std::path::Path,
    max_files: Option<u64>,
) -> (tokio::process::Child, SocketAddr, SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncBufReadExt;
    let bin = env!("CARGO_BIN_EXE_jwtgate");
    let mut cmd = match max_files {
        None => tokio::process::Command::new(bin),
        Some(n) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(bin);
            c
        }
    };
    let mut child = cmd
        .args(["serve", "--config"])
        .arg(path)
        .env_remove("JWTGATE_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addrs = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            log.lock().unwrap().push(line);
            let addr = |k: &str| v["fields"][k].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
            if let (Some(p), Some(a)) = (addr("proxy_addr"), addr("admin_addr")) {
                return (p, a);
            }
        }
        panic!("serve exited before listening (its config must say log_format = \"json\")");
    })
    .await
    .expect("serve listened in time");
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(mut l) = sink.lock() {
                l.push(line);
            }
        }
    });
    // Listening is logged once the sockets are bound; wait until the admin listener answers.
    let client = http_client();
    let healthz = format!("http://{}/healthz", addrs.1);
    wait_until("serve's admin listener answers", || async {
        client.get(&healthz).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    (child, addrs.0, addrs.1, log)
}

/// The JSON lines of a `serve` child's log (as [`spawn_serve_with`] keeps them) whose message
/// `keep` accepts, in the order they were written.
pub fn logged(log: &std::sync::Mutex<Vec<String>>, keep: impl Fn(&str) -> bool) -> Vec<Value> {
    let lines = log.lock().expect("the log").clone();
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"].as_str().is_some_and(&keep))
        .collect()
}

/// Asserts, for each `(lines, key, why)`, that a configuration whose first route (`/first`)
/// carries `lines` is refused with a problem at `key` saying `why`.
pub fn assert_first_route_refused(cases: &[(&str, &str, &str)]) {
    let base =
        config_text("https://idp.example/.well-known/openid-configuration", "127.0.0.1:1".parse().unwrap(), "", "");
    for (lines, key, why) in cases {
        let text = base.replacen(
            "[[routes]]\n",
            &format!("[[routes]]\nname = \"first\"\npath_prefix = \"/first\"\n{lines}\n\n[[routes]]\n"),
            1,
        );
        let err = jwtgate::config::Config::parse(&text, None).expect_err(lines);
        let problems: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
        assert!(problems.iter().any(|p| p.starts_with(key) && p.contains(why)), "{lines}: {problems:?}");
    }
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, written as PEM files
/// `{name}-ca.pem`, `{name}-cert.pem`, `{name}-key.pem` in `dir`; returns the CA PEM.
pub fn write_pki(dir: &std::path::Path, name: &str) -> String {
    write_pki_until(dir, name, (2049, 12, 31))
}

/// `write_pki` with a leaf certificate valid until the start of `(year, month, day)` UTC.
pub fn write_pki_until(dir: &std::path::Path, name: &str, (year, month, day): (i32, u8, u8)) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf.not_after = rcgen::date_time_ymd(year, month, day);
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-cert.pem")), leaf.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    ca.pem()
}
