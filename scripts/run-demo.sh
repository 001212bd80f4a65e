#!/usr/bin/env bash
# The demo: set up the machine, build, start compressd with one local worker on the embedded
# default (SQLite and artifacts in a temporary data dir), submit client/examples/default-job.json
# with compressctl, watch it with progress, download the result, print its report, stop the
# server.
#
# Environment: BUILD_DIR (default: build), OUT_DIR (default: ./compressd-demo-result),
# JOBS (build parallelism, default: all cores), SPEC (default: client/examples/default-job.json),
# METRICS_ADDRESS (default: 127.0.0.1:0, a free port; the URL is printed).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build}"
# Absolute, so that the worker (started by compressd) finds the executor from any directory.
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac
out_dir="${OUT_DIR:-$PWD/compressd-demo-result}"
spec="${SPEC:-$repo/client/examples/default-job.json}"
jobs="${JOBS:-$(nproc)}"

echo "== set-up"
"$repo/scripts/setup.sh"

echo "== build ($build)"
if [[ -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$repo" -B "$build"  # keep the build dir's own settings
else
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" --target compressd compress-worker compress-run compressctl -j "$jobs"

# Where a target's executable lands: a common bin/ if the build sets one, else its folder.
binary() {
  local name="$1" folder="$2"
  if [[ -x "$build/bin/$name" ]]; then echo "$build/bin/$name"; else echo "$build/$folder/$name"; fi
}
compressd="$(binary compressd server)"
worker="$(binary compress-worker worker/agent)"
executor="$(binary compress-run worker/run)"
compressctl="$(binary compressctl client)"

data_dir="$(mktemp -d "${TMPDIR:-/tmp}/compressd-demo.XXXXXX")"
server_pid=""
stop_server() {
  local status=$?
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    echo "== stopping compressd"
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if ((status != 0)) && [[ -f "$data_dir/compressd.log" ]]; then
    echo "== compressd's log (last 40 lines)" >&2
    tail -n 40 "$data_dir/compressd.log" >&2 || true
  fi
  rm -rf "$data_dir"
  exit "$status"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== starting compressd (data dir $data_dir)"
# --insecure: no bearer tokens; compressd allows that on a loopback address only.
"$compressd" --insecure --grpc_address=127.0.0.1:0 --metrics_address="${METRICS_ADDRESS:-127.0.0.1:0}" \
  --data_dir="$data_dir" --local_workers=1 --worker_binary="$worker" \
  --local_worker_flags="--executor=$executor" \
  >"$data_dir/compressd.out" 2>"$data_dir/compressd.log" &
server_pid=$!

address=""
for _ in $(seq 1 300); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "compressd exited at start" >&2
    exit 1
  fi
  address="$(sed -n 's/^compressd listening on //p' "$data_dir/compressd.out" | head -n 1)"
  [[ -n "$address" ]] && break
  sleep 0.1
done
if [[ -z "$address" ]]; then
  echo "compressd did not report its address within 30 s" >&2
  exit 1
fi
echo "compressd listening on $address"
sed -n 's/^compressd: \(metrics on .*\)/\1/p' "$data_dir/compressd.log" | head -n 1
ctl=("$compressctl" "--server=$address")

echo "== submitting $spec"
job="$("${ctl[@]}" submit "$spec" | awk '/^submitted / {print $2}')"
echo "job $job"

echo "== watching $job"
"${ctl[@]}" watch "$job"

echo "== downloading the result to $out_dir"
"${ctl[@]}" download "$job" -o "$out_dir"

echo "== report"
if [[ -f "$out_dir/report.json" ]]; then
  /usr/bin/python3 -m json.tool "$out_dir/report.json"
else
  "${ctl[@]}" --output=json get "$job" |
    /usr/bin/python3 -c 'import json, sys; print(json.dumps(json.loads(json.load(sys.stdin)["report_json"]), indent=2))'
fi
