# Multi-stage build of backup-gateway.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# .cargo/config.toml compiles SQLite with what the consistent snapshot needs.
COPY .cargo ./.cargo
COPY src ./src
RUN cargo build --release --locked --features jemalloc --bin backup-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/backup-gateway /usr/local/bin/backup-gateway
ENV GATEWAY_HTTP=0.0.0.0:8090 \
    GATEWAY_DIR=/pb_data
VOLUME ["/pb_data"]
EXPOSE 8090
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8090/api/health || exit 1
ENTRYPOINT ["backup-gateway"]
CMD ["serve"]
