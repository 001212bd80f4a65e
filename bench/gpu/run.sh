#!/usr/bin/env bash
# The GPU check, as one command on the GPU machine (bench/gpu/README.md):
#   bash bench/gpu/run.sh            (with .gpu/ from ../shared/gpu/pack.sh carried along)
# Builds the LibTorch side against PyTorch's CUDA LibTorch, then in the same call:
#   1. parity of our swin_t with timm's swin_tiny_patch4_window7_224 (fp32 and bf16),
#   2. a distillation step at 224x224, batch 128, bf16: ours vs PyTorch eager with timm models,
#   3. every test of that build (the pipeline's and the executor's, with the CUDA test) on the GPU,
#   4. a short real job with compress-run alone on cuda:0 (bench/gpu/short-job.json).
# Everything it reports lands in $OUT (default /tmp/gpu-out): gpu-results.md, the ctest log,
# the job's events and report.json.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
status=0
{
  echo "# GPU run $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  python3 -c 'import timm; print("timm", timm.__version__)' 2>/dev/null || echo "timm missing"
} | tee "$OUT/versions.txt"

start=$(date +%s)
if ! bash .gpu/device-build.sh -DCOMPRESS_BUILD_BENCH=ON > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "build failed (log in $OUT/build.log)"
  exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
export LD_LIBRARY_PATH=/opt/deb/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
bin() { find build-gpu -name "$1" -type f -perm -u+x | head -1; }

python3 bench/gpu/reference.py --binary "$(bin gpu_bench)" --out "$OUT" || status=1

ctest --test-dir build-gpu --output-on-failure -j4 --timeout 300 > "$OUT/ctest.log" 2>&1 \
  || status=1
grep -E "tests passed|tests failed|Failed|Skipped" "$OUT/ctest.log" | tail -8

rm -rf /tmp/gpu-job
start=$(date +%s)
"$(bin compress-run)" --spec bench/gpu/short-job.json --workdir /tmp/gpu-job --device cuda:0 \
  > "$OUT/job-events.jsonl" 2> "$OUT/job-stderr.log"
rc=$?
[[ $rc -eq 0 ]] || status=1
echo "short job: exit $rc, $(( $(date +%s) - start )) s"
cp /tmp/gpu-job/report.json "$OUT/job-report.json" 2>/dev/null && python3 - "$OUT/job-report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for p in r["phases"]:
    print(f"{p['name']}: top-1 {p['top1']:.4f}, params {p['params']:,}, MACs {p['macs']:,}, "
          f"{p.get('train_images_per_second', 0):.0f} train images/s, {p['wall_seconds']:.0f} s")
PY
exit $status
