#!/usr/bin/env bash
# Sourced by the scripts that install pinned tools from package registries into a cache
# directory outside the clone (shared like the cargo target dir): scripts/k8s-tools.sh and
# scripts/mcp-peers.sh. An install runs only when what is there fails its check or was installed
# from other pins; an install that fails, or after which the check still fails, exits saying why.
#
#   TOOLS_DIR          the cache ($HOME/.cache/mcp-sentinel/tools)
#   TOOLS_LOG_PREFIX   what log lines start with (set by the sourcing script)

TOOLS_DIR=${TOOLS_DIR:-$HOME/.cache/mcp-sentinel/tools}
TOOLS_LOG_PREFIX=${TOOLS_LOG_PREFIX:-tools}

tools_log() { echo "$TOOLS_LOG_PREFIX: $*" >&2; }
tools_die() {
    tools_log "ERROR: $*"
    exit 1
}

# tools_npm DIR WHAT CHECK: unless the command CHECK succeeds, installs into DIR with npm. WHAT
# is `name@version`, or a folder holding package.json and package-lock.json, installed with
# `npm ci` (every dependency at its locked version; a changed lock file reinstalls).
tools_npm() {
    local dir=$1 what=$2 check=$3
    if "$check" >/dev/null 2>&1 &&
        { [ ! -d "$what" ] || cmp -s "$what/package-lock.json" "$dir/package-lock.json"; }; then
        return 0
    fi
    command -v npm >/dev/null || tools_die "npm is needed to install $what"
    tools_log "installing $what into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    local flags=(--prefix "$dir" --no-audit --no-fund --loglevel=error)
    if [ -d "$what" ]; then
        cp "$what/package.json" "$what/package-lock.json" "$dir/" &&
            npm ci "${flags[@]}" >/dev/null ||
            tools_die "npm ci of $what/package-lock.json into $dir failed"
    else
        npm install "${flags[@]}" "$what" >/dev/null || tools_die "npm install $what failed"
    fi
    "$check" || tools_die "$check fails after installing $what into $dir"
}

# tools_venv VENV CHECK PINS...: unless the command CHECK succeeds and VENV was made from these
# PINS (`name==version`, every dependency pinned), makes a fresh virtualenv at VENV and
# pip-installs PINS.
tools_venv() {
    local venv=$1 check=$2
    shift 2
    local pins
    pins=$(printf '%s\n' "$@")
    if "$check" >/dev/null 2>&1 && [ "$(cat "$venv/pins.txt" 2>/dev/null)" = "$pins" ]; then
        return 0
    fi
    command -v python3 >/dev/null || tools_die "python3 is needed to install $1"
    tools_log "installing $1 into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || tools_die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" ||
        tools_die "pip install $* failed"
    echo "$pins" >"$venv/pins.txt"
    "$check" || tools_die "$check fails after installing $1 into $venv"
}
