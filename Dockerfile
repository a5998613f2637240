# syntax=docker/dockerfile:1.7
#
# ambient-migrate container image: a statically linked (musl) release binary on distroless/static, non-root.
#
#   docker build -t ambient-migrate .                              # the runner only
#   docker build --build-arg WITH_MESHSIM=true -t ambient-migrate:demo .   # + `demo` and the meshsim binary
#   docker build --target ci -t ambient-migrate:ci .               # + busybox shell, for CI runners (GitLab)
#
# Stages: chef (toolchain) -> planner (dependency recipe) -> builder (cached dependency build, then the
# crate) -> ci (optional) -> runtime (default, last).

ARG RUST_VERSION=1
ARG TARGET=x86_64-unknown-linux-musl

FROM rust:${RUST_VERSION}-bookworm AS chef
ARG TARGET
# musl-tools: musl-gcc for C dependencies (aws-lc-sys, the rustls crypto provider); cmake and clang for
# aws-lc-sys builds that need them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools cmake clang \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add "${TARGET}" && cargo install cargo-chef --locked
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG TARGET
# The `demo` cargo feature embeds meshsim (the simulated cluster) in the binary; off unless asked for.
ARG WITH_MESHSIM=false
COPY --from=planner /src/recipe.json recipe.json
RUN if [ "${WITH_MESHSIM}" = "true" ]; then FEATURES=""; else FEATURES="--no-default-features"; fi \
    && cargo chef cook --release --target "${TARGET}" ${FEATURES} --recipe-path recipe.json
COPY . .
# Build, copy the binary under both names, and fail if it is not static (it must run on distroless/static).
RUN if [ "${WITH_MESHSIM}" = "true" ]; then FEATURES=""; else FEATURES="--no-default-features"; fi \
    && cargo build --release --locked --target "${TARGET}" ${FEATURES} --bin ambient-migrate \
    && mkdir -p /out \
    && cp "target/${TARGET}/release/ambient-migrate" /out/ambient-migrate \
    && cp "target/${TARGET}/release/ambient-migrate" /out/kubectl-ambient_migrate \
    && if [ "${WITH_MESHSIM}" = "true" ]; then \
         cargo build --release --locked --target "${TARGET}" -p meshsim --bin meshsim \
         && cp "target/${TARGET}/release/meshsim" /out/meshsim; \
       fi \
    && ! ldd /out/ambient-migrate 2>/dev/null | grep -q '=>'

# Same binary plus busybox (`sh`), for CI systems that run scripts inside the job image (GitLab CI).
FROM gcr.io/distroless/static-debian12:debug-nonroot AS ci
COPY --from=builder /out/ /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/ambient-migrate"]

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="ambient-migrate" \
      org.opencontainers.image.description="Moves Istio namespaces from sidecars to ambient mode with health gates, backups and automatic rollback" \
      org.opencontainers.image.licenses="Apache-2.0"
# ambient-migrate, and the same binary under the kubectl plugin name (`kubectl ambient-migrate ...`).
COPY --from=builder /out/ /usr/local/bin/
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/ambient-migrate"]
CMD ["--help"]
