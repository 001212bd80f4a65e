#!/usr/bin/env bash
# The zsh completion of compressctl (client/completion/compressctl.zsh), without a server,
# driven through an interactive zsh in a pseudo-terminal (zsh_complete.zsh).
#   test_completion_zsh.sh [COMPRESSCTL]
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
completion="$repo/client/completion/compressctl.zsh"
harness="$repo/tests/client_python/zsh_complete.zsh"
failures=0

# check EXPECTED LINE: the matches at the end of LINE, sorted and joined by spaces.
check() {
  local got
  got=$(cd "$tmp" && timeout 30 zsh -f "$harness" "$completion" "$2" | tr '\n' ' ' |
        sed 's/ $//')
  if [[ $got != "$1" ]]; then
    echo "FAIL: '$2': expected '$1', got '$got'" >&2
    failures=$((failures + 1))
  else
    echo "ok: '$2' -> '$got'"
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/outdir"
touch "$tmp/spec.json" "$tmp/notes.txt"

if ! zsh -f -n "$completion"; then
  echo "FAIL: $completion does not parse" >&2
  failures=$((failures + 1))
fi

global="--output --retry_for --server --timeout --tls --tls_ca --tls_cert --tls_key \
--tls_server_name --token --token_file"
check "cancel delete download get health help list logs submit watch" "compressctl "
check "watch" "compressctl --server=127.0.0.1:1 --output json w"
check "json text" "compressctl --output "
check "json text" "compressctl --output="
check "$global" "compressctl --"
check "--label --max_attempts --output --priority --request_id --retry_for --server --timeout \
--tls --tls_ca --tls_cert --tls_key --tls_server_name --token --token_file --wait" \
  "compressctl submit --"
check "--all --filter --output --page_size --retry_for --server --timeout --tls --tls_ca \
--tls_cert --tls_key --tls_server_name --token --token_file" "compressctl list --"
check "--chunk_size $global -o" "compressctl download -"
check "--follow" "compressctl logs --f"
check "spec.json" "compressctl submit sp"
check "outdir" "compressctl download abc -o "
check "notes.txt" "compressctl --tls_ca no"

if [[ $# -ge 1 ]]; then
  # No server answers there: job names complete to nothing.
  export COMPRESSCTL="$1"
  check "" "compressctl --server=127.0.0.1:1 get "
fi

if ((failures > 0)); then
  echo "$failures zsh completion check(s) failed" >&2
  exit 1
fi
echo "all zsh completion checks passed"
