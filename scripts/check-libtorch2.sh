#!/usr/bin/env bash
# Builds the pipeline half (-DCOMPRESS_BUILD_SERVICE=OFF) against LibTorch 2.x on a Debian 12
# machine and runs its tests there, on the CPU: Debian 12's LibTorch is 1.13, so the code behind
# `TORCH_VERSION_MAJOR >= 2` (fused scaled_dot_product_attention, the newer autocast API) is
# compiled only by this check and on the GPU machine (bench/gpu/run.sh).
#
# It uses Debian 13 (trixie), whose libtorch-dev is 2.6, in a chroot made with debootstrap
# (network access to deb.debian.org; root). Then, in the chroot:
#   1. cmake + ninja of the pipeline, the executor, the pipeline tests and bench/gpu's gpu_bench,
#   2. every test of that build (the golden test compares logits with torchvision's swin_t,
#      which exercises the fused attention path, masks and relative position bias included),
#   3. bench/gpu/reference.py on the CPU at a small batch: parity of gpu_bench's swin_t with
#      torchvision 0.21's, and the distillation step ours vs PyTorch 2.6 eager.
#
#   sudo scripts/check-libtorch2.sh              # chroot in /srv/trixie, build in its /build-t2
#   TRIXIE_ROOT=/other/dir sudo scripts/check-libtorch2.sh
#
# About 1.5 GB of packages; the first build takes 30-40 minutes on 2 cores (ccache inside the
# chroot keeps later ones short). The results are printed and left in TRIXIE_ROOT/out.
set -euo pipefail
root=${TRIXIE_ROOT:-/srv/trixie}
src=$(cd "$(dirname "$0")/.." && pwd)
mirror=http://deb.debian.org/debian

if [[ $(id -u) -ne 0 ]]; then
  echo "check-libtorch2: needs root (debootstrap, mount, chroot)" >&2
  exit 2
fi
if [[ ! -x $root/usr/bin/apt-get ]]; then
  if ! command -v debootstrap >/dev/null; then
    apt-get update -q && apt-get install -y -q debootstrap
  fi
  debootstrap --variant=minbase trixie "$root" "$mirror"
fi
echo "deb $mirror trixie main" > "$root/etc/apt/sources.list"

mounted=()
bind() {  # bind-mounts $1 on $root$2 unless something is mounted there already
  mkdir -p "$root$2"
  if ! mountpoint -q "$root$2"; then
    mount --bind "$1" "$root$2"
    mounted=("$root$2" "${mounted[@]}")
  fi
}
cleanup() { for m in "${mounted[@]}"; do umount "$m" || true; done; }
trap cleanup EXIT
bind /proc /proc
bind /sys /sys
bind /dev /dev
bind "$src" /src
mount -o remount,bind,ro "$root/src"
# The installed data sets (dataset-fashion-mnist), for the tests that read them.
[[ -d /usr/share/datasets ]] && bind /usr/share/datasets /usr/share/datasets

run() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
          CCACHE_DIR=/root/.ccache bash -c "$1"; }

run "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  --no-install-recommends libtorch-dev libjpeg-dev zlib1g-dev nlohmann-json3-dev libabsl-dev \
  libgtest-dev libgmock-dev cmake ninja-build g++ ccache python3 python3-torch \
  python3-torchvision python3-numpy libopenblas0-pthread" > "$root/apt.log"
run "dpkg-query -W libtorch-dev python3-torchvision g++"

run "cmake -S /src -B /build-t2 -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCOMPRESS_BUILD_SERVICE=OFF -DCOMPRESS_BUILD_BENCH=ON -DCMAKE_CXX_COMPILER_LAUNCHER=ccache \
  > /build-t2.configure.log && ninja -C /build-t2 -j$(nproc)"

mkdir -p "$root/out"
status=0
run "cd /build-t2 && ctest -j$(nproc) --output-on-failure --timeout 900" \
  > "$root/out/ctest.log" 2>&1 || status=1
grep -E "tests passed|tests failed|Failed|\(Failed\)|Skipped|Not Run" "$root/out/ctest.log" | tail -8

run "python3 /src/bench/gpu/reference.py --binary \$(find /build-t2 -name gpu_bench -type f \
  -perm -u+x | head -1) --out /out --device cpu --source torchvision --batch 8 --steps 3 \
  --warmup 1 --repetitions 2 --threads $(nproc)" > "$root/out/reference.log" 2>&1 || status=1
cat "$root/out/reference.log"
echo "check-libtorch2: $([[ $status -eq 0 ]] && echo passed || echo FAILED) (logs in $root/out)"
exit $status
