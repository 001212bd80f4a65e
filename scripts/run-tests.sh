#!/usr/bin/env bash
# Set-up, build and run the test suite: the README's test command and what CI runs.
#   scripts/run-tests.sh [extra ctest args]
# BUILD_DIR (default build) and CMAKE_ARGS pass through.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
scripts/setup.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j"$jobs"
command -v ccache >/dev/null && ccache --show-stats 2>/dev/null | grep -Ei "hit|miss" | head -4 || true
# Long benchmarks carry the label `slow` and run from bench/; GPU tests skip without CUDA.
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" --timeout 900 -LE slow "$@"

# Fuzz targets (fuzz/, ctest label `fuzz`): a clang tree with only the fuzzers and the code they
# test, no service and no unit tests; each target fuzzes for COMPRESS_FUZZ_SECONDS (20 s) from its
# seed corpus. FUZZ=0 skips them.
if [[ ${FUZZ:-1} == 1 ]]; then
  fuzz_dir=${FUZZ_BUILD_DIR:-build-fuzz}
  CC=clang CXX=clang++ cmake -S . -B "$fuzz_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCOMPRESS_BUILD_FUZZERS=ON -DCOMPRESS_BUILD_SERVICE=OFF -DCOMPRESS_BUILD_TESTS=OFF
  cmake --build "$fuzz_dir" -j"$jobs" --target compress_fuzzers
  ctest --test-dir "$fuzz_dir" --output-on-failure -j"$jobs" -L fuzz
fi
