# compressd on Debian 12: one image holding compressd, compress-worker, compress-run and
# compressctl, built from the same package list as scripts/setup.sh.
#
#   docker build -t compressd .
#   docker run -p 50051:50051 -p 9464:9464 compressd \
#       compressd --grpc_address=0.0.0.0:50051 --metrics_address=0.0.0.0:9464 --local_workers=1
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
     "--data_dir=/var/lib/compressd/data", "--local_workers=1"]
