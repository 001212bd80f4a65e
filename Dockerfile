# compressd on Debian 12: one image holding compressd, compress-worker, compress-run and
# compressctl, built from the same package list as scripts/setup.sh.
#
#   docker build -t compressd .
#   docker run -p 50051:50051 -p 9464:9464 -v "$PWD/deploy/compose/secrets:/etc/compressd:ro" \
#       compressd
#
# The default command serves TLS with bearer tokens and one local worker; it reads tokens,
# tls.crt, tls.key, ca.crt and worker-token from /etc/compressd (made as docs/deploy.md,
# "Security", shows).
FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF \
 && cmake --build build \
 && cmake --install build --prefix /opt/compressd

FROM debian:12
COPY scripts/setup.sh /tmp/setup.sh
RUN /tmp/setup.sh && rm -rf /var/lib/apt/lists/* /tmp/setup.sh \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/compressd compressd
COPY --from=build /opt/compressd /opt/compressd
ENV PATH=/opt/compressd/bin:$PATH
USER compressd
WORKDIR /var/lib/compressd
EXPOSE 50051 9464
CMD ["compressd", "--grpc_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464", \
     "--data_dir=/var/lib/compressd/data", "--token_file=/etc/compressd/tokens", \
     "--tls_cert=/etc/compressd/tls.crt", "--tls_key=/etc/compressd/tls.key", \
     "--local_workers=1", \
     "--local_worker_flags=--token_file=/etc/compressd/worker-token,--tls_ca=/etc/compressd/ca.crt,--tls_server_name=compressd"]
