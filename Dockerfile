# syncgate: multi-stage build; the runtime image holds one static-ish binary and a non-root user.
# Configuration comes only from the environment (see the README's table).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
COPY loadtest loadtest
# fuzz is a workspace member: cargo needs its manifest (and targets) to load the workspace.
COPY fuzz/Cargo.toml fuzz/Cargo.toml
COPY fuzz/src fuzz/src
COPY migrations migrations
RUN cargo build --release --locked --bin syncgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/syncgate --create-home syncgate
COPY --from=build /src/target/release/syncgate /usr/local/bin/syncgate
USER syncgate
WORKDIR /var/lib/syncgate
ENV SYNCGATE_LISTEN=0.0.0.0:8080 \
    SYNCGATE_DATA_DIR=/var/lib/syncgate \
    SYNCGATE_LOG_FORMAT=json
# The SQLite database (syncgate.db) and the development JWT secret (jwt_secret) live here; keep it on
# a volume so they survive a new container. Not needed with PostgreSQL and a configured key.
VOLUME ["/var/lib/syncgate"]
EXPOSE 8080
# On the admin listener when one is set (the main one may expect a PROXY header), else on the main
# one; a wildcard host is asked on loopback.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD addr="${SYNCGATE_ADMIN_LISTEN:-${SYNCGATE_LISTEN:-0.0.0.0:8080}}"; host="${addr%:*}"; \
      case "$host" in 0.0.0.0|"") host=127.0.0.1 ;; "[::]") host="[::1]" ;; esac; \
      curl -fsS "http://$host:${addr##*:}/health" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/syncgate"]
