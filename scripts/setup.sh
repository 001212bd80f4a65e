#!/usr/bin/env bash
# Installs every Debian 12 package compressd needs to build, test and run. Idempotent; run as
# root (or with sudo available). Skips apt entirely when everything is already installed.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git clang-format
  # service: gRPC, protobuf, Abseil, Prometheus, SQLite
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  prometheus-cpp-dev libsqlite3-dev
  # pipeline: LibTorch with a threaded OpenBLAS, JPEG, zlib, JSON
  libtorch-dev libopenblas0-pthread libjpeg62-turbo-dev zlib1g-dev nlohmann-json3-dev
  # tests and golden files
  libgtest-dev libgmock-dev python3 python3-torch python3-torchvision python3-yaml openssl
  # the Python client and its tests
  python3-grpcio python3-protobuf
  # deploy checks: promtool and a Prometheus server on loopback
  prometheus
  # fuzz targets (fuzz/): clang, libFuzzer and the sanitizer runtimes, llvm-symbolizer
  clang libclang-rt-14-dev llvm
  # shell completion tests
  zsh
  # server benchmark (bench/server): the loopback TCP figure the download is compared with
  iperf3
  # data
  dataset-fashion-mnist
)

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}"
  ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update -qq
  ${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

# LibTorch computes with whatever libblas.so.3 (and liblapack.so.3) points at; the threaded
# OpenBLAS trains a Swin several times faster than the reference BLAS. The alternatives are named
# by the multiarch triplet (x86_64-linux-gnu, aarch64-linux-gnu, ...), which dpkg-architecture
# (dpkg-dev, pulled in by build-essential) prints; `uname -m`-linux-gnu, as the Dockerfile uses,
# is the fallback.
if command -v update-alternatives >/dev/null; then
  multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
  for lib in libblas.so.3 liblapack.so.3; do
    name="$lib-$multiarch"
    choice=$(update-alternatives --list "$name" 2>/dev/null | grep openblas-pthread | head -n 1 ||
      true)
    if [[ -n "$choice" ]]; then
      current=$(readlink -f "/etc/alternatives/$name" 2>/dev/null || true)
      if [[ "$current" != "$(readlink -f "$choice")" ]]; then
        ${sudo_cmd[@]+"${sudo_cmd[@]}"} update-alternatives --set "$name" "$choice" || true
      fi
    fi
  done
fi
