# syntax=docker/dockerfile:1
#
# polysocket: router and polysocketd in one image.
#
#   docker build -t polysocket:0.1.0 .          # Docker >= 23 (BuildKit)
#   docker run --rm polysocket:0.1.0 --help                                  # the router
#   docker run --rm --entrypoint /usr/local/bin/polysocketd polysocket:0.1.0 --help
#
# The Kubernetes manifests in k8s/ refer to it as polysocket:<workspace
# version> and set `command` explicitly for each service. CI builds this file
# unchanged without any container registry: scripts/image.sh.

# ---- build ------------------------------------------------------------------
# Any Rust >= 1.88 (edition 2024). TLS is rustls with ring: a C compiler is all
# it needs, and the full bookworm image has gcc (no cmake, no OpenSSL).
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder

WORKDIR /src
# The whole workspace (common, http, router, polysocketd, and the tests and
# bench crates, which must be present for the workspace to resolve);
# .dockerignore keeps target/, .git/ and what is not a build input (docs, k8s/,
# scripts/, ...) out of the build context.
COPY . .

# Link-time optimization over all crates, one codegen unit: the binaries come
# out a fifth smaller for about the same build CPU time (their speed with it
# is not benchmarked). Build arguments reach cargo as environment variables,
# which override Cargo.toml's [profile.release]:
# `--build-arg CARGO_PROFILE_RELEASE_LTO=false` turns it off.
ARG CARGO_PROFILE_RELEASE_LTO=fat
ARG CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
# Cache mounts (BuildKit, buildah): crates and target/ outlive the build, so a
# rebuild after a source change compiles only what changed, and neither lands
# in a layer. `install -s` strips the symbol tables (release builds carry no
# debug info already). Stripped and with LTO, both binaries come to 15.1 MB and
# the image to about 39 MB, under its 40 MB budget (scripts/image.sh checks it).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p router -p polysocketd \
 && install -D -s -m 0755 target/release/router /out/router \
 && install -D -s -m 0755 target/release/polysocketd /out/polysocketd

# ---- runtime ----------------------------------------------------------------
# glibc + libgcc + CA certificates, no shell, no package manager; runs as the
# unprivileged user 65532 ("nonroot"). Both binaries write nothing to disk, so
# a read-only root filesystem works.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/router /usr/local/bin/router
COPY --from=builder /out/polysocketd /usr/local/bin/polysocketd

ENV RUST_LOG=info
USER 65532:65532
# 8080: router (/create), 8081: polysocketd (/s, /j). Both: /healthz, /readyz, /metrics.
EXPOSE 8080 8081

ENTRYPOINT ["/usr/local/bin/router"]
