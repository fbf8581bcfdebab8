//! mcp-sentinel: a security gateway sidecar for MCP servers. The library holds everything; the
//! `mcp-sentinel` binary parses arguments and calls in.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bindings;
pub mod config;
pub mod denial;
pub mod glob;
pub mod identity;
pub mod integrity;
pub mod k8s;
pub mod mcp;
pub mod metrics;
pub mod otel;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod readiness;
pub mod reload;
pub mod server;
pub mod stdio;
pub mod telemetry;
pub mod tls;
pub mod yaml;

pub use app::{Sentinel, StartError};
pub use config::Config;

/// Exit code for an invalid config: sysexits' EX_USAGE.
pub const EXIT_CONFIG: i32 = 64;
