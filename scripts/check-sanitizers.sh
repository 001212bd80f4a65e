#!/usr/bin/env bash
# Builds the service half (compressd, compress-worker, compressctl, their tests and the fault
# tests; -DCOMPRESS_BUILD_PIPELINE=OFF) with AddressSanitizer and UndefinedBehaviorSanitizer and
# runs its tests: use-after-free, buffer overflows, leaks and undefined behaviour in the gRPC
# reactors, the job store, the agent and the clients fail the run. The programs the tests start
# (compressd, compress-worker, compressctl, the fake executors) are sanitized too: a report ends
# such a process with a non-zero status, which the test that started it checks.
#
#   scripts/check-sanitizers.sh [extra ctest args]     # build in build-asan
#   BUILD_DIR=/tmp/asan scripts/check-sanitizers.sh -R Subprocess
#
# Debian's gRPC, protobuf and Abseil are not instrumented: only our code's accesses are checked
# (ThreadSanitizer is not offered for that reason: it cannot see the locks inside those libraries
# and reports races that are not). The pipeline half is checked by the fuzzers (fuzz/, with
# AddressSanitizer) instead. A build takes about 20 minutes on 2 cores, the tests about 5.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
build_dir=${BUILD_DIR:-build-asan}
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCOMPRESS_BUILD_PIPELINE=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$build_dir" -j"$jobs"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j"$jobs" --timeout 900 -LE slow "$@"
