# Builds `spool` in one stage and runs it from a slim image in the next.
#   docker build -t spool .
#   docker run -p 9092:9092 -p 5672:5672 -p 8080:8080 spool
FROM rust:1-bookworm AS build
# librdkafka (linked for `spool bench`) is built from source by rdkafka-sys.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake build-essential python3 pkg-config \
       zlib1g-dev libzstd-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin spool \
    && cp target/release/spool /usr/local/bin/spool

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g libzstd1 libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/spool spool \
    && mkdir -p /var/lib/spool && chown spool /var/lib/spool
COPY --from=build /usr/local/bin/spool /usr/local/bin/spool
USER spool
VOLUME /var/lib/spool
EXPOSE 9092 5672 8080 9093
ENTRYPOINT ["spool", "serve", "--data-dir", "/var/lib/spool"]
