# The operator image (`streammachine-operator:<version>`, the chart's image).
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t streammachine-operator:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streammachine-operator --bin streammachine-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/streammachine-operator /usr/local/bin/streammachine-operator
USER 65532
ENTRYPOINT ["/usr/local/bin/streammachine-operator"]
