# syntax=docker/dockerfile:1
#
# polysocket: router and polysocketd in one image.
#
#   docker build -t polysocket:latest .
#   docker run --rm polysocket:latest --help                                  # the router
#   docker run --rm --entrypoint /usr/local/bin/polysocketd polysocket:latest --help
#
# The Kubernetes manifests in k8s/ set `command` explicitly for each service.

# ---- build ------------------------------------------------------------------
# Any Rust >= 1.88 (edition 2024). TLS is rustls with ring: a C compiler is all
# it needs, and the full bookworm image has gcc (no cmake, no OpenSSL).
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS builder

WORKDIR /src
# The whole workspace (common, router, polysocketd and the tests crate, which
# must be present for the workspace to resolve); .dockerignore keeps target/
# and .git/ out of the build context.
COPY . .

RUN cargo build --release --locked -p router -p polysocketd \
 && install -D -m 0755 target/release/router /out/router \
 && install -D -m 0755 target/release/polysocketd /out/polysocketd

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
