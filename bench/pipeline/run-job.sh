#!/usr/bin/env bash
# Runs one job with the executor alone and prints its report as a table row per phase:
#   bench/pipeline/run-job.sh SPEC.json WORKDIR [compress-run flags...]
# BUILD_DIR (default build) names the build with bin/compress-run. The work directory keeps
# every phase's model: a later job can take the teacher from WORKDIR/phases/teacher/model
# ("teacher": {"checkpoint_path": ...}) to run an ablation without retraining it.
set -euo pipefail
spec=${1:?usage: run-job.sh SPEC.json WORKDIR [flags]}
workdir=${2:?usage: run-job.sh SPEC.json WORKDIR [flags]}
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
binary=${BUILD_DIR:-$root/build}/bin/compress-run
start=$(date +%s)
"$binary" --spec "$spec" --workdir "$workdir" "$@" >"$workdir.events.jsonl"
echo "wall time: $(( $(date +%s) - start )) s (events in $workdir.events.jsonl)"
/usr/bin/python3 - "$workdir/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"device {r['device']}, {r['threads']} threads")
print("| phase | top-1 | top-5 | params | MACs | latency ms/img | wall s |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for p in r["phases"]:
    print(f"| {p['name']} | {p['top1']*100:.2f}% | {p['top5']*100:.2f}% | {p['params']:,} | "
          f"{p['macs']:,} | {p['latency_ms_per_image']:.2f} | {p['wall_seconds']:.0f} |")
c = r["comparison"]
print(f"MACs {-c['macs_reduction']*100:+.1f}%, params {-c['params_reduction']*100:+.1f}%, "
      f"top-1 {c['top1_delta']*100:+.2f} points, total {r['wall_seconds']:.0f} s")
PY
