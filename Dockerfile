# compressd on Debian 12. Two images from one file:
#
#   docker build -t compressd .                                    # CPU: every program
#   docker build --target worker-cuda -t compressd-worker-cuda .   # GPU worker
#
# `compressd` holds compressd, compress-worker, compress-run and compressctl, built from the same
# package list as scripts/setup.sh against Debian's LibTorch (CPU). `compressd-worker-cuda` is the
# CPU image with its compress-run replaced by one built against PyTorch's CUDA LibTorch (the
# pipeline half alone, COMPRESS_BUILD_SERVICE=OFF: that LibTorch carries a protobuf of its own);
# its compress-worker is the CPU stage's. Run it with the NVIDIA container toolkit
# (`--gpus all`, or the GPU reservation in deploy/compose).
#
#   docker run -p 50051:50051 -p 9464:9464 -v "$PWD/deploy/compose/secrets:/etc/compressd:ro" \
#       compressd
#
# The default command serves TLS with bearer tokens and one local worker; it reads tokens,
# tls.crt, tls.key, ca.crt and worker-token from /etc/compressd (made as docs/deploy.md,
# "Security", shows).

# ---- CPU build: every program -------------------------------------------------------------
FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF \
 && cmake --build build \
 && cmake --install build --prefix /opt/compressd

# ---- CPU runtime ---------------------------------------------------------------------------
FROM debian:12 AS cpu
COPY scripts/setup.sh /tmp/setup.sh
RUN /tmp/setup.sh && rm -rf /var/lib/apt/lists/* /tmp/setup.sh \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/compressd compressd
COPY --from=build /opt/compressd /opt/compressd
ENV PATH=/opt/compressd/bin:$PATH
USER compressd
WORKDIR /var/lib/compressd
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD compressctl --server=127.0.0.1:50051 --tls_ca=/etc/compressd/ca.crt \
      --tls_server_name=compressd --timeout=5s health
CMD ["compressd", "--grpc_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464", \
     "--data_dir=/var/lib/compressd/data", "--token_file=/etc/compressd/tokens", \
     "--tls_cert=/etc/compressd/tls.crt", "--tls_key=/etc/compressd/tls.key", \
     "--local_workers=1", \
     "--local_worker_flags=--token_file=/etc/compressd/worker-token,--tls_ca=/etc/compressd/ca.crt,--tls_server_name=compressd"]

# ---- CUDA build: compress-run against PyTorch's LibTorch -------------------------------------
# The CUDA toolkit comes from NVIDIA's Debian 12 repository (find_package(Torch) needs its
# compiler and headers); LibTorch from PyTorch's wheel for the same CUDA major/minor, whose
# bundled CUDA libraries (cuBLAS, cuDNN, ...) are what the executor loads at run time.
FROM debian:12 AS executor-cuda
ARG CUDA_PACKAGE_VERSION=12-4
ARG TORCH_VERSION=2.5.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
ARG CUDA_ARCHITECTURES="80;86;89;90"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wget gnupg python3 python3-venv \
      cmake ninja-build g++ ccache nlohmann-json3-dev libabsl-dev libturbojpeg0-dev \
      libjpeg62-turbo-dev zlib1g-dev \
 && wget -q https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i cuda-keyring_1.1-1_all.deb && rm cuda-keyring_1.1-1_all.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends cuda-toolkit-${CUDA_PACKAGE_VERSION} \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
ENV PATH=/usr/local/cuda/bin:$PATH
WORKDIR /src
COPY . .
RUN cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCOMPRESS_BUILD_SERVICE=OFF -DCOMPRESS_BUILD_PIPELINE=ON -DCOMPRESS_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/torch/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
 && cmake --build build-cuda --target compress-run \
 && install -D build-cuda/bin/compress-run /opt/compressd-cuda/bin/compress-run

# ---- CUDA worker runtime: the CPU image's agent with the CUDA executor ----------------------
FROM cpu AS worker-cuda
USER root
# Only LibTorch's libraries and the CUDA libraries they load (their RUNPATHs point from
# torch/lib to ../../nvidia/*/lib, so the two folders keep their places).
COPY --from=executor-cuda /opt/torch/lib/python3.11/site-packages/torch/lib \
     /opt/torch/lib/python3.11/site-packages/torch/lib
COPY --from=executor-cuda /opt/torch/lib/python3.11/site-packages/nvidia \
     /opt/torch/lib/python3.11/site-packages/nvidia
COPY --from=executor-cuda /opt/compressd-cuda/bin/compress-run /opt/compressd/bin/compress-run
ENV LD_LIBRARY_PATH=/opt/torch/lib/python3.11/site-packages/torch/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER compressd
# The agent dials compressd (pull model); it serves nothing, so it has no health check port.
HEALTHCHECK NONE
CMD ["compress-worker", "--server=compressd:50051", "--work_root=/var/lib/compressd/work", \
     "--devices=auto", "--token_file=/etc/compressd/worker-token", \
     "--tls_ca=/etc/compressd/ca.crt", "--tls_server_name=compressd"]

# ---- The default target: the CPU image ------------------------------------------------------
FROM cpu
