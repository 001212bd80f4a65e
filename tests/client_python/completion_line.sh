# Sourced by the completion tests.

# set_line LINE: sets COMP_LINE, COMP_POINT, COMP_WORDS and COMP_CWORD as bash does when TAB is
# pressed at the end of LINE: words split at whitespace, then at "=" and ":" (COMP_WORDBREAKS),
# which become words of their own.
set_line() {
  COMP_LINE="$1"
  COMP_POINT=${#COMP_LINE}
  COMP_WORDS=()
  local token
  local -a tokens
  read -ra tokens <<<"$1"
  for token in "${tokens[@]}"; do
    while [[ $token =~ ^([^=:]*)([=:])(.*)$ ]]; do
      [[ -n ${BASH_REMATCH[1]} ]] && COMP_WORDS+=("${BASH_REMATCH[1]}")
      COMP_WORDS+=("${BASH_REMATCH[2]}")
      token=${BASH_REMATCH[3]}
    done
    [[ -n $token ]] && COMP_WORDS+=("$token")
  done
  [[ $1 == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
}
