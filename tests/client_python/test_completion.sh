#!/usr/bin/env bash
# The bash completion of compressctl (client/completion/compressctl.bash), without a server:
# commands, flags, flag values, and quiet failure when no server answers.
#   test_completion.sh [COMPRESSCTL]
# With COMPRESSCTL (the binary), job completion is also run against an address where nothing
# listens and must offer nothing, print nothing and return promptly.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../client/completion/compressctl.bash
source "$repo/client/completion/compressctl.bash"
# shellcheck source=completion_line.sh
source "$repo/tests/client_python/completion_line.sh"

failures=0

# complete_line EXPECTED LINE: completes at the end of LINE and compares the sorted COMPREPLY,
# joined by spaces, with EXPECTED.
complete_line() {
  local expected="$1"
  set_line "$2"
  COMPREPLY=()
  _compressctl
  local got
  got=$(printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')
  if [[ $got != "$expected" ]]; then
    echo "FAIL: '$2': expected '$expected', got '$got'" >&2
    failures=$((failures + 1))
  else
    echo "ok: '$2' -> '$got'"
  fi
}

# contains_flags LINE FLAG...: the completion at the end of LINE offers every FLAG.
contains_flags() {
  set_line "$1"
  shift
  COMPREPLY=()
  _compressctl
  local flag
  for flag in "$@"; do
    if [[ " ${COMPREPLY[*]} " != *" $flag "* ]]; then
      echo "FAIL: '$COMP_LINE' does not offer $flag (got: ${COMPREPLY[*]})" >&2
      failures=$((failures + 1))
    fi
  done
}

spec=$(complete -p compressctl 2>/dev/null)
if [[ $spec != *"-F _compressctl"*"compressctl" ]]; then
  echo "FAIL: complete -p compressctl: '$spec'" >&2
  failures=$((failures + 1))
fi

commands="cancel delete download get health help list logs submit watch"
complete_line "$commands" "compressctl "
complete_line "submit" "compressctl su"
complete_line "delete download" "compressctl d"
complete_line "$commands" "compressctl --server 127.0.0.1:1 --output json "
complete_line "$commands" "compressctl --server=127.0.0.1:1 --output=json --tls "
complete_line "$commands" "compressctl --timeout 5s --retry_for=1m "
complete_line "json text" "compressctl --output "
complete_line "json" "compressctl --output j"
complete_line "json text" "compressctl --output="
complete_line "json" "compressctl --output=j"
complete_line "" "compressctl --server "
complete_line "" "compressctl --server=127.0.0.1:"
contains_flags "compressctl --" --server --timeout --retry_for --output --token --token_file \
  --tls --tls_ca --tls_cert --tls_key --tls_server_name
contains_flags "compressctl submit --" --label --priority --request_id --max_attempts --wait \
  --server
contains_flags "compressctl list --" --filter --page_size --all
contains_flags "compressctl download -" -o --chunk_size --server
contains_flags "compressctl logs --" --follow
complete_line "--wait" "compressctl submit --w"
complete_line "" "compressctl list --w"
complete_line "--filter" "compressctl list --page_size 5 --f"
complete_line "--wait" "compressctl submit --label team=vision --w"

# Files for submit's SPEC and --tls_ca, directories for -o.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/outdir"
touch "$tmp/spec.json"
complete_line "$tmp/outdir $tmp/spec.json" "compressctl submit $tmp/"
complete_line "$tmp/spec.json" "compressctl --tls_ca $tmp/s"
complete_line "$tmp/spec.json" "compressctl --tls_ca=$tmp/s"
complete_line "$tmp/outdir" "compressctl download abc -o $tmp/"
complete_line "" "compressctl submit $tmp/spec.json "
complete_line "" "compressctl --server=127.0.0.1:1 submit --label team=vision $tmp/spec.json "

# No server: job names complete to nothing, quietly.
if [[ $# -ge 1 ]]; then
  export COMPRESSCTL="$1"
  start=$SECONDS
  output=$(complete_line "" "compressctl --server=127.0.0.1:1 get " 2>&1 >/dev/null)
  if [[ -n $output ]]; then
    echo "FAIL: job completion without a server wrote: $output" >&2
    failures=$((failures + 1))
  fi
  complete_line "" "compressctl --server=127.0.0.1:1 get "
  if ((SECONDS - start > 10)); then
    echo "FAIL: job completion without a server took $((SECONDS - start)) s" >&2
    failures=$((failures + 1))
  fi
fi

if ((failures > 0)); then
  echo "$failures completion check(s) failed" >&2
  exit 1
fi
echo "all completion checks passed"
