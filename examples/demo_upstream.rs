//! The test bed's MCP upstream as a standalone server, for `make run` (the
//! sentinel in front of it) and for benchmarks.
//!
//! `cargo run --example demo_upstream -- --listen 127.0.0.1:8080`

use std::net::SocketAddr;

use clap::Parser;

#[allow(dead_code)]
#[path = "../tests/common/upstream.rs"]
mod upstream;

#[derive(Parser, Debug)]
#[command(about = "Demo MCP upstream serving both protocol eras on /mcp")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Stateless, with `application/json` answers where possible (no sessions).
    #[arg(long)]
    json: bool,
    /// Serve legacy clients statelessly too (no `Mcp-Session-Id`).
    #[arg(long)]
    no_sessions: bool,
    /// Accept any `Host` header (rmcp accepts only loopback names by default).
    #[arg(long)]
    any_host: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = if args.json {
        upstream::UpstreamConfig::json()
    } else {
        upstream::UpstreamConfig::default()
    };
    if args.no_sessions {
        config.legacy_sessions = false;
    }
    if args.any_host {
        config.allowed_hosts.clear();
    }
    // A plain line and exit status 1 when the port is taken: scripts/run-demo.sh (`make run`)
    // shows it and must not mistake another program on the port for this one.
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo upstream: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let server = upstream::serve_upstream(listener, config);
    // One line on stdout, printed only once bound, so scripts can wait for it and read the URL.
    println!("demo upstream listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
