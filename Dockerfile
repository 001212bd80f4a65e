# compressd on Debian 12. Two images from one file:
#
#   docker build --target cpu -t compressd .                       # CPU: every program
#   docker build --target worker-cuda -t compressd-worker-cuda .   # GPU worker
#
# `--target cpu`: Docker's classic builder (the default before Docker 23, e.g. Debian 12's
# docker.io 20.10) builds every stage before the one asked for, and the CUDA stages below fetch
# NVIDIA's toolkit and PyTorch's wheels (gigabytes, and a failed build where they cannot be
# reached); the default target, the last stage, is the CPU image too. BuildKit builds only the
# stages a target needs.
#
# `compressd` holds compressd, compress-worker, compress-run and compressctl, built with the
# package list of scripts/setup.sh against Debian's LibTorch (CPU), and installs only the
# libraries they (and the Python client) load at run time. `compressd-worker-cuda` is the CPU
# image with its compress-run replaced by one built against PyTorch's CUDA LibTorch (the
# pipeline half alone, COMPRESS_BUILD_SERVICE=OFF: that LibTorch carries a protobuf of its own);
# its compress-worker is the CPU stage's. Run it with the NVIDIA container toolkit
# (`--gpus all`, or the GPU reservation in deploy/compose).
#
#   docker run -d --name compressd --stop-timeout 70 -p 50051:50051 -p 127.0.0.1:9464:9464 \
#       -v compressd-home:/var/lib/compressd \
#       -v "$PWD/deploy/compose/secrets:/etc/compressd:ro" compressd
#
# The default command serves TLS with bearer tokens and one local worker; it reads tokens,
# tls.crt, tls.key, ca.crt and worker-token from /etc/compressd (made as docs/deploy.md,
# "Security", shows). The containers run as uid/gid 10001: a bind mount keeps the host's owner
# and mode, so those files must be readable by uid 10001 (chown 10001:10001, docs/deploy.md).
# The volume on the image's home keeps the job database and artifacts (--data_dir) across
# containers. --stop-timeout: on `docker stop` the local worker gets up to
# --local_worker_stop_grace (60 s) to stop its executor and hand its job back, and calls get
# --shutdown_grace (5 s); Docker's default of 10 s would kill it first. The metrics port is plain
# HTTP: publish it on loopback (or a private network) only.
#
# The entrypoint is tini (Debian's package): PID 1 of the container, it forwards the signals it
# gets (docker stop's SIGTERM, kill -HUP 1 for compressd's token reload) to the command and
# reaps every process orphaned in the container, e.g. the executors of a local worker that
# crashed, which compressd (waiting only for its own workers) would leave as zombies.
# .dockerignore keeps build trees, .git and deploy/compose/secrets out of the build context.

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
# Run-time libraries only (the build stage has the compilers, -dev packages, test tools and data
# of scripts/setup.sh): gRPC, protobuf, Abseil, prometheus-cpp and SQLite for the service;
# Debian's LibTorch with the threaded OpenBLAS, libjpeg-turbo and zlib for compress-run; python3
# with grpcio and protobuf for the Python client (/opt/compressd/share/compressd/python); tini,
# the entrypoint.
# RUNTIME_EXTRA_PACKAGES adds Debian packages, e.g. dataset-fashion-mnist for the data set that
# client/examples/default-job.json reads (/usr/share/datasets/fashion-mnist).
FROM debian:12 AS cpu
ARG RUNTIME_EXTRA_PACKAGES=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 libsqlite3-0 libtorch1.13 libopenblas0-pthread \
      libjpeg62-turbo zlib1g python3 python3-grpcio python3-protobuf tini ${RUNTIME_EXTRA_PACKAGES} \
 && update-alternatives --set "libblas.so.3-$(uname -m)-linux-gnu" \
      "/usr/lib/$(uname -m)-linux-gnu/openblas-pthread/libblas.so.3" \
 && update-alternatives --set "liblapack.so.3-$(uname -m)-linux-gnu" \
      "/usr/lib/$(uname -m)-linux-gnu/openblas-pthread/liblapack.so.3" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 compressd \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /var/lib/compressd compressd
COPY --from=build /opt/compressd /opt/compressd
# Every library the four programs need is installed: fail the build here rather than at start.
RUN if ldd /opt/compressd/bin/* | grep 'not found'; then \
      echo 'a program in /opt/compressd/bin needs a library the runtime packages lack' >&2; \
      exit 1; \
    fi
ENV PATH=/opt/compressd/bin:$PATH
USER compressd
WORKDIR /var/lib/compressd
EXPOSE 50051 9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD compressctl --server=127.0.0.1:50051 --tls_ca=/etc/compressd/ca.crt \
      --tls_server_name=compressd --timeout=5s health
# tini runs the command (CMD, or Compose's `command:`) as its child, forwards signals to it and
# reaps orphans; the CUDA worker image inherits it. Kubernetes' `command:` replaces it (the
# manifests' compressd runs no local workers).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["compressd", "--grpc_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464", \
     "--data_dir=/var/lib/compressd/data", "--token_file=/etc/compressd/tokens", \
     "--tls_cert=/etc/compressd/tls.crt", "--tls_key=/etc/compressd/tls.key", \
     "--local_workers=1", \
     "--local_worker_flags=--token_file=/etc/compressd/worker-token,--tls_ca=/etc/compressd/ca.crt,--tls_server_name=compressd"]

# ---- CUDA build: compress-run against PyTorch's LibTorch -------------------------------------
# The CUDA toolkit comes from NVIDIA's Debian 12 repository (find_package(Torch) needs its
# compiler and headers); LibTorch from PyTorch's wheel for the same CUDA major/minor, whose
# bundled CUDA libraries (cuBLAS, cuDNN, ...) are what the executor loads at run time.
# The wheel must use the C++11 string ABI (_GLIBCXX_USE_CXX11_ABI=1), as Debian's Abseil and
# the rest of the executor do: PyTorch's wheels do from 2.7 on (the cu126/cu128/cu130 builds);
# 2.6 and older use the old ABI and cannot link with Debian's libraries. The default is the
# PyTorch the executor was built and tested with on a GPU machine (2.11, CUDA 13.0; needs an
# NVIDIA driver of the 580 series or newer on the host). For an older driver, e.g.
#   --build-arg TORCH_VERSION=2.7.1 --build-arg CUDA_PACKAGE_VERSION=12-8
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# CMake comes from PyPI (CMAKE_VERSION): Debian 12's 3.25 predates CUDA 13's header layout.
FROM debian:12 AS executor-cuda
ARG CUDA_PACKAGE_VERSION=13-0
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG CMAKE_VERSION=4.1.3
ARG CUDA_ARCHITECTURES="80;86;89;90"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wget gnupg python3 python3-venv \
      ninja-build g++ ccache nlohmann-json3-dev libabsl-dev libjpeg62-turbo-dev zlib1g-dev \
 && wget -q https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i cuda-keyring_1.1-1_all.deb && rm cuda-keyring_1.1-1_all.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends cuda-toolkit-${CUDA_PACKAGE_VERSION} \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
 && /opt/torch/bin/pip install --no-cache-dir "cmake==${CMAKE_VERSION}"
# Stop here, with the reason, on a wheel that cannot link with Debian's libraries or has no CUDA.
RUN /opt/torch/bin/python -c "import sys, torch; \
abi = torch._C._GLIBCXX_USE_CXX11_ABI; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, '_GLIBCXX_USE_CXX11_ABI', int(abi)); \
old_abi = 'torch ' + torch.__version__ + ' is built with the old C++ string ABI (_GLIBCXX_USE_CXX11_ABI=0) and cannot link with Debian 12 Abseil and protobuf: choose a PyTorch built with the C++11 ABI (2.7 or later, cu126/cu128/cu130 wheels) in TORCH_VERSION and TORCH_INDEX_URL'; \
no_cuda = 'torch ' + torch.__version__ + ' from ' + sys.argv[1] + ' has no CUDA: TORCH_INDEX_URL must name a CUDA wheel index'; \
sys.exit(old_abi if not abi else no_cuda if not torch.version.cuda else None)" \
    "${TORCH_INDEX_URL}"
ENV PATH=/usr/local/cuda/bin:$PATH
WORKDIR /src
COPY . .
RUN /opt/torch/bin/cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCOMPRESS_BUILD_SERVICE=OFF -DCOMPRESS_BUILD_PIPELINE=ON -DCOMPRESS_BUILD_TESTS=OFF \
      -DCMAKE_PREFIX_PATH="$(/opt/torch/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
 && /opt/torch/bin/cmake --build build-cuda --target compress-run \
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
# The dynamic loader finds LibTorch (torch/lib) and the CUDA runtime libraries of the NVIDIA
# wheels (cuBLAS, cuDNN, NCCL, ...: every folder under site-packages/nvidia that holds a shared
# library; their names differ between CUDA 12 and 13 wheels, so they are listed at build time)
# through /etc/ld.so.conf.d, for compress-run and anything else in the image. Then no library of
# compress-run may be missing, except the driver's (libcuda, libnvidia-ml), which the NVIDIA
# Container Toolkit mounts from the host when the container starts.
RUN site=/opt/torch/lib/python3.11/site-packages \
 && { echo "$site/torch/lib"; find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u; } \
      > /etc/ld.so.conf.d/compressd-torch-cuda.conf \
 && ldconfig \
 && cat /etc/ld.so.conf.d/compressd-torch-cuda.conf \
 && missing="$(ldd /opt/compressd/bin/compress-run | grep 'not found' \
      | grep -v -E 'lib(cuda|nvidia-ml)\.so' || true)" \
 && if [ -n "$missing" ]; then \
      printf 'compress-run: libraries not found:\n%s\n' "$missing" >&2; exit 1; \
    fi
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER compressd
# The agent dials compressd (pull model); it serves nothing, so it has no health check port.
HEALTHCHECK NONE
CMD ["compress-worker", "--server=compressd:50051", "--work_root=/var/lib/compressd/work", \
     "--devices=auto", "--token_file=/etc/compressd/worker-token", \
     "--tls_ca=/etc/compressd/ca.crt", "--tls_server_name=compressd"]

# ---- The default target: the CPU image ------------------------------------------------------
FROM cpu
