#!/usr/bin/env bash
# log MESSAGE: prints "YYYY-mm-dd HH:MM:SS (file:line:function) MESSAGE" to stderr.
log() {
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# stage_done NAME: true when the stage's marker exists. mark_done NAME: write it.
stage_done() { [ -f "exp/.done.$1" ]; }
mark_done() { mkdir -p exp; touch "exp/.done.$1"; }
