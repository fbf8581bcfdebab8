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
# `make run` builds with the `local` profile (Cargo.toml: release semantics, not optimised):
# minutes faster from cold than the shipped `release` profile, which `build`, `bench` and the
# image keep.
RUN_BIN := $(CARGO_TARGET_DIR)/local/mcp-sentinel
DEMO_UPSTREAM := $(CARGO_TARGET_DIR)/local/examples/demo_upstream
CONFIG ?= examples/passthrough.yaml
UPSTREAM_LISTEN ?= 127.0.0.1:8080
LISTEN ?= 127.0.0.1:15080
ADMIN_LISTEN ?= 127.0.0.1:15090
# Where `make run` writes the audit records (the sentinel's stdout) and the upstream's log.
RUN_DIR ?= $(CARGO_TARGET_DIR)/local/demo
IMAGE ?= mcp-sentinel:dev

.PHONY: help build run test services lint bench docker clean distclean deploy schema

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) \
		| sed $(foreach v,CARGO_TARGET_DIR UPSTREAM_LISTEN LISTEN ADMIN_LISTEN IMAGE,-e 's|$$($(v))|$($(v))|g') \
		| awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  settings: CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)"
	@echo "            UPSTREAM_LISTEN=$(UPSTREAM_LISTEN) LISTEN=$(LISTEN) ADMIN_LISTEN=$(ADMIN_LISTEN) CONFIG=$(CONFIG)"

build: ## release binary at $(CARGO_TARGET_DIR)/release/mcp-sentinel
	$(CARGO) build --release --bin mcp-sentinel

# One cargo invocation for both binaries, so the crates they share are compiled once, with one
# feature set. scripts/run-demo.sh starts them and fails plainly when a port is taken or either
# process dies; the demo upstream in the background, the sentinel's logs on this terminal.
run: ## demo upstream on $(UPSTREAM_LISTEN) behind the sentinel on $(LISTEN) (admin $(ADMIN_LISTEN))
	$(CARGO) build --profile local --bin mcp-sentinel --example demo_upstream
	@SENTINEL_BIN="$(RUN_BIN)" DEMO_UPSTREAM_BIN="$(DEMO_UPSTREAM)" CONFIG="$(CONFIG)" \
		UPSTREAM_LISTEN="$(UPSTREAM_LISTEN)" LISTEN="$(LISTEN)" ADMIN_LISTEN="$(ADMIN_LISTEN)" \
		RUN_DIR="$(RUN_DIR)" scripts/run-demo.sh

# Incremental compilation off for these builds: from cold it only adds gigabytes of cache
# (interactive `cargo test` keeps it).
test: export CARGO_INCREMENTAL = 0
test: lint services ## lint, Kubernetes checks, then every test target with nextest (no fail-fast)
	scripts/k8s-check.sh
	scripts/mcp-peers.sh  # pinned Python SDK + server-everything, run by tests/stdio_peers.rs
	$(CARGO) build --example demo_upstream --example demo_stdio_upstream  # run by the tests
	$(CARGO) nextest run --all-targets --no-fail-fast

deploy: ## regenerate deploy/ from the Helm chart
	scripts/k8s-generate.sh

schema: ## regenerate the chart's schema for sidecar.config from the config reader
	scripts/schema-generate.sh

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
# services). sentinel-shipped is examples/passthrough.yaml as shipped (audit to stdout, a pipe);
# sentinel-full is JWT + 1,000-rule policy + Redis rate limit + audit to stdout and PostgreSQL;
# `sentinel` and the other variants run with audit off. sentinel-stdio runs the bench's upstream
# as its stdio MCP server (`run -- <bench binary> --serve-stdio-upstream`, a child per session).
# sentinel-otel-100 and sentinel-otel-10 add tracing (every new trace sampled, or one in ten),
# exported over OTLP/HTTP to a receiver in the bench process: tracing's cost over `sentinel`.
# The workloads `streams` (1,000 SSE streams held open) and `large` (eight 10 MiB results to
# slow readers) measure memory on fresh processes; issue 16's bars close the run.
BENCH_SENTINEL := $(CARGO_TARGET_DIR)/bench/mcp-sentinel
bench: build ## direct vs sentinel (as shipped, full pipeline, and variants) vs nginx; memory scenarios
	scripts/ensure-nginx.sh
	mkdir -p "$(dir $(BENCH_SENTINEL))"
	cp "$(BIN)" "$(BENCH_SENTINEL).tmp" && mv -f "$(BENCH_SENTINEL).tmp" "$(BENCH_SENTINEL)"
	SENTINEL_BIN="$(BENCH_SENTINEL)" $(CARGO) bench --bench proxy

docker: ## container image $(IMAGE) (needs a Docker engine), with OCI labels
	@docker info >/dev/null 2>&1 || { echo "make docker: no Docker engine answers here (docker info failed)" >&2; exit 1; }
	docker build -t $(IMAGE) \
		--build-arg VERSION=$$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

clean: ## this crate's outputs in the shared target dir (dependencies stay cached)
	$(CARGO) clean -p mcp-sentinel
	$(CARGO) clean -p mcp-sentinel --release

distclean: ## the whole shared target dir
	$(CARGO) clean
