# Palisade container image: `docker build -t palisade .`
#
#   docker run -p 9000:9000 -v /srv/palisade:/data palisade serve --http-host 0.0.0.0 \
#       --keystores-path /data/keystores --keystores-passwords-path /data/passwords \
#       --database-url postgres://... --tls-cert-file /data/tls/server.pem --tls-key-file /data/tls/server.key
#
# /data must be writable by uid 10001 (`chown -R 10001 /srv/palisade`): the API token, the
# replica's record of what it signed and Key Manager imports are written there (--data-path).
# One volume per replica. Listen on 0.0.0.0 only with TLS or on a private network.
# Clients that reach the container by a name other than localhost (another container,
# a balancer) must be listed: --http-host-allowlist palisade,signer.internal (else 403).
FROM rust:1.90-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: a change to Palisade's code does not rebuild them.
# The workspace's other members (bench, testkit) only need their manifests and stubs here.
COPY Cargo.toml Cargo.lock build.rs ./
COPY bench/Cargo.toml bench/
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src bench/src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && touch src/lib.rs testkit/src/lib.rs \
    && cargo build --release --locked -p palisade --bin palisade \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p palisade --bin palisade

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data palisade \
    && mkdir -p /data && chown palisade /data && chmod 0700 /data
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
USER palisade
WORKDIR /data
ENV PALISADE_DATA_PATH=/data PALISADE_API_TOKEN_FILE=/data/api-token.txt
EXPOSE 9000
# Ready only when it can sign safely: a durable database commit within a second, keys loaded.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9000/readyz || exit 1
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["serve", "--http-host", "0.0.0.0"]
