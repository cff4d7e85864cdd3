#!/usr/bin/env bash
# Independent stages side by side, ${nj} at a time (Kaldi recipes' `cmd &` ... `wait`, with dependencies).
# Source after utils/log.sh.
#
#   job [--first] NAME "DEPS" COMMAND [ARGS...]
#       Skipped when exp/.done.NAME exists. With nj > 1: returns at once; in the background, COMMAND (a
#       shell function or program) runs after every job named in DEPS (space-separated) has finished,
#       in one of ${nj} slots (exp/.slots/: one recipe run per directory at a time), its output in
#       exp/log/NAME.log, with OMP_NUM_THREADS = cores / nj (at least 1). With nj = 1: runs it here and
#       now, its output on the terminal. On success: exp/.done.NAME; on failure: exp/.failed.NAME (and
#       every job depending on it fails too). A free slot goes to the first job in queue order whose
#       dependencies are done; --first puts a job ahead of every job queued without it (the long
#       trainings: the short probes then fill the time around them, instead of delaying them).
#   job_wait [NAMES]
#       Waits for those jobs (every started one when none are named). When one failed: prints its log's
#       tail, waits for the others (nothing is killed half-way), and exits 1.
#
# Why: one small PyTorch job does not keep 2 cores busy. The mini STaR student trains at 1.73 updates/s on 2
# threads alone and at 1.28 updates/s on 1 thread beside a second such job (2 cores), so two side by side
# finish in 1/1.48 of the time of the two in a row (egs/mini/RESULTS.md, "Recipe jobs side by side").

declare -A __job_pid=()
__job_seq=0
__job_main=$$
rm -rf exp/.slots   # slots left by a killed run
__job_cores=$(nproc 2>/dev/null || echo 1)

__job_deps() {
  # inside the job's subshell: wait until every dependency is done (fail when one failed or never started)
  local name=$1 deps=$2 dep
  for dep in ${deps}; do
    while ! stage_done "${dep}"; do
      kill -0 "${__job_main}" 2>/dev/null || { echo "the recipe (pid ${__job_main}) has stopped: ${name} not started" >&2; return 1; }
      if [ -f "exp/.failed.${dep}" ]; then
        echo "job ${name}: its dependency ${dep} failed (exp/log/${dep}.log)" >&2; return 1
      fi
      if [ -z "${__job_pid[${dep}]:-}" ] || ! kill -0 "${__job_pid[${dep}]}" 2>/dev/null; then
        stage_done "${dep}" && break   # finished between the two checks
        echo "job ${name}: needs ${dep} (exp/.done.${dep}), which is neither done nor running: run its stage first" >&2; return 1
      fi
      sleep 2
    done
  done
}

__job_body() {
  __job_deps "$1" "$2"
  shift 2
  "$@"
}

__job_first_ready() {
  # the queued job (exp/.slots/wait.<seq>: "pid deps") of the lowest seq whose dependencies are all done --
  # whether or not it has noticed yet (its check runs every 2 s): a slot given back by a finished job goes to
  # the job that was waiting for it, if that one was queued first, not to a later one already at the slots
  local f pid deps dep ready
  for f in $(ls exp/.slots 2>/dev/null | grep '^wait\.' | sort); do
    read -r pid deps < "exp/.slots/${f}" 2>/dev/null || continue
    kill -0 "${pid}" 2>/dev/null || continue   # a job killed outright: not waited for
    ready=1
    for dep in ${deps}; do stage_done "${dep}" || { ready=0; break; }; done
    if [ ${ready} -eq 1 ]; then echo "${f#wait.}"; return 0; fi
  done
}

__job_slot() {
  # take one of ${nj} slots (mkdir is atomic) once this job is the first ready one in queue order (the
  # recipe queues its jobs in stage order); prints the slot
  local seq=$1 i
  while true; do
    if [ "$(__job_first_ready)" = "${seq}" ]; then
      for ((i = 0; i < nj; i++)); do
        if mkdir "exp/.slots/${i}" 2>/dev/null; then rm -f "exp/.slots/wait.${seq}"; echo "exp/.slots/${i}"; return 0; fi
      done
    fi
    sleep 1
  done
}

job() {
  local first=1
  if [ "$1" = --first ]; then first=0; shift; fi
  local name=$1 deps=$2; shift 2
  stage_done "${name}" && return 0
  mkdir -p exp/log exp/.slots
  rm -f "exp/.failed.${name}"
  if [ "${nj}" -le 1 ]; then
    # a subshell outside any `if`, so that `set -e` stops the job at its first failing command
    local rc=0
    set +e; ( set -e; __job_body "${name}" "${deps}" "$@" ); rc=$?; set -e
    [ ${rc} -eq 0 ] || { touch "exp/.failed.${name}"; log "job ${name} failed"; exit 1; }
    mark_done "${name}"
    return 0
  fi
  local threads=$(( __job_cores / nj )); [ "${threads}" -ge 1 ] || threads=1
  __job_seq=$(( __job_seq + 1 ))
  local seq; seq=$(printf '%d%06d' "${first}" "${__job_seq}")
  # in the queue from now on (the job puts its own pid; written whole, as the other jobs read it meanwhile)
  echo "${__job_main} ${deps}" > "exp/.slots/.wait.${seq}" && mv "exp/.slots/.wait.${seq}" "exp/.slots/wait.${seq}"
  (
    export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads}
    exec 3>&2   # the recipe's terminal: each job says there when it starts and ends
    set +e
    (
      set -e
      slot=""
      trap 'rm -f "exp/.slots/wait.${seq}"; [ -z "${slot}" ] || rmdir "${slot}" 2>/dev/null' EXIT
      echo "${BASHPID} ${deps}" > "exp/.slots/.wait.${seq}" && mv "exp/.slots/.wait.${seq}" "exp/.slots/wait.${seq}"
      __job_deps "${name}" "${deps}"
      slot=$(__job_slot "${seq}")
      # the recipe itself was stopped (not with Ctrl-C, which stops every job): start nothing more
      kill -0 "${__job_main}" 2>/dev/null || { echo "the recipe (pid ${__job_main}) has stopped: ${name} not started" >&2; exit 1; }
      # said twice, to the job's log and to fd 3 (a pipe through tee to the fd's /dev path would reopen a
      # redirected recipe log, ./run.sh > run.log, with O_TRUNC and wipe it)
      msg="$(date '+%Y-%m-%d %H:%M:%S') job ${name} starts (${threads} thread(s))"; echo "${msg}"; echo "${msg}" >&3
      started=${SECONDS}
      "$@"
      mark_done "${name}"   # before the slot is given back, so that the jobs waiting for this one are ready
      took=$(( SECONDS - started ))
      msg=$(printf '%s job %s done (%d min %02d s)' "$(date '+%Y-%m-%d %H:%M:%S')" "${name}" $(( took / 60 )) $(( took % 60 )))
      echo "${msg}"; echo "${msg}" >&3
    ) > "exp/log/${name}.log" 2>&1
    if [ $? -ne 0 ]; then
      touch "exp/.failed.${name}"
      echo "$(date '+%Y-%m-%d %H:%M:%S') job ${name} FAILED (exp/log/${name}.log)" >&3
    fi
  ) &
  __job_pid[${name}]=$!
  log "  job ${name} queued (runs after: ${deps:-nothing}; log: exp/log/${name}.log)"
}

job_wait() {
  local names=("$@") name failed=()
  [ ${#names[@]} -gt 0 ] || names=("${!__job_pid[@]}")
  for name in "${names[@]}"; do
    [ -n "${__job_pid[${name}]:-}" ] || continue
    wait "${__job_pid[${name}]}" 2>/dev/null || true
    unset "__job_pid[${name}]"
    stage_done "${name}" || failed+=("${name}")   # each job said it was done when it was
  done
  if [ ${#failed[@]} -gt 0 ]; then
    for name in "${failed[@]}"; do
      log "job ${name} failed; the end of exp/log/${name}.log:"
      tail -20 "exp/log/${name}.log" >&2 || true
    done
    [ ${#__job_pid[@]} -eq 0 ] || log "waiting for the other jobs to finish: ${!__job_pid[*]}"
    wait || true
    exit 1
  fi
}
