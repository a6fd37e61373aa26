# wechat-token-server in a container: a build stage with the Rust version of
# Cargo.toml's rust-version, and a small runtime stage running as a non-root user.
#
#   docker build -t wechat-token-server .
#   docker run -d -p 12123:12123 -e WTS_REQUEST_SECRET=... -e WECHAT_SECRET=... \
#     -v /etc/wechat-token-server:/etc/wechat-token-server:ro \
#     -v wts-data:/var/lib/wechat-token-server wechat-token-server
#
# The config is read from $WTS_CONFIG (/etc/wechat-token-server/config.toml); with the
# embedded store, set store.path = "/var/lib/wechat-token-server" (the volume).
# deploy/docker-compose.yml runs Redis, two instances and the WeChat simulator.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin wechat-token-server \
    && strip target/release/wechat-token-server

# No packages needed at run time: TLS roots are compiled in (webpki-roots) and the
# binary links only glibc.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 wts \
    && useradd --system --uid 10001 --gid 10001 --no-log-init \
        --home-dir /var/lib/wechat-token-server --create-home wts
COPY --from=build /src/target/release/wechat-token-server /usr/local/bin/wechat-token-server
# Numeric, so that runtimes can check it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/wechat-token-server
ENV WTS_CONFIG=/etc/wechat-token-server/config.toml \
    WTS_LOG_FORMAT=json
VOLUME ["/var/lib/wechat-token-server"]
EXPOSE 12123
# /readyz of the server on server.bind's port (a base URL checks /readyz). Change the
# port here if server.bind uses another. Not ready also means "look at me": see the
# README (Readiness) before letting an orchestrator restart on it.
HEALTHCHECK --interval=30s --timeout=6s --start-period=60s --retries=3 \
    CMD ["wechat-token-server", "healthcheck", "--url", "http://127.0.0.1:12123"]
ENTRYPOINT ["wechat-token-server"]
CMD ["serve"]
