//! The `mcp-sentinel` binary: parses arguments, loads the config, calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mcp_sentinel::config::{Config, ConfigErrors, UpstreamUrl};
use mcp_sentinel::{EXIT_CONFIG, Sentinel};

// mimalloc: a proxy allocates and frees small buffers per request; glibc malloc was ~5% of the
// sentinel's user CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mcp-sentinel",
    version,
    about = "Security gateway sidecar for MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar in front of an MCP server.
    Run(RunArgs),
    /// Validate a config file: every error is listed; exit code 64 when invalid.
    Check {
        #[arg(long, env = "MCP_SENTINEL_CONFIG")]
        config: PathBuf,
    },
    /// Run the sidecar injector: a mutating admission webhook over HTTPS.
    Inject(InjectArgs),
}

#[derive(Args)]
struct InjectArgs {
    /// Injector settings (YAML): sidecar image, native sidecar, default ConfigMap, resources...
    #[arg(long, env = "MCP_SENTINEL_INJECT_CONFIG")]
    config: PathBuf,
    /// Webhook (HTTPS) address
    #[arg(long, env = "MCP_SENTINEL_INJECT_LISTEN", default_value = mcp_sentinel::k8s::webhook::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Admin address for /healthz, /readyz, /metrics
    #[arg(long, env = "MCP_SENTINEL_INJECT_ADMIN_LISTEN", default_value = mcp_sentinel::k8s::webhook::DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Certificate chain (PEM); reloaded when the file changes
    #[arg(long, env = "MCP_SENTINEL_INJECT_TLS_CERT")]
    tls_cert: PathBuf,
    /// Private key (PEM); reloaded when the file changes
    #[arg(long, env = "MCP_SENTINEL_INJECT_TLS_KEY")]
    tls_key: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    /// Config file (YAML). Without it, the embedded defaults apply.
    #[arg(long, env = "MCP_SENTINEL_CONFIG")]
    config: Option<PathBuf>,
    /// Upstream MCP endpoint: http://127.0.0.1:8080/mcp or unix:/run/mcp.sock:/mcp
    #[arg(long, env = "MCP_SENTINEL_UPSTREAM")]
    upstream: Option<String>,
    /// Traffic address [default: 0.0.0.0:15080]
    #[arg(long, env = "MCP_SENTINEL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin address for /healthz, /readyz, /metrics [default: 0.0.0.0:15090]
    #[arg(long, env = "MCP_SENTINEL_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run(args) => run(args),
        Command::Inject(args) => inject(args),
    }
}

fn report(errors: &ConfigErrors) -> ExitCode {
    eprint!("{errors}");
    ExitCode::from(EXIT_CONFIG as u8)
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            println!("{}: valid", path.display());
            for line in cfg.summary() {
                println!("  {line}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => report(&errors),
    }
}

fn load(args: &RunArgs) -> Result<Config, ConfigErrors> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(u) = &args.upstream {
        cfg.upstream.url = Some(UpstreamUrl::parse(u).map_err(|e| {
            ConfigErrors(vec![mcp_sentinel::config::ConfigError {
                file: "--upstream".into(),
                key: String::new(),
                why: e.to_string(),
            }])
        })?);
    }
    if let Some(a) = args.listen {
        cfg.listen = a;
    }
    if let Some(a) = args.admin_listen {
        cfg.admin_listen = a;
    }
    let mut errors = Vec::new();
    if cfg.upstream.url.is_none() {
        errors.push(mcp_sentinel::config::ConfigError {
            file: cfg.source.clone(),
            key: "upstream.url".into(),
            why: "required: set it in the file or pass --upstream / MCP_SENTINEL_UPSTREAM".into(),
        });
    }
    if let Some(why) = cfg.auth_problem() {
        errors.push(mcp_sentinel::config::ConfigError {
            file: cfg.source.clone(),
            key: "auth".into(),
            why: why.into(),
        });
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(cfg)
}

fn run(args: RunArgs) -> ExitCode {
    let cfg = match load(&args) {
        Ok(c) => c,
        Err(errors) => return report(&errors),
    };
    mcp_sentinel::telemetry::init(&cfg.log);
    let mut builder = if cfg.runtime.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.runtime.worker_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        for line in cfg.summary() {
            tracing::info!(setting = %line, "config");
        }
        let sentinel = match Sentinel::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("mcp-sentinel: {e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("signal received: draining");
        let drained = sentinel.shutdown().await;
        tracing::info!(drained, "stopped");
        ExitCode::SUCCESS
    })
}

fn inject(args: InjectArgs) -> ExitCode {
    use mcp_sentinel::k8s::settings::Settings;
    use mcp_sentinel::k8s::webhook::{Injector, InjectorOptions};
    let settings = match Settings::load(&args.config) {
        Ok(s) => s,
        Err(errors) => return report(&errors),
    };
    mcp_sentinel::telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        for line in settings.summary() {
            tracing::info!(setting = %line, "injector config");
        }
        let options = InjectorOptions {
            listen: args.listen,
            admin_listen: args.admin_listen,
            tls: mcp_sentinel::tls::TlsFiles {
                cert: args.tls_cert,
                key: args.tls_key,
                client_ca: None,
            },
            tls_reload_interval: mcp_sentinel::tls::DEFAULT_RELOAD_INTERVAL,
            settings,
            drain_delay: std::time::Duration::from_secs(3),
        };
        let injector = match Injector::start(options).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("mcp-sentinel: {e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_signal().await;
        tracing::info!("signal received: draining");
        let drained = injector.shutdown().await;
        tracing::info!(drained, "stopped");
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
