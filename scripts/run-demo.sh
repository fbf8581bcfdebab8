#!/usr/bin/env bash
# `make run`: the demo MCP upstream in the background, the sentinel in front of it, until Ctrl-C.
#
# The upstream counts as started only once it has printed the address it bound (it prints after
# binding, and exits non-zero when it cannot bind): probing the port instead would take another
# program already listening there for ours. If either process dies, the other is stopped and the
# script exits non-zero with a plain message.
#
# Settings (environment; the Makefile passes its variables of the same names):
#   SENTINEL_BIN, DEMO_UPSTREAM_BIN  the two binaries (required)
#   CONFIG           sentinel config            [examples/passthrough.yaml]
#   UPSTREAM_LISTEN  demo upstream address      [127.0.0.1:8080]
#   LISTEN           sentinel traffic address   [127.0.0.1:15080]
#   ADMIN_LISTEN     sentinel admin address     [127.0.0.1:15090]
#   RUN_DIR          audit records (the sentinel's stdout) and the upstream's log go here
#   STARTUP_SECONDS  how long each process may take to come up [20]
set -euo pipefail

: "${SENTINEL_BIN:?set SENTINEL_BIN to the mcp-sentinel binary}"
: "${DEMO_UPSTREAM_BIN:?set DEMO_UPSTREAM_BIN to the demo_upstream binary}"
CONFIG=${CONFIG:-examples/passthrough.yaml}
UPSTREAM_LISTEN=${UPSTREAM_LISTEN:-127.0.0.1:8080}
LISTEN=${LISTEN:-127.0.0.1:15080}
ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:15090}
RUN_DIR=${RUN_DIR:-${TMPDIR:-/tmp}/mcp-sentinel-run}
STARTUP_SECONDS=${STARTUP_SECONDS:-20}

say() { echo "make run: $*" >&2; }

mkdir -p "$RUN_DIR"
audit_file="$RUN_DIR/audit.jsonl"
upstream_out="$RUN_DIR/upstream.out"
upstream_log="$RUN_DIR/upstream.log"
: >"$audit_file"
: >"$upstream_out"

up=""
sentinel=""
stop() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
}
cleanup() {
    stop "$sentinel"
    stop "$up"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One attempt at GET /readyz on HOST:PORT with bash's /dev/tcp; true on a 200.
ready() {
    local host=${1%:*} port=${1##*:} status
    host=${host#[}
    host=${host%]}
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
        read -r -t 2 _ status _ <&3 || exit 1
        [ "$status" = 200 ]
    ) 2>/dev/null
}

# --- the demo upstream -------------------------------------------------------------------------
# In its own session: Ctrl-C goes to the sentinel (which drains) and this script, which stops the
# upstream afterwards; an upstream that exits first is a failure, never mistaken for Ctrl-C.
setsid "$DEMO_UPSTREAM_BIN" --listen "$UPSTREAM_LISTEN" >"$upstream_out" 2>"$upstream_log" &
up=$!
url=""
for _ in $(seq $((STARTUP_SECONDS * 10))); do
    url=$(sed -n 's/^demo upstream listening on //p' "$upstream_out")
    [ -n "$url" ] && break
    if ! kill -0 "$up" 2>/dev/null; then
        status=0
        wait "$up" || status=$?
        up=""
        cat "$upstream_log" >&2
        say "the demo upstream could not start on $UPSTREAM_LISTEN (exit status $status)."
        say "Is another program using that port? Pick a free one: make run UPSTREAM_LISTEN=127.0.0.1:<port>"
        exit 1
    fi
    sleep 0.1
done
if [ -z "$url" ]; then
    say "the demo upstream (pid $up) did not report listening on $UPSTREAM_LISTEN within ${STARTUP_SECONDS}s; its log: $upstream_log"
    exit 1
fi

# --- the sentinel: logs (stderr) on this terminal, audit records (stdout) in a file -------------
"$SENTINEL_BIN" run --config "$CONFIG" --upstream "$url" \
    --listen "$LISTEN" --admin-listen "$ADMIN_LISTEN" >"$audit_file" &
sentinel=$!
is_ready=""
for _ in $(seq $((STARTUP_SECONDS * 10))); do
    if ! kill -0 "$sentinel" 2>/dev/null; then break; fi
    if ready "$ADMIN_LISTEN"; then
        is_ready=1
        break
    fi
    sleep 0.1
done
# A /readyz answered by another program on ADMIN_LISTEN does not count: the sentinel exits when
# it cannot bind, so it must still be alive after answering.
sleep 0.2
if ! kill -0 "$sentinel" 2>/dev/null; then
    status=0
    wait "$sentinel" || status=$?
    sentinel=""
    say "the sentinel exited (status $status) before it was ready; its error is above."
    say "If $LISTEN or $ADMIN_LISTEN is taken, pick free ones: make run LISTEN=127.0.0.1:<port> ADMIN_LISTEN=127.0.0.1:<port>"
    exit 1
fi
if [ -z "$is_ready" ]; then
    say "the sentinel (pid $sentinel) is not ready after ${STARTUP_SECONDS}s: curl -s http://$ADMIN_LISTEN/readyz says why"
    exit 1
fi

cat <<EOF

demo upstream: $url (pid $up; log $upstream_log)
sentinel:      http://$LISTEN/mcp (pid $sentinel; admin http://$ADMIN_LISTEN)
audit records: tail -f $audit_file
try it (more in the README, "Try it"):
  curl -si http://$LISTEN/mcp -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}'
  curl -s http://$ADMIN_LISTEN/readyz
Ctrl-C stops both.

EOF

# Whichever exits first ends the run; the other is stopped by the EXIT trap.
status=0
wait -n "$up" "$sentinel" || status=$?
if ! kill -0 "$up" 2>/dev/null; then
    up=""
    say "the demo upstream exited (status $status); stopping the sentinel. Its log: $upstream_log"
    exit 1
fi
sentinel=""
say "the sentinel exited (status $status); stopping the demo upstream."
exit 1
