#!/usr/bin/env bash
# Kaldi-style option parsing for recipes. Source it after giving every option a default:
#
#   stage=0
#   use_gpu=false
#   . utils/parse_options.sh
#
# Then `--stage 3`, `--use-gpu true` (dashes become underscores) set those variables; `--config FILE`
# sources FILE first; `--help` prints the defaults, each with the comment on its line in the script. An
# option with no default is an error, and so is a boolean set to anything but true/false. Positional
# arguments stay in "$@".
#
# A recipe that hands the rest to the script it calls (ESPnet's run.sh -> asr.sh "$@") declares
#   passthrough=()
# first: an option it does not know then goes, with its value, into that array (the called script, parsing
# them the same way, refuses what it does not know either), e.g. `./ssl.sh ... "${passthrough[@]}"`.

__passing() { [[ "$(declare -p passthrough 2>/dev/null)" == "declare -a"* ]]; }

__usage() {
  echo "usage: $0 [options] ${positional_help:-}" >&2
  echo "options (defaults):" >&2
  for __v in ${__option_names}; do
    case "${__v}" in passthrough|passthrough_to) continue;; esac
    # the comment on the option's line in the script, if any (`ngpu=1   # GPUs per job`)
    __c=$(sed -n "s/^${__v}=[^#]*#[[:space:]]*//p" "$0" 2>/dev/null | head -1)
    __d=${!__v}
    printf '  --%s %s%s\n' "${__v//_/-}" "${__d:-\"\"}" "${__c:+   # ${__c}}" >&2
  done
  if __passing; then echo "any other --option VALUE: passed on to ${passthrough_to:-the script this one calls}" >&2; fi
}

__option_names=$(set | sed -n 's/^\([a-z][a-z0-9_]*\)=.*/\1/p' | tr '\n' ' ')

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      __usage
      exit 0
      ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 1; }
      [ -f "$2" ] || { echo "$0: config file $2 not found" >&2; exit 1; }
      case "$2" in *.yaml|*.yml)
        echo "$0: --config $2: --config sources a shell file of option defaults (Kaldi's convention), not YAML;" \
             "see --help for the recipe's YAML options (e.g. --asr-config)" >&2; exit 1;; esac
      # shellcheck disable=SC1090
      . "$2"
      shift 2
      ;;
    --*=*)
      __name=${1%%=*}; __value=${1#*=}
      set -- "$__name" "$__value" "${@:2}"
      ;;
    --*)
      __name=${1#--}; __name=${__name//-/_}
      if [ -z "${!__name+x}" ] || [ "${__name}" = passthrough ]; then
        if __passing; then
          [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
          passthrough+=("$1" "$2")
          shift 2
          continue
        fi
        echo "$0: unknown option $1 (see --help)" >&2
        exit 1
      fi
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
      __old=${!__name}
      if [ "$__old" = "true" ] || [ "$__old" = "false" ]; then
        if [ "$2" != "true" ] && [ "$2" != "false" ]; then
          echo "$0: $1 is a boolean: use true or false, not '$2'" >&2
          exit 1
        fi
      fi
      printf -v "$__name" '%s' "$2"
      shift 2
      ;;
    *)
      break
      ;;
  esac
done
unset __name __value __old __option_names
unset -f __passing __usage
true
