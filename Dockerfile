# syntax=docker/dockerfile:1
# mcp-sentinel as a static binary on distroless: no shell, no libc, numeric non-root user.
#   docker build -t mcp-sentinel:dev .      (or: make docker)

FROM rust:1.95-bookworm AS build
# musl gives a fully static binary; musl-tools (musl-gcc, which the cc crate picks for musl
# targets) covers crates that compile C.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" --bin mcp-sentinel \
 && cp "target/$target/release/mcp-sentinel" /mcp-sentinel
# Smoke check: the binary starts with no loader and no libraries around it.
RUN ["/mcp-sentinel", "--version"]

FROM gcr.io/distroless/static-debian12:nonroot
# OCI annotations (`make docker` passes the version and the commit).
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mcp-sentinel" \
      org.opencontainers.image.description="Security gateway sidecar for MCP servers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /mcp-sentinel /mcp-sentinel
# distroless "nonroot"; numeric so Kubernetes runAsNonRoot can verify it.
USER 65532:65532
ENTRYPOINT ["/mcp-sentinel"]
CMD ["run"]
