#!/usr/bin/env bash
# Runs one libFuzzer target as a test: once over every committed input in full (crash inputs kept
# as regression seeds included), then fuzzing for a bounded time from a copy of the seed corpus,
# so that the committed corpus is never written to. Fails when the fuzzer finds a
# crash, a sanitizer report or a failed check; the input that did it is kept in ARTIFACT_DIR.
#   run_fuzzer.sh FUZZER SEED_CORPUS_DIR ARTIFACT_DIR [libFuzzer options...]
# A -max_len option applies to the fuzzing only (libFuzzer would cut longer seeds short).
set -euo pipefail
if (($# < 3)); then
  echo "usage: $0 FUZZER SEED_CORPUS_DIR ARTIFACT_DIR [libFuzzer options...]" >&2
  exit 2
fi
fuzzer=$1
seeds=$2
artifacts=$3
shift 3
if [[ ! -d "$seeds" ]] || [[ -z "$(ls -A "$seeds")" ]]; then
  echo "run_fuzzer: empty or missing seed corpus $seeds" >&2
  exit 2
fi
mkdir -p "$artifacts"
prefix="$artifacts/$(basename "$fuzzer")-"

# Without -max_len the fuzzing run starts by running every seed in full itself.
whole_inputs=()
for option in "$@"; do
  [[ $option == -max_len=* ]] || whole_inputs+=("$option")
done
if ((${#whole_inputs[@]} < $#)); then
  echo "run_fuzzer: every seed of $seeds once"
  "$fuzzer" -artifact_prefix="$prefix" "${whole_inputs[@]}" "$seeds"/*
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/$(basename "$fuzzer").XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -R "$seeds"/. "$work"/
echo "run_fuzzer: fuzzing from a copy of $seeds in $work"
"$fuzzer" -artifact_prefix="$prefix" -print_final_stats=1 -print_recommended_dict=0 "$@" "$work"
