# mcp-sentinel developer entry points; `make help` lists them.
#
# Builds share one target directory outside the clone, so several clones (and CI) reuse each
# other's compiled dependencies. Override with `make CARGO_TARGET_DIR=...`.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CARGO_TARGET_DIR ?= $(HOME)/.cache/mcp-sentinel/target
export CARGO_TARGET_DIR

BIN := $(CARGO_TARGET_DIR)/release/mcp-sentinel
DEMO_UPSTREAM := $(CARGO_TARGET_DIR)/release/examples/demo_upstream
CONFIG ?= examples/passthrough.yaml
UPSTREAM_LISTEN ?= 127.0.0.1:8080
LISTEN ?= 127.0.0.1:15080
ADMIN_LISTEN ?= 127.0.0.1:15090
IMAGE ?= mcp-sentinel:dev

.PHONY: help build run test services lint bench docker clean distclean deploy

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

build: ## release binary at $(CARGO_TARGET_DIR)/release/mcp-sentinel
	$(CARGO) build --release --bin mcp-sentinel

# The demo upstream runs in the background; the sentinel in the foreground. Ctrl-C stops both.
run: build ## demo upstream on :8080 behind the sentinel on :15080 (admin :15090)
	$(CARGO) build --release --example demo_upstream
	@up=""; \
	cleanup() { if [ -n "$$up" ]; then kill "$$up" 2>/dev/null || true; wait "$$up" 2>/dev/null || true; fi; }; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	"$(DEMO_UPSTREAM)" --listen $(UPSTREAM_LISTEN) & up=$$!; \
	host=$(UPSTREAM_LISTEN); \
	for _ in $$(seq 100); do \
		if (exec 3<>"/dev/tcp/$${host%:*}/$${host##*:}") 2>/dev/null; then break; fi; \
		kill -0 "$$up" 2>/dev/null || { echo "demo upstream exited" >&2; exit 1; }; \
		sleep 0.1; \
	done; \
	echo; \
	echo "demo upstream on http://$(UPSTREAM_LISTEN)/mcp (pid $$up); sentinel on http://$(LISTEN)/mcp, admin http://$(ADMIN_LISTEN)"; \
	echo "try:"; \
	echo "  curl -i http://$(LISTEN)/mcp -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \\"; \
	echo "    -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"curl\",\"version\":\"0\"}}}'"; \
	echo "  curl -s http://$(ADMIN_LISTEN)/readyz; curl -s http://$(ADMIN_LISTEN)/metrics | head"; \
	echo "Ctrl-C stops both."; \
	echo; \
	"$(BIN)" run --config $(CONFIG) --upstream http://$(UPSTREAM_LISTEN)/mcp \
		--listen $(LISTEN) --admin-listen $(ADMIN_LISTEN)

test: lint services ## lint, Kubernetes checks, then every test target with nextest (no fail-fast)
	scripts/k8s-check.sh
	$(CARGO) nextest run --all-targets --no-fail-fast

deploy: ## regenerate deploy/ from the Helm chart
	scripts/k8s-generate.sh

services: ## make sure Redis :6379 and PostgreSQL :5432 (db test) are up for the tests
	scripts/services.sh

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Not part of `test`: minutes long and meaningful only on a quiet machine. It measures the binary
# `make build` ships, copied aside first: `cargo bench` also builds (and puts at the same path) a
# variant with the dev-dependencies' features unified in (tokio test-util, parking_lot, ...).
# Settings: see benches/proxy/main.rs (BENCH_SECONDS, BENCH_ROUNDS, BENCH_TARGETS, ...).
# sentinel-jwt is a second sentinel with JWT auth against an IdP inside the bench process; its
# p99 bar at 64 connections adds a json cell at 64. sentinel-rl-memory and sentinel-rl-redis add
# a rate-limit rule on every call (the Redis one needs Redis on 127.0.0.1:6379: make services).
# sentinel-audit records every call to stdout and PostgreSQL (127.0.0.1:5432, db test: make
# services); the other sentinels run with audit off.
BENCH_SENTINEL := $(CARGO_TARGET_DIR)/bench/mcp-sentinel
bench: build ## direct vs sentinel (passthrough, JWT, rate-limited, audited) vs nginx, 1/32 (+64) connections
	scripts/ensure-nginx.sh
	mkdir -p "$(dir $(BENCH_SENTINEL))"
	cp "$(BIN)" "$(BENCH_SENTINEL).tmp" && mv -f "$(BENCH_SENTINEL).tmp" "$(BENCH_SENTINEL)"
	SENTINEL_BIN="$(BENCH_SENTINEL)" $(CARGO) bench --bench proxy

docker: ## container image $(IMAGE) (needs a Docker engine)
	docker build -t $(IMAGE) .

clean: ## this crate's outputs in the shared target dir (dependencies stay cached)
	$(CARGO) clean -p mcp-sentinel
	$(CARGO) clean -p mcp-sentinel --release

distclean: ## the whole shared target dir
	$(CARGO) clean
