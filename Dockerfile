# syntax=docker/dockerfile:1.7
#
# ambient-migrate container image: a statically linked (musl) release binary on distroless/static, non-root.
#
#   docker build -t ambient-migrate .                              # the runner, with `rehearse` and `demo`
#   docker build --build-arg WITH_MESHSIM=false -t ambient-migrate:slim .  # the runner without the simulator
#   docker build --target ci -t ambient-migrate:ci .               # + busybox shell, for CI runners (GitLab)
#
# Stages: chef (toolchain) -> planner (dependency recipe) -> builder (cached dependency build, then the
# crate) -> ci (optional) -> runtime (default, last).

#
# Base images are pinned by tag (what it is) and digest (which build of it), so a rebuild uses the same
# bytes until someone bumps the pin in a reviewed commit. The digests are the multi-arch index digests the
# tags resolved to when pinned (taken from public Dockerfiles pinning the same tags; not pulled on our build
# machines, which have no Docker engine). To refresh one, resolve the tag and replace the digest:
#
#   docker buildx imagetools inspect rust:1.95-bookworm              # "Digest:" line
#   crane digest gcr.io/distroless/static-debian12:nonroot
#   crane digest gcr.io/distroless/static-debian12:debug-nonroot

ARG TARGET=x86_64-unknown-linux-musl

# Rust 1.95 (the toolchain the project is tested with; rust-version in Cargo.toml is the minimum).
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS chef
ARG TARGET
# bash with pipefail for every RUN of this stage and the stages built on it: a failing command on the left
# of a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# musl-tools: musl-gcc for C dependencies (aws-lc-sys, the rustls crypto provider); cmake and clang for
# aws-lc-sys builds that need them.
# Not pinned to versions (DL3008): bookworm's archive keeps only the current version of each package, so a
# pin such as cmake=3.25.1-1 stops resolving at the next Debian point release and breaks the build. The
# base image digest fixes the release the packages come from; these three are build tools, absent from
# the runtime image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools cmake clang \
    && rm -rf /var/lib/apt/lists/*
# cargo-chef pinned (its --locked dependency tree with it), so the recipe format cannot change under us.
RUN rustup target add "${TARGET}" && cargo install cargo-chef --locked --version 0.1.78
# The shipped binary is built with whole-program LTO and one codegen unit: less code, so fewer resident code
# pages (fault-around maps code 64 KiB at a time): at 1,000 namespaces the runner's RssFile fell from 26.4
# to 21.1 MiB and its CPU did not go up (BENCHMARKS.md §2b). Set here, for the cook and the build alike,
# rather than in Cargo.toml's release profile: it doubles a release build's time, which every local
# `cargo run --release` would pay.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=musl-gcc \
    CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG TARGET
# The `demo` cargo feature embeds meshsim (the simulated cluster) in the binary: `rehearse` (the first
# stage of the CI examples) and `demo` need it, so it is on by default; `false` builds the runner alone.
ARG WITH_MESHSIM=true
COPY --from=planner /src/recipe.json recipe.json
RUN if [ "${WITH_MESHSIM}" = "true" ]; then FEATURES=""; else FEATURES="--no-default-features"; fi \
    && cargo chef cook --release --target "${TARGET}" ${FEATURES} --recipe-path recipe.json
COPY . .
# Build, copy the binary under both names, and fail if it is not static (it must run on distroless/static):
# ldd lists "lib => path" lines only for a dynamic executable. No pipe, so SIGPIPE cannot hide a match.
RUN if [ "${WITH_MESHSIM}" = "true" ]; then FEATURES=""; else FEATURES="--no-default-features"; fi \
    && cargo build --release --locked --target "${TARGET}" ${FEATURES} --bin ambient-migrate \
    && mkdir -p /out \
    && cp "target/${TARGET}/release/ambient-migrate" /out/ambient-migrate \
    && cp "target/${TARGET}/release/ambient-migrate" /out/kubectl-ambient_migrate \
    && if [ "${WITH_MESHSIM}" = "true" ]; then \
         cargo build --release --locked --target "${TARGET}" -p meshsim --bin meshsim \
         && cp "target/${TARGET}/release/meshsim" /out/meshsim; \
       fi \
    && ldd_out="$(ldd /out/ambient-migrate 2>&1 || true)" \
    && case "${ldd_out}" in *"=>"*) echo "not a static binary: ${ldd_out}" >&2; exit 1;; esac

# Same binary plus busybox (`sh`), for CI systems that run scripts inside the job image (GitLab CI).
FROM gcr.io/distroless/static-debian12:debug-nonroot@sha256:d5563cc7f2f44313f332e91138cc8c6a158899afeeeab2fce3b0f9ccdb3cf9ee AS ci
COPY --from=builder /out/ /usr/local/bin/
# distroless's nonroot user, by number: Kubernetes' runAsNonRoot can only verify a numeric USER.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ambient-migrate"]

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab AS runtime
LABEL org.opencontainers.image.title="ambient-migrate" \
      org.opencontainers.image.description="Moves Istio namespaces from sidecars to ambient mode with health gates, backups and automatic rollback" \
      org.opencontainers.image.licenses="Apache-2.0"
# ambient-migrate, and the same binary under the kubectl plugin name (`kubectl ambient-migrate ...`).
COPY --from=builder /out/ /usr/local/bin/
# distroless's nonroot user (65532), numeric as above; ci/k8s/cronjob.yaml runs it with runAsUser: 65532.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ambient-migrate"]
CMD ["--help"]
