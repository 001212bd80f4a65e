# bash completion of compressctl (docs/cli.md). Source it, or install it as
# /usr/share/bash-completion/completions/compressctl.
#
# Completes commands, flags and their values; job ids (get, watch, cancel, delete, download, logs)
# and artifact names (download JOB ARTIFACT) come from the server named on the command line
# (`compressctl list --all --output json`, `compressctl get JOB --output json`), using the same
# --server, token and TLS flags; nothing is offered when the server does not answer.
# shellcheck disable=SC2207  # COMPREPLY=($(compgen ...)) is the usual idiom; words have no spaces

_compressctl_commands="submit get list watch cancel delete download logs health help"
_compressctl_global_flags="--server --timeout --retry_for --output --token --token_file --tls \
--tls_ca --tls_cert --tls_key --tls_server_name"
# Flags that take no value.
_compressctl_bool_flags="--tls --wait --all --follow"

# The flags of one command.
_compressctl_command_flags() {
  case "$1" in
    submit) echo "--label --priority --request_id --max_attempts --wait" ;;
    list) echo "--filter --page_size --all" ;;
    download) echo "-o --chunk_size" ;;
    logs) echo "--follow" ;;
  esac
}

# bash splits words at COMP_WORDBREAKS characters ("--server=host:port" arrives as "--server" "="
# "host" ":" "port"). Sets _compressctl_words to the words as typed (pieces not separated by
# whitespace in COMP_LINE joined again) and _compressctl_cword to the index of the current one.
_compressctl_merge_words() {
  _compressctl_words=()
  _compressctl_cword=0
  if [[ -z ${COMP_LINE:-} ]]; then
    _compressctl_words=("${COMP_WORDS[@]}")
    _compressctl_cword=$COMP_CWORD
    return
  fi
  local line=$COMP_LINE i word trimmed n=-1
  for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
    word=${COMP_WORDS[i]}
    trimmed=${line#"${line%%[![:space:]]*}"}
    if ((n < 0)) || [[ ${#trimmed} -ne ${#line} ]]; then
      n=$((n + 1))
      _compressctl_words[n]=$word
    else
      _compressctl_words[n]+=$word
    fi
    line=${trimmed:${#word}}
    ((i == COMP_CWORD)) && _compressctl_cword=$n
  done
}

# Runs compressctl with the connection flags of the command line being completed; quiet and
# short-lived, so an unreachable server completes nothing.
_compressctl_query() {
  local -a connection=()
  local i word next
  for ((i = 1; i < ${#_compressctl_words[@]}; i++)); do
    ((i == _compressctl_cword)) && continue
    word=${_compressctl_words[i]}
    case "$word" in
      --server | --token | --token_file | --tls_ca | --tls_cert | --tls_key | --tls_server_name)
        next=${_compressctl_words[i + 1]:-}
        [[ -n $next ]] && connection+=("$word=$next")
        ;;
      --server=* | --token=* | --token_file=* | --tls_ca=* | --tls_cert=* | --tls_key=* | \
        --tls_server_name=* | --tls)
        connection+=("$word")
        ;;
    esac
  done
  local ctl=${COMPRESSCTL:-${COMP_WORDS[0]}}
  # Expand a leading ~ of the command word without eval.
  # shellcheck disable=SC2088  # a literal "~/" typed on the command line
  [[ $ctl == "~/"* ]] && ctl="$HOME/${ctl#\~/}"
  command -v "$ctl" >/dev/null 2>&1 || return 0
  "$ctl" "${connection[@]}" --timeout=2s --output=json "$@" 2>/dev/null
}

# Job ids, and "jobs/ID" names when the word being completed starts with "jobs/".
_compressctl_jobs() {
  local json
  json=$(_compressctl_query list --all) || return 0
  local names
  names=$(grep -o '"name":"jobs/[^"/]*"' <<<"$json" | sed 's/^"name":"//; s/"$//')
  if [[ $1 == jobs/* ]]; then
    echo "$names"
  else
    sed 's|^jobs/||' <<<"$names"
  fi
}

# The artifact names of job $1.
_compressctl_artifacts() {
  local json
  json=$(_compressctl_query get "$1") || return 0
  [[ $json == *'"artifacts":['* ]] || return 0
  json=${json#*\"artifacts\":[}
  grep -o '"name":"[^"]*"' <<<"$json" | sed 's/^"name":"//; s/"$//'
}

_compressctl_files() {
  local IFS=$'\n'
  if [[ $1 == dirs ]]; then
    COMPREPLY=($(compgen -d -- "$2"))
  else
    COMPREPLY=($(compgen -f -- "$2"))
  fi
  if declare -F compopt >/dev/null 2>&1; then compopt -o filenames 2>/dev/null; fi
}

# Completes the value of flag $1 (the value typed so far is $2); returns 1 for a flag without
# a value.
_compressctl_flag_value() {
  case "$1" in
    --output) COMPREPLY=($(compgen -W "text json" -- "$2")) ;;
    --token_file | --tls_ca | --tls_cert | --tls_key) _compressctl_files files "$2" ;;
    -o) _compressctl_files dirs "$2" ;;
    --server | --timeout | --retry_for | --token | --tls_server_name | --label | --priority | \
      --request_id | --max_attempts | --filter | --page_size | --chunk_size)
      COMPREPLY=()
      ;;
    *) return 1 ;;
  esac
  return 0
}

_compressctl() {
  COMPREPLY=()
  local cur=${COMP_WORDS[COMP_CWORD]}
  local prev=""
  ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}

  # "--flag=value": bash may split it at "=" (COMP_WORDBREAKS), or keep it in one word.
  if [[ $cur == "=" && $prev == -* ]]; then
    _compressctl_flag_value "$prev" "" && return 0
  elif [[ $prev == "=" ]] && ((COMP_CWORD > 1)) && [[ ${COMP_WORDS[COMP_CWORD - 2]} == -* ]]; then
    _compressctl_flag_value "${COMP_WORDS[COMP_CWORD - 2]}" "$cur" && return 0
  elif [[ $cur == -*=* ]]; then
    local flag=${cur%%=*} value=${cur#*=}
    if _compressctl_flag_value "$flag" "$value"; then
      local i
      for i in "${!COMPREPLY[@]}"; do COMPREPLY[i]="$flag=${COMPREPLY[i]}"; done
      return 0
    fi
  elif [[ $prev == -* && " $_compressctl_bool_flags " != *" $prev "* ]]; then
    _compressctl_flag_value "$prev" "$cur" && return 0
  fi

  # The command and the positional arguments before the word being completed.
  _compressctl_merge_words
  local command="" i word
  local -a positional=()
  for ((i = 1; i < _compressctl_cword; i++)); do
    word=${_compressctl_words[i]}
    if [[ $word == -* ]]; then
      if [[ $word != *=* && " $_compressctl_bool_flags " != *" $word "* ]]; then
        ((i++))  # the flag's value
      fi
      continue
    fi
    if [[ -z $command ]]; then command=$word; else positional+=("$word"); fi
  done

  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$_compressctl_global_flags $(_compressctl_command_flags "$command")" \
      -- "$cur"))
    return 0
  fi
  if [[ -z $command ]]; then
    COMPREPLY=($(compgen -W "$_compressctl_commands" -- "$cur"))
    return 0
  fi
  case "$command" in
    submit)
      ((${#positional[@]} == 0)) && _compressctl_files files "$cur"
      ;;
    get | watch | cancel | delete | logs | download)
      if ((${#positional[@]} == 0)); then
        COMPREPLY=($(compgen -W "$(_compressctl_jobs "$cur")" -- "$cur"))
      elif [[ $command == download ]] && ((${#positional[@]} == 1)); then
        COMPREPLY=($(compgen -W "$(_compressctl_artifacts "${positional[0]}")" -- "$cur"))
      fi
      ;;
    health)
      ((${#positional[@]} == 0)) &&
        COMPREPLY=($(compgen -W "compress.v1.CompressionService compress.v1.WorkerService" \
          -- "$cur"))
      ;;
  esac
  return 0
}

complete -F _compressctl compressctl
