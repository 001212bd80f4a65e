# zsh_complete.zsh COMPLETION_FILE LINE: prints, one per line and sorted, the matches zsh's
# completion offers when TAB is pressed at the end of LINE in an interactive zsh (run in a
# pseudo-terminal with zsh/zpty) that has loaded COMPLETION_FILE after compinit.
zmodload zsh/zpty || exit 2
zpty z zsh -f -i
zpty -w z "PS1='' PROMPT='' RPROMPT=''"
zpty -w z "autoload -Uz compinit; compinit -u -D"
zpty -w z "source ${(q)1}"
# Every match added, printed to the terminal as <MATCH>word</MATCH> (calls that only collect
# matches into arrays, -O/-A/-D, are passed through).
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a __hits; builtin compadd -A __hits "$@"
  local h; for h in $__hits; do print -r -- "<MATCH>$h</MATCH>" >/dev/tty; done
  builtin compadd "$@"
}'
zpty -w z "zstyle ':completion:*' list-prompt ''; zstyle ':completion:*' select-prompt ''"
zpty -w z "print -r -- ST''ART"
zpty -r -m z out '*START*'
zpty -n -w z "$2"$'\t'
zpty -n -w z $'\C-u'
zpty -w z "print -r -- EN''D"
zpty -r -m z out '*END*'
print -r -- "$out" | tr '\r' '\n' | grep -o '<MATCH>[^<]*</MATCH>' |
  sed 's/^<MATCH>//; s/<\/MATCH>$//' | sort -u
zpty -d z
