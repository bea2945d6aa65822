# One image with every tandem server and the `tandem` command.
#
#   docker build -t tandem:0.1.0 .
#
# Build stage: the workspace's release binaries (protoc is not needed: the
# proto crate compiles its .proto files with protox, in Rust).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p tandem-router -p tandem-index-node -p tandem-model-node \
        -p tandem-cli -p tandem-loadgen \
 && mkdir /out \
 && cp target/release/tandem-router target/release/tandem-index-node \
       target/release/tandem-model-node target/release/tandem \
       target/release/tandem-loadgen /out/

# Run stage: a small Debian with CA certificates, a non-root user, and the
# binaries. Each Kubernetes container names the binary it runs.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/tandem --create-home tandem
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/tandem
# gRPC, metrics, health-only, admin (router) ports used by deploy/k8s.
EXPOSE 7000 7009 7101 7201 9000 9090
CMD ["tandem", "--help"]
