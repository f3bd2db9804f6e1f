//! `jwtgate dev`: the embedded setup behind the README's run command. It starts an
//! Asgardeo-like issuer, an echo upstream and the gateway, all on fixed loopback ports, and
//! prints ready-to-paste `curl` lines with freshly minted tokens (one allowed, one 403), so a
//! new user sees jwtgate work with no Asgardeo account. The fakes also serve the tests.
#![allow(clippy::disallowed_methods)] // the fakes stand for servers elsewhere: they keep real time

// The fakes and the minter are the test kit's (`jwtgate-testkit`); `dev` composes them with the
// gateway.
pub use jwtgate_testkit::{echo, issuer, mint, mint_dpop, mint_many};

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::alg::Alg;
use crate::config::Config;
use crate::serve::{start, Running};
use jwtgate_base::clock::{Clock, SystemClock};

/// Fixed dev ports (all on 127.0.0.1).
pub const DEV_GATEWAY: u16 = 8080;
/// Admin listener.
pub const DEV_ADMIN: u16 = 9901;
/// The fake issuer.
pub const DEV_ISSUER: u16 = 9400;
/// The echo upstream.
pub const DEV_UPSTREAM: u16 = 9000;
/// The audience (client id) dev tokens carry.
pub const DEV_AUDIENCE: &str = "jwtgate-dev-client";
/// The client jwtgate introspects opaque dev tokens as (its secret is written beside the
/// configuration, as a mounted Secret would be).
pub const DEV_INTROSPECTION_CLIENT: &str = "jwtgate-dev-introspection";

/// The running dev setup.
pub struct DevSetup {
    /// The issuer.
    pub issuer: issuer::FakeIssuer,
    /// The upstream.
    pub upstream: echo::EchoUpstream,
    /// The gateway.
    pub gateway: Running,
    /// A token with `orders:read`.
    pub allowed_token: String,
    /// A token without it.
    pub refused_token: String,
    /// An opaque token (introspected) with `orders:read`.
    pub allowed_opaque_token: String,
    /// An opaque token without it.
    pub refused_opaque_token: String,
    /// The configuration it runs with, written out so that the printed `validate` line works
    /// when pasted (in a fresh temporary folder).
    pub config_file: std::path::PathBuf,
}

/// The configuration `dev` runs with.
pub fn dev_config(issuer_discovery: &str, upstream: SocketAddr, gateway: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{gateway}"
admin_listen = "{admin}"
drain_timeout_seconds = 5

[upstream]
url = "http://{upstream}"

[[issuers]]
name = "dev"
discovery_url = "{issuer_discovery}"
audiences = ["{DEV_AUDIENCE}"]
algorithms = ["RS256"]

# Opaque tokens (Asgardeo's default format) are asked about at the issuer's introspection endpoint.
[issuers.introspection]
client_id = "{DEV_INTROSPECTION_CLIENT}"
client_secret_file = "introspection-secret"

[[routes]]
name = "public"
path_prefix = "/public"
auth = "anonymous"

[[routes]]
name = "orders"
path_prefix = "/orders"
methods = ["GET"]
scopes = ["orders:read"]

[[routes]]
name = "default"
path_prefix = "/"
"#
    )
}

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A port is taken or cannot be bound.
    #[error("cannot listen on {0}: {1} (is another jwtgate dev, or something else, using it?)")]
    Bind(SocketAddr, std::io::Error),
    /// Key generation failed.
    #[error("{0}")]
    Key(#[from] mint::KeyGenError),
    /// The embedded config did not parse (a bug).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The configuration file could not be written.
    #[error("cannot write {path}: {source}")]
    ConfigFile {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gateway did not start.
    #[error("{0}")]
    Start(#[from] crate::serve::StartError),
}

/// Starts the dev setup on the given ports (0 = ephemeral, for tests).
pub async fn start_dev(
    issuer_port: u16,
    upstream_port: u16,
    gateway_port: u16,
    admin_port: u16,
) -> Result<DevSetup, DevError> {
    let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let issuer =
        issuer::FakeIssuer::start_on(lo(issuer_port), "dev").await.map_err(|e| DevError::Bind(lo(issuer_port), e))?;
    let upstream =
        echo::EchoUpstream::start_on(lo(upstream_port)).await.map_err(|e| DevError::Bind(lo(upstream_port), e))?;
    let key = mint::SigningKey::generate(Alg::RS256, &format!("{:016x}_RS256", rand::random::<u64>()))?;
    let key = issuer.add_key(key);
    let text = dev_config(&issuer.discovery_url(), upstream.addr, lo(gateway_port), lo(admin_port));
    let dir = std::env::temp_dir().join(format!("jwtgate-dev-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let config_file = dir.join("jwtgate.toml");
    let secret = format!("{:032x}", rand::random::<u128>());
    issuer.set_introspection_client(DEV_INTROSPECTION_CLIENT, &secret);
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&config_file, &text))
        .and_then(|_| std::fs::write(dir.join("introspection-secret"), format!("{secret}\n")))
        .map_err(|source| DevError::ConfigFile { path: config_file.display().to_string(), source })?;
    // Loaded from the file it wrote, so that editing it and `POST /reload` work in dev too.
    let config = Config::load(&config_file)?;
    let gateway = start(config, Arc::new(SystemClock)).await?;
    // Print the curl lines only once they work: wait (briefly) for the first key load.
    for _ in 0..100 {
        if gateway.keys().all_usable() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let now = SystemClock.now_unix();
    let allowed_token = key.token(&issuer.claims(now, "alice", DEV_AUDIENCE, "openid orders:read"));
    let refused_token = key.token(&issuer.claims(now, "bob", DEV_AUDIENCE, "openid profile"));
    let allowed_opaque_token = issuer.issue_opaque(issuer.claims(now, "carol", DEV_AUDIENCE, "openid orders:read"));
    let refused_opaque_token = issuer.issue_opaque(issuer.claims(now, "dave", DEV_AUDIENCE, "openid profile"));
    Ok(DevSetup {
        issuer,
        upstream,
        gateway,
        allowed_token,
        refused_token,
        allowed_opaque_token,
        refused_opaque_token,
        config_file,
    })
}

/// What `dev` prints once everything is up.
pub fn banner(d: &DevSetup) -> String {
    let gw = d.gateway.proxy_addr;
    format!(
        "jwtgate dev is running (Ctrl-C stops it)\n\
         \x20 gateway   http://{gw}   admin http://{admin}/metrics  /status  /readyz\n\
         \x20 issuer    {iss}   (Asgardeo-like, RS256, JWKS {jwks})\n\
         \x20 upstream  http://{up}   (echoes what it receives, as JSON)\n\
         \n\
         Allowed (200): alice's token has the scope orders:read\n\
         \x20 curl -i -H 'Authorization: Bearer {ok}' http://{gw}/orders/42\n\
         \n\
         Refused (403): bob's token lacks orders:read\n\
         \x20 curl -i -H 'Authorization: Bearer {no}' http://{gw}/orders/42\n\
         \n\
         Opaque tokens (Asgardeo's default format), checked at the issuer's introspection endpoint:\n\
         \x20 curl -i -H 'Authorization: Bearer {ook}' http://{gw}/orders/42   (200)\n\
         \x20 curl -i -H 'Authorization: Bearer {ono}' http://{gw}/orders/42   (403)\n\
         \n\
         Also: no token (401)       curl -i http://{gw}/orders/42\n\
         \x20     anonymous route (200) curl -i http://{gw}/public/hello\n\
         \x20     why a token is refused: cargo run --release -- validate --config {cfg} --route /orders/42 {no}\n\
         \x20     (the configuration dev runs with is {cfg})\n",
        cfg = d.config_file.display(),
        admin = d.gateway.admin_addr,
        iss = d.issuer.issuer(),
        jwks = d.issuer.jwks_uri(),
        up = d.upstream.addr,
        ok = d.allowed_token,
        no = d.refused_token,
        ook = d.allowed_opaque_token,
        ono = d.refused_opaque_token,
    )
}
