#!/usr/bin/env bash
# log MESSAGE: prints "YYYY-mm-dd HH:MM:SS (file:line:function) MESSAGE" to stderr.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# stage_done NAME: true when the stage's marker exists. mark_done NAME: write it.
stage_done() { [ -f "exp/.done.$1" ]; }
mark_done() { mkdir -p exp; touch "exp/.done.$1"; }

# run_cmd LOG COMMAND...: COMMAND through ${train_cmd} (cmd.sh) as its syntax wants: Kaldi's *.pl (run.pl,
# queue.pl, slurm.pl) take LOG first and write it; anything else (srun ...) takes the command; "" runs it here.
run_cmd() {
  local logf=$1 c; shift
  read -r -a c <<< "${train_cmd:-}"
  if [ ${#c[@]} -gt 0 ] && [[ "${c[0]}" == *.pl ]]; then
    mkdir -p "$(dirname "${logf}")"
    "${c[@]}" "${logf}" "$@"
  else
    ${c[@]+"${c[@]}"} "$@"
  fi
}
