# kefu from source: `docker build -t kefu .` (or `podman build`) needs no Rust on the host.
# The first stage builds the static binary (packaging/build-static.sh); the image is that binary
# alone on scratch, as packaging/Dockerfile makes from a binary built beforehand.
#   docker run -p 8080:8080 -p 8443:8443/udp -v kefu-data:/data kefu
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN sh packaging/build-static.sh \
    && cp target/x86_64-unknown-linux-gnu/release/kefu /kefu

# The empty data directory, owned by the user kefu runs as (scratch has no mkdir or chown);
# a new named volume takes this ownership.
FROM busybox:stable AS data
RUN mkdir /data && chown 10001:10001 /data

FROM scratch
COPY --from=build /kefu /kefu
COPY --from=data --chown=10001:10001 /data /data
ENV KEFU_DATA_DIR=/data \
    KEFU_HTTP=0.0.0.0:8080 \
    KEFU_METRICS=0.0.0.0:9090
VOLUME ["/data"]
EXPOSE 8080/tcp 8443/udp 9090/tcp
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/kefu", "healthcheck", "--url", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/kefu"]
CMD ["serve"]
