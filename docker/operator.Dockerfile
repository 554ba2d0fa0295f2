# The operator image (`streammachine-operator:<version>`, the chart's image).
# Build from the repository root:
#
#   docker build -f docker/operator.Dockerfile -t streammachine-operator:0.1.0 .
#
# Without a registry (tests/k8s/images.sh): as docker/streammachine.Dockerfile says,
# with BINARIES=prebuilt and a local BASE.
ARG BUILDER=rust:1-bookworm
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM ${BUILDER} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streammachine-operator --bin streammachine-operator \
 && mkdir -p /out && cp target/release/streammachine-operator /out/

FROM scratch AS prebuilt
COPY target/release/streammachine-operator /out/streammachine-operator

FROM ${BINARIES} AS binaries

FROM ${BASE}
COPY --from=binaries --chmod=0755 /out/streammachine-operator /usr/local/bin/streammachine-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/streammachine-operator"]
