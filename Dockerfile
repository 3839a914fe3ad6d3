# Multi-stage build of backup-gateway. The build stage copies exactly what `cargo build`
# reads (.dockerignore keeps everything else out of the context); CI replays this stage
# without a container engine (scripts/replay-docker-build.py), so a missing file fails CI.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# .cargo/config.toml compiles SQLite with what the consistent snapshot needs.
COPY .cargo ./.cargo
COPY src ./src
# The backups page, embedded in the binary (src/api/ui.rs).
COPY ui ./ui
# Default features: jemalloc, as every build of the gateway.
RUN cargo build --release --locked --bin backup-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway \
    && mkdir /pb_data \
    && chown gateway:gateway /pb_data \
    && chmod 0700 /pb_data
COPY --from=build /src/target/release/backup-gateway /usr/local/bin/backup-gateway
ENV GATEWAY_HTTP=0.0.0.0:8090 \
    GATEWAY_DIR=/pb_data
# Unprivileged: a mounted data directory must be writable by uid 10001 (a named volume
# is, from this image's /pb_data); to back up a directory owned by another user, run the
# container as that user (`user: "1000:1000"` in compose).
USER 10001:10001
VOLUME ["/pb_data"]
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8090/api/health || exit 1
ENTRYPOINT ["backup-gateway"]
CMD ["serve"]
