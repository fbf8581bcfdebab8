#!/usr/bin/env bash
# The official-SDK MCP servers that tests/stdio_peers.rs runs over stdio behind the sentinel,
# pinned and installed into the tools cache (scripts/tools.sh) when missing:
#   $MCP_PEERS_DIR/python  a virtualenv with the Python SDK, `mcp` 2.3.0 from PyPI, every
#                          dependency pinned (runs tests/fixtures/stdio/python_server.py), and
#                          `prometheus_client` 0.26.0, whose strict OpenMetrics parser reads the
#                          admin port's /metrics in tests/exemplars.rs
#   $MCP_PEERS_DIR/npm     @modelcontextprotocol/server-everything 2026.8.31 from npm, every
#                          dependency locked by tests/fixtures/stdio/npm/package-lock.json;
#                          run as `node $MCP_PEERS_DIR/npm/node_modules/@modelcontextprotocol/
#                          server-everything/dist/index.js stdio`
# MCP_PEERS_DIR defaults to $TOOLS_DIR/mcp-peers; the tests look in the same place. Fails, saying
# why, when either cannot be installed: the tests must not pass by skipping.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOLS_LOG_PREFIX=mcp-peers
# shellcheck source=scripts/tools.sh
source scripts/tools.sh
MCP_PEERS_DIR=${MCP_PEERS_DIR:-$TOOLS_DIR/mcp-peers}

PYTHON_MCP_VERSION=2.3.0
PROMETHEUS_CLIENT_VERSION=0.26.0
PYTHON_MCP_PINS=(
    "mcp==$PYTHON_MCP_VERSION"
    annotated-types==0.8.0
    anyio==4.16.0
    attrs==26.1.0
    cffi==2.1.1
    click==8.5.1
    cryptography==51.0.1
    h11==0.16.0
    httpcore2==2.17.0
    httpx2==2.17.0
    idna==3.21
    jsonschema==4.26.0
    jsonschema-specifications==2025.9.1
    mcp-types==2.3.0
    opentelemetry-api==1.45.3
    "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
    pycparser==3.12
    pydantic==2.14.4
    pydantic_core==2.50.5
    PyJWT==2.15.1
    python-multipart==0.0.34
    referencing==0.37.0
    rpds-py==2026.9.1
    sse-starlette==3.7.1
    starlette==1.10.0
    truststore==0.10.5
    typing-inspection==0.4.5
    typing_extensions==4.16.0
    uvicorn==0.55.0
)
EVERYTHING_PACKAGE=@modelcontextprotocol/server-everything
EVERYTHING_VERSION=2026.8.31
EVERYTHING_LOCK=tests/fixtures/stdio/npm

python_mcp_ok() {
    "$MCP_PEERS_DIR/python/bin/python" -c "
import importlib.metadata, mcp.server.mcpserver, prometheus_client.openmetrics.parser
assert importlib.metadata.version('mcp') == '$PYTHON_MCP_VERSION'
assert importlib.metadata.version('prometheus_client') == '$PROMETHEUS_CLIENT_VERSION'"
}

everything_ok() {
    node -e "
const p = require('$MCP_PEERS_DIR/npm/node_modules/$EVERYTHING_PACKAGE/package.json');
if (p.version !== '$EVERYTHING_VERSION') process.exit(1);
if (Number(process.versions.node.split('.')[0]) < 18) process.exit(2);"
}

command -v node >/dev/null || tools_die "node is needed to run $EVERYTHING_PACKAGE (Debian: apt-get install nodejs)"
tools_venv "$MCP_PEERS_DIR/python" python_mcp_ok "${PYTHON_MCP_PINS[@]}"
tools_npm "$MCP_PEERS_DIR/npm" "$EVERYTHING_LOCK" everything_ok
tools_log "ready: mcp $PYTHON_MCP_VERSION and prometheus_client $PROMETHEUS_CLIENT_VERSION in $MCP_PEERS_DIR/python, $EVERYTHING_PACKAGE $EVERYTHING_VERSION in $MCP_PEERS_DIR/npm"
