# Palisade container image: `docker build -t palisade .`
# Run: docker run -p 9000:9000 -v /srv/palisade:/data palisade serve --http-host 0.0.0.0 \
#        --keystores-path /data/keystores --keystores-passwords-path /data/passwords \
#        --database-url postgres://...
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin palisade

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data palisade \
    && mkdir -p /data && chown palisade /data
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
USER palisade
WORKDIR /data
EXPOSE 9000
# Health: let the load balancer or orchestrator probe GET /readyz (and /upcheck for liveness).
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["serve", "--http-host", "0.0.0.0"]
