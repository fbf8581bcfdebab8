//! Where scripts/mcp-peers.sh installs the pinned programs of other languages the tests run: the
//! Python virtualenv (the MCP SDK, `prometheus_client`) and server-everything (npm). A missing
//! one fails the test, saying how to install it: nothing passes by skipping.

use std::path::PathBuf;

/// `$MCP_PEERS_DIR`, else `$TOOLS_DIR/mcp-peers`, else
/// `$HOME/.cache/mcp-sentinel/tools/mcp-peers`.
pub fn peers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCP_PEERS_DIR") {
        return dir.into();
    }
    let tools = std::env::var_os("TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/mcp-sentinel/tools")
        });
    tools.join("mcp-peers")
}

/// `path` as a string, asserting it is there.
pub fn installed(path: PathBuf, what: &str) -> String {
    assert!(
        path.exists(),
        "{what} is not installed at {}: run scripts/mcp-peers.sh (make test does)",
        path.display()
    );
    path.to_str().expect("UTF-8 path").to_owned()
}

/// The virtualenv's Python.
pub fn python(what: &str) -> String {
    installed(peers_dir().join("python/bin/python"), what)
}
