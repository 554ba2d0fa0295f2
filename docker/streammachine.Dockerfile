# The streamer image (`streammachine:<version>`, what the chart's streamer.image and
# the operator's --default-image name). Build from the repository root:
#   docker build -f docker/streammachine.Dockerfile -t streammachine:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p streamer --bin streammachine

FROM debian:bookworm-slim
# coreutils (chown) stays: the Socket-mode init container uses it on the handoff directory.
RUN useradd --system --no-create-home --uid 10001 streammachine \
 && mkdir -p /var/lib/streammachine && chown 10001 /var/lib/streammachine
COPY --from=build /src/target/release/streammachine /usr/local/bin/streammachine
USER 10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["/usr/local/bin/streammachine"]
