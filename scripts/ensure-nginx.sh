#!/usr/bin/env bash
# Makes sure an nginx binary is available for `make bench` (the reference reverse proxy).
# Installs Debian's nginx-light when missing; runs `apt-get update` only if the first install fails.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure-nginx: installing nginx-light" >&2
if ! $SUDO apt-get install -y --no-install-recommends nginx-light >/dev/null; then
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends nginx-light >/dev/null
fi

# The package starts a system nginx on :80 via its postinst where an init system exists; the bench
# runs its own instance with a generated config, so a stray system one is only noise. Stop it if it
# was started (best effort: containers usually have no init system).
if [ -f /run/nginx.pid ]; then
    $SUDO /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
fi

command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
    echo "ensure-nginx: nginx still missing after install" >&2
    exit 1
}
