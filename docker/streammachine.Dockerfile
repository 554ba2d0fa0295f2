# The streamer image (`streammachine:<version>`, what the chart's streamerImage and
# the operator's --default-image name). Build from the repository root:
#
#   docker build -f docker/streammachine.Dockerfile -t streammachine:0.1.0 .
#
# Without a registry (tests/k8s/images.sh does this): build the binary with cargo,
# then take it from the context instead of the `build` stage, on a local base
# (any Debian 12 root file system with glibc and coreutils):
#
#   cargo build --release --locked -p streamer --bin streammachine
#   buildah bud --build-arg BASE=localhost/streammachine-base:bookworm \
#     --build-arg BINARIES=prebuilt -f docker/streammachine.Dockerfile -t streammachine:0.1.0 .
ARG BUILDER=rust:1-bookworm
ARG BASE=debian:bookworm-slim
ARG BINARIES=build

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streamer --bin streammachine \
 && mkdir -p /out && cp target/release/streammachine /out/

# The binary cargo already built on the host (`.dockerignore` lets only it in).
FROM scratch AS prebuilt
COPY target/release/streammachine /out/streammachine

FROM ${BINARIES} AS binaries

FROM ${BASE}
# No RUN: the image builds without running anything in the base (no user
# database edit; the operator's pods run as 65532, plain docker as 10001).
# coreutils (chown) stays in the base: the Socket-mode init container uses it.
COPY --from=binaries --chmod=0755 /out/streammachine /usr/local/bin/streammachine
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/streammachine"]
