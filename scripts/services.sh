#!/usr/bin/env bash
# Ensures the services the integration tests use are up on 127.0.0.1:
#   Redis      :6379
#   PostgreSQL :5432, database `test`, trust auth for local TCP (user `postgres`, no password)
# and the toolchains of the differential parser tests (python3, node, go).
# Running ones are reused; otherwise they are installed (apt) and started. Exits non-zero, saying
# why, when one cannot come up: tests that need a service must not pass by skipping.
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
PG_DB=test

log() { echo "services: $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

APT_UPDATED=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing $*"
    if ! $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null; then
        if [ "$APT_UPDATED" -eq 0 ]; then
            $SUDO apt-get update >/dev/null
            APT_UPDATED=1
        fi
        $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null
    fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local tries=$((seconds * 5))
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s"
}

# ---- Redis -------------------------------------------------------------------------------------

redis_ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        # No client installed: speak RESP over bash's /dev/tcp.
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$REDIS_PORT && printf 'PING\r\n' >&3 && head -c 5 <&3" 2>/dev/null |
            grep -q '+PONG'
    fi
}

ensure_redis() {
    if redis_ping; then
        log "redis: reusing the one on 127.0.0.1:$REDIS_PORT"
        return
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    log "redis: starting on 127.0.0.1:$REDIS_PORT"
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log ||
        die "redis-server failed to start (see /var/log/redis/ci.log)"
    wait_for 15 "redis on 127.0.0.1:$REDIS_PORT" redis_ping
}

# ---- PostgreSQL --------------------------------------------------------------------------------

pg_ready() {
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
}

pg_psql() {
    psql -X -w -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

pg_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres() {
    if ! command -v pg_isready >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
    fi
    if ! pg_ready && { ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(pg_version)" ]; }; then
        apt_install postgresql
    fi

    local version
    version=$(pg_version)
    if pg_ready; then
        log "postgres: reusing the one on 127.0.0.1:$PG_PORT"
    else
        [ -n "$version" ] || die "no PostgreSQL cluster under /etc/postgresql"
        [ -d "/etc/postgresql/$version/main" ] || $SUDO pg_createcluster "$version" main
        log "postgres: starting cluster $version/main"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
            die "pg_ctlcluster $version main start failed (see /var/log/postgresql/)"
        wait_for 30 "postgres on 127.0.0.1:$PG_PORT" pg_ready
    fi

    if ! pg_psql -d postgres -tAc 'select 1' >/dev/null 2>&1; then
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        [ -n "$version" ] && [ -f "$hba" ] ||
            die "cannot connect as postgres without a password, and no local pg_hba.conf to fix"
        log "postgres: allowing trust auth for local TCP in $hba"
        $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        wait_for 10 "trust auth for postgres@127.0.0.1" pg_psql -d postgres -tAc 'select 1'
    fi

    if [ "$(pg_psql -d postgres -tAc "select 1 from pg_database where datname = '$PG_DB'")" != "1" ]; then
        log "postgres: creating database $PG_DB"
        pg_psql -d postgres -c "create database \"$PG_DB\"" >/dev/null
    fi
    pg_psql -d "$PG_DB" -tAc 'select 1' >/dev/null || die "database $PG_DB is not usable"
}

# ---- Parsers of other languages ----------------------------------------------------------------
# tests/differential.rs runs upstreams in Python, Node and Go (standard libraries only).
ensure_parsers() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    command -v node >/dev/null 2>&1 || apt_install nodejs
    command -v go >/dev/null 2>&1 || apt_install golang-go
    python3 --version >/dev/null && node --version >/dev/null && go version >/dev/null ||
        die "python3, node and go are needed by tests/differential.rs"
}

ensure_redis
ensure_postgres
ensure_parsers
log "ready: redis 127.0.0.1:$REDIS_PORT, postgres 127.0.0.1:$PG_PORT/$PG_DB"
