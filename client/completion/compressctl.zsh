#compdef compressctl
# zsh completion of compressctl (docs/cli.md). Install it as _compressctl in a folder of $fpath
# before compinit runs, or source it after compinit.
#
# Completes commands, flags and their values; job ids (get, watch, cancel, delete, download, logs)
# and artifact names (download JOB ARTIFACT) come from the server named on the command line
# (`compressctl list --all --output json`, `compressctl get JOB --output json`), using the same
# --server, token and TLS flags; nothing is offered when the server does not answer.

# Runs compressctl quietly with the connection flags of the line being completed
# ($_compressctl_connection, $_compressctl_binary, set by _compressctl).
_compressctl_call() {
  (( $+commands[$_compressctl_binary] )) || [[ -x $_compressctl_binary ]] || return 1
  "$_compressctl_binary" "${_compressctl_connection[@]}" --timeout=2s --output=json "$@" \
    2>/dev/null
}

# Job ids, or "jobs/ID" names when the word typed so far starts with "jobs/".
_compressctl_jobs() {
  local json
  local -a names
  json=$(_compressctl_call list --all) || return 1
  names=(${(f)"$(print -r -- "$json" | grep -o '"name":"jobs/[^"/]*"' |
                 sed 's/^"name":"//; s/"$//')"})
  [[ $PREFIX == jobs/* ]] || names=(${names#jobs/})
  _wanted jobs expl 'job' compadd -a names
}

# The artifact names of the job given before the word being completed.
_compressctl_artifacts() {
  local job="" json word
  local -i i
  for (( i = 2; i < CURRENT; i++ )); do
    word=${words[i]}
    if [[ $word == -* ]]; then
      [[ $word == *=* || $word == --tls ]] || (( i++ ))
      continue
    fi
    job=$word
    break
  done
  [[ -n $job ]] || return 1
  json=$(_compressctl_call get "$job") || return 1
  [[ $json == *'"artifacts":['* ]] || return 1
  json=${json#*\"artifacts\":\[}
  local -a names
  names=(${(f)"$(print -r -- "$json" | grep -o '"name":"[^"]*"' | sed 's/^"name":"//; s/"$//')"})
  _wanted artifacts expl 'artifact' compadd -a names
}

_compressctl() {
  local curcontext="$curcontext" state line ret=1
  typeset -A opt_args
  local _compressctl_binary=${COMPRESSCTL:-${words[1]/#\~/$HOME}}
  local -a _compressctl_connection
  local -i i
  for (( i = 2; i <= $#words; i++ )); do
    (( i == CURRENT )) && continue
    case ${words[i]} in
      --server | --token | --token_file | --tls_ca | --tls_cert | --tls_key | --tls_server_name)
        if (( i + 1 != CURRENT )) && [[ -n ${words[i + 1]} ]]; then
          _compressctl_connection+=("${words[i]}=${words[i + 1]}")
        fi
        ;;
      --server=* | --token=* | --token_file=* | --tls_ca=* | --tls_cert=* | --tls_key=* | \
        --tls_server_name=* | --tls)
        _compressctl_connection+=("${words[i]}")
        ;;
    esac
  done

  local -a global_flags
  global_flags=(
    '--server=[address of compressd, HOST:PORT]:address: '
    '--timeout=[deadline of every call, e.g. 30s]:duration: '
    '--retry_for=[how long watch and download retry an unreachable server]:duration: '
    '--output=[output format]:format:(text json)'
    '--token=[bearer token]:token: '
    '--token_file=[file holding the bearer token]:file:_files'
    '--tls[dial with TLS]'
    '--tls_ca=[PEM CAs that verify the server]:file:_files'
    '--tls_cert=[PEM client certificate]:file:_files'
    '--tls_key=[PEM private key of --tls_cert]:file:_files'
    '--tls_server_name=[name the server certificate must carry]:name: '
  )

  _arguments -C : $global_flags '1:command:->command' '*::argument:->argument' && ret=0

  case $state in
    command)
      local -a subcommands
      subcommands=(
        'submit:create a job from a JobSpec JSON or YAML file'
        'get:show a job'
        'list:list jobs'
        'watch:follow a job until it ends'
        'cancel:request cancellation of a job'
        'delete:delete a finished job with its events and artifacts'
        'download:download the artifacts of a job'
        'logs:show the log lines of a job'
        'health:ask the grpc.health.v1 service whether compressd serves'
        'help:show the usage'
      )
      _describe -t commands 'compressctl command' subcommands && ret=0
      ;;
    argument)
      curcontext="${curcontext%:*:*}:compressctl-${words[1]}:"
      case ${words[1]} in
        submit)
          _arguments : $global_flags \
            '*--label=[label of the job, KEY=VALUE]:label: ' \
            '--priority=[higher runs first]:priority: ' \
            '--request_id=[idempotency key]:request id: ' \
            '--max_attempts=[attempts before the job fails, 0 = server default]:attempts: ' \
            '--wait[follow the job and exit with its outcome]' \
            '1:spec file:_files -g "*.(json|yaml|yml)(-.)"' && ret=0
          ;;
        list)
          _arguments : $global_flags \
            '--filter=[e.g. state = RUNNING AND labels.team = "vision"]:filter: ' \
            '--page_size=[jobs per page, 0 = server default]:page size: ' \
            '--all[follow the page tokens to the end]' && ret=0
          ;;
        get | watch | cancel | delete)
          _arguments : $global_flags '1:job:_compressctl_jobs' && ret=0
          ;;
        logs)
          _arguments : $global_flags '--follow[keep following until the job ends]' \
            '1:job:_compressctl_jobs' && ret=0
          ;;
        health)
          _arguments : $global_flags '1:service:(compress.v1.CompressionService compress.v1.WorkerService)' && ret=0
          ;;
        download)
          _arguments : $global_flags \
            '-o[output directory]:directory:_directories' \
            '--chunk_size=[bytes per message, 0 = server default]:bytes: ' \
            '1:job:_compressctl_jobs' '2:artifact:_compressctl_artifacts' && ret=0
          ;;
      esac
      ;;
  esac
  return ret
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _compressctl "$@"
else
  compdef _compressctl compressctl
fi
