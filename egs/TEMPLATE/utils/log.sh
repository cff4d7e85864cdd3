#!/usr/bin/env bash
# log MESSAGE: prints "YYYY-mm-dd HH:MM:SS (file:line:function) MESSAGE" to stderr.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# stage_done NAME: true when the stage's marker exists. mark_done NAME: write it.
stage_done() { [ -f "exp/.done.$1" ]; }
mark_done() { mkdir -p exp; touch "exp/.done.$1"; }

# The one train_cmd dispatch (cmd.sh), used by run_cmd here and by utils/run_job.sh.
# train_cmd_writes_log: true when ${train_cmd} is one of Kaldi's *.pl (run.pl, queue.pl, slurm.pl), which take
# the log file first and write it themselves.
train_cmd_writes_log() {
  local c
  read -r -a c <<< "${train_cmd:-}"
  [ ${#c[@]} -gt 0 ] && [[ "${c[0]}" == *.pl ]]
}

# run_cmd LOG COMMAND...: COMMAND through ${train_cmd} as its syntax wants: a *.pl takes LOG first and writes
# it; anything else (srun ...) takes the command; "" runs it here.
run_cmd() {
  local logf=$1 c; shift
  read -r -a c <<< "${train_cmd:-}"
  if train_cmd_writes_log; then
    mkdir -p "$(dirname "${logf}")"
    "${c[@]}" "${logf}" "$@"
  else
    ${c[@]+"${c[@]}"} "$@"
  fi
}
