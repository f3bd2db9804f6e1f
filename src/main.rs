//! The `jwtgate` command line: a thin shell over the library (see `lib.rs`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use jwtgate::clock::SystemClock;
use jwtgate::config::Config;

#[derive(Parser)]
#[command(name = "jwtgate", version, about = "Self-validating JWT sidecar for WSO2 Asgardeo and API Manager")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file (default: $JWTGATE_CONFIG, then config/jwtgate.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, the admin listener and the background tasks.
    Serve(ConfigArg),
    /// Judge one token as the proxy would, and print a JSON verdict.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        /// Accept only tokens of this [[issuers]] name.
        #[arg(long)]
        issuer: Option<String>,
        /// The request path to judge the token for (route and scopes); without it the token
        /// alone is judged (issuer, signature, claims).
        #[arg(long)]
        route: Option<String>,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// Judge at this Unix time instead of now.
        #[arg(long, value_name = "UNIX_SECONDS", allow_hyphen_values = true)]
        at: Option<i64>,
        /// Send the token with the DPoP scheme and this proof (RFC 9449); needs --route, whose
        /// absolute URL form (https://api.example.com/orders/1) is the URI the proof must name.
        #[arg(long, value_name = "PROOF")]
        dpop: Option<String>,
        /// The token, or - to read it from standard input.
        token: String,
    },
    /// Reconcile WSO2 API Manager's key-manager registration once, printing the plan.
    KmSync {
        #[command(flatten)]
        config: ConfigArg,
        /// Run one pass (the only mode; the background sync runs inside `serve`).
        #[arg(long, required = true)]
        once: bool,
        /// Print the plan but write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send the configured management secret even when its fingerprint matches (after the
        /// secret was changed by hand in the APIM Admin Portal, which jwtgate cannot see).
        #[arg(long)]
        push_secret: bool,
    },
    /// Parse and validate the configuration; print problems with their key paths.
    CheckConfig(ConfigArg),
    /// Start an embedded Asgardeo-like issuer, an echo upstream and the gateway on loopback.
    #[cfg(feature = "dev")]
    Dev {
        /// Listen on free ports chosen by the system instead of 8080, 9901, 9400 and 9000
        /// (when those are taken); the printed lines show the ports in use.
        #[arg(long)]
        any_port: bool,
    },
    /// Benchmark helper: run only the Asgardeo-like dev issuer and mint tokens into a file.
    #[command(hide = true)]
    #[cfg(feature = "dev")]
    DevIssuer {
        /// Loopback port to listen on.
        #[arg(long, default_value_t = 9400)]
        port: u16,
        /// How many distinct tokens to mint.
        #[arg(long, default_value_t = 1)]
        tokens: usize,
        /// Where to write them, one per line.
        #[arg(long)]
        out: PathBuf,
        /// The `aud` they carry.
        #[arg(long, default_value = jwtgate::dev::DEV_AUDIENCE)]
        audience: String,
        /// The `scope` they carry.
        #[arg(long, default_value = "openid orders:read")]
        scope: String,
        /// Also mint a DPoP-bound token (`OUT.dpop-token`) and this many proofs of its key for
        /// `GET --dpop-htu`, one per line (`OUT.dpop-proofs`): a DPoP load test's requests.
        #[arg(long, default_value_t = 0)]
        dpop_proofs: usize,
        /// The URI the proofs name.
        #[arg(long, default_value = "http://127.0.0.1/api/x")]
        dpop_htu: String,
    },
}

fn config_path(arg: &ConfigArg) -> PathBuf {
    arg.config
        .clone()
        .or_else(|| std::env::var_os("JWTGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/jwtgate.toml"))
}

/// What a switched-off `[key_manager_sync]` still lacks before it could run (`check-config`
/// shows these as warnings; they do not fail the check).
fn sync_warnings(c: &Config) -> Vec<jwtgate::config::ConfigProblem> {
    match &c.key_manager_sync {
        jwtgate::config::KmSyncConfig::Off(Err(problems)) => problems.clone(),
        _ => Vec::new(),
    }
}

/// The log writer's worker: dropped (flushing what is queued) when `main` returns.
static LOG_FLUSH: std::sync::Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = std::sync::Mutex::new(None);

/// Logs go to stderr through a queue a thread of its own drains: a slow or blocked stderr
/// (a full pipe, a stalled log shipper) never stalls a request. A full queue drops lines
/// rather than wait; `jwtgate_log_lines_dropped_total` counts them.
fn init_logging(format: jwtgate::config::LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .thread_name("jwtgate-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    jwtgate::metrics::count_dropped_log_lines(Box::new(move || dropped.dropped_lines() as u64));
    *jwtgate::sync::lock(&LOG_FLUSH) = Some(guard);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    if format == jwtgate::config::LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sizes its runtime from `server.worker_threads`: one thread means a current-thread
    // runtime (no work stealing, no cross-thread wake-ups), the cheapest way to run a sidecar
    // pinned to one core. Errors in the file are reported by `run` with their key paths.
    let serve_config = match &cli.command {
        Command::Serve(arg) => Some(Config::load(&config_path(arg))),
        _ => None,
    };
    let threads = match &serve_config {
        Some(Ok(c)) => c.server.worker_threads,
        _ => 0,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jwtgate: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, serve_config));
    // Every queued log line is written before the process ends (and before its last words).
    drop(jwtgate::sync::lock(&LOG_FLUSH).take());
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jwtgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command; `serve_config` is `serve`'s configuration, already loaded by `main`.
async fn run(cli: Cli, serve_config: Option<Result<Config, jwtgate::config::ConfigError>>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig(arg) => {
            let path = config_path(&arg);
            match Config::load(&path) {
                Ok(c) => {
                    // Every file is read as the running gateway would read it.
                    let file_problems = jwtgate::serve::check_files(&c);
                    if !file_problems.is_empty() {
                        for p in file_problems {
                            eprintln!("{}: {p}", path.display());
                        }
                        return Ok(ExitCode::from(2));
                    }
                    let sync = match &c.key_manager_sync {
                        jwtgate::config::KmSyncConfig::On(_) => ", key-manager sync enabled",
                        jwtgate::config::KmSyncConfig::Off(_) => ", key-manager sync switched off",
                        jwtgate::config::KmSyncConfig::Absent => "",
                    };
                    println!(
                        "{}: ok ({} issuer(s), {} route(s){sync})",
                        path.display(),
                        c.issuers.len(),
                        c.routes.len()
                    );
                    for w in c.warnings() {
                        eprintln!("warning: {w}");
                    }
                    let warnings = sync_warnings(&c);
                    if !warnings.is_empty() {
                        eprintln!(
                            "warning: [key_manager_sync] is switched off; before enabling it (or running km-sync --once), fix:"
                        );
                        for w in warnings {
                            eprintln!("  {w}");
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Serve(arg) => {
            let config = match serve_config.unwrap_or_else(|| Config::load(&config_path(&arg))) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            init_logging(config.server.log_format, &config.server.log_level);
            let running = jwtgate::serve::start(config, Arc::new(SystemClock)).await?;
            serve_until_stopped(&running).await?;
            // A second SIGTERM/SIGINT while waiting (an operator's second Ctrl-C) exits at once.
            tokio::select! {
                _ = running.shutdown() => {
                    tracing::info!("stopped");
                    Ok(ExitCode::SUCCESS)
                }
                r = wait_for_signal() => {
                    r?;
                    tracing::warn!("a second stop signal: exiting without waiting for in-flight requests");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Validate { config, issuer, route, method, at, dpop, token } => {
            let path = config_path(&config);
            let token = if token == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).context("reading the token from standard input")?;
                s
            } else {
                token
            };
            init_logging(jwtgate::config::LogFormat::Text, "warn");
            let verdict = match Config::load(&path) {
                Ok(c) => {
                    jwtgate::validate_cmd::run(
                        c,
                        jwtgate::validate_cmd::ValidateRequest { issuer, route, method, at, token, dpop },
                    )
                    .await
                }
                Err(e) => jwtgate::validate_cmd::usage_error(e.to_string()),
            };
            println!("{}", verdict.json);
            Ok(ExitCode::from(verdict.exit_code as u8))
        }
        Command::KmSync { config, once: _, dry_run, push_secret } => {
            let path = config_path(&config);
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            init_logging(jwtgate::config::LogFormat::Text, "warn");
            let result = jwtgate::km_sync::run_once(
                &config,
                jwtgate::km_sync::PassOptions { dry_run, push_secret },
                std::time::Duration::from_secs(30),
                Arc::new(SystemClock),
            )
            .await;
            if result.exit_code == 0 {
                println!("{}", result.output);
            } else {
                eprintln!("{}", result.output);
            }
            Ok(ExitCode::from(result.exit_code as u8))
        }
        #[cfg(feature = "dev")]
        Command::DevIssuer { port, tokens, out, audience, scope, dpop_proofs, dpop_htu } => {
            init_logging(jwtgate::config::LogFormat::Text, "warn");
            let issuer =
                jwtgate::dev::issuer::FakeIssuer::start_on(std::net::SocketAddr::from(([127, 0, 0, 1], port)), "dev")
                    .await
                    .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
            let key = issuer
                .add_key(jwtgate::dev::mint::SigningKey::generate(jwtgate::auth::alg::Alg::RS256, "bench_RS256")?);
            let now = jwtgate::clock::Clock::now_unix(&SystemClock);
            let claims = issuer.claims(now, "bench", &audience, &scope);
            let minted = jwtgate::dev::mint_many(&key, &claims, tokens).await;
            std::fs::write(&out, minted.join("\n") + "\n").with_context(|| format!("writing {}", out.display()))?;
            if dpop_proofs > 0 {
                let (token, proofs) = jwtgate::dev::mint_dpop(&key, &claims, &dpop_htu, dpop_proofs).await?;
                let with = |ext: &str| PathBuf::from(format!("{}.{ext}", out.display()));
                std::fs::write(with("dpop-token"), token + "\n").context("writing the DPoP token")?;
                std::fs::write(with("dpop-proofs"), proofs.join("\n") + "\n").context("writing the DPoP proofs")?;
            }
            println!("{}", issuer.discovery_url());
            wait_for_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "dev")]
        Command::Dev { any_port } => {
            init_logging(jwtgate::config::LogFormat::Text, "info");
            use jwtgate::dev;
            let setup = if any_port {
                dev::start_dev(0, 0, 0, 0).await?
            } else {
                dev::start_dev(dev::DEV_ISSUER, dev::DEV_UPSTREAM, dev::DEV_GATEWAY, dev::DEV_ADMIN).await?
            };
            println!("{}", dev::banner(&setup));
            wait_for_signal().await?;
            setup.gateway.shutdown().await;
            if let Some(dir) = setup.config_file.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Waits for SIGTERM or SIGINT; SIGHUP meanwhile re-reads the configuration file (the result
/// is logged by the reload itself).
async fn serve_until_stopped(running: &jwtgate::serve::Running) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            r = &mut stop => return r,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = running.reload().await;
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
