//! The test bed's MCP upstream on stdin/stdout (rmcp's stdio transport): the stdio server of
//! tests and benchmarks, run by the sentinel as its child.
//!
//! `mcp-sentinel run --config examples/passthrough.yaml -- target/.../demo_stdio_upstream`

#[allow(dead_code)]
#[path = "../tests/common/upstream.rs"]
mod upstream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = upstream::serve_stdio().await {
        eprintln!("demo stdio upstream: {e}");
        std::process::exit(1);
    }
}
