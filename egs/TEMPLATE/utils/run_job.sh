#!/usr/bin/env bash
# utils/run_job.sh NAME: runs the job script exp/jobs/NAME.sh (written by ssl.sh) through ${train_cmd}, as
# GNU make's rule for exp/.done.NAME (exp/jobs.mk), or by itself. Run from the recipe's directory.
#
#   JOBS (from make's caller) > 1: the job's output goes to exp/log/NAME.log and it says when it starts and
#   ends on the terminal; OMP_NUM_THREADS = cores / JOBS (one small PyTorch job does not keep 2 cores busy:
#   two side by side finish in 1/1.48 of the time of two in a row, egs/mini/RESULTS.md). JOBS = 1: output on
#   the terminal (and in the log).
#   train_cmd: "" runs here; a program whose name ends in .pl (Kaldi's run.pl, queue.pl, slurm.pl) is given
#   the log file first, as they expect; anything else (srun ...) is given the command.
# On success: exp/.done.NAME. On failure: exp/.failed.NAME, the end of the log, exit 1.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 NAME (runs exp/jobs/NAME.sh)" >&2; exit 2; }
name=$1
script=exp/jobs/${name}.sh
logfile=exp/log/${name}.log
[ -f "${script}" ] || { echo "$0: no ${script} (run the recipe's stage that writes it)" >&2; exit 2; }
mkdir -p exp/log
rm -f "exp/.failed.${name}"
jobs=${JOBS:-1}
if [ "${jobs}" -gt 1 ]; then
  threads=$(( $(nproc 2>/dev/null || echo 1) / jobs )); [ "${threads}" -ge 1 ] || threads=1
  export OMP_NUM_THREADS=${threads} MKL_NUM_THREADS=${threads}
fi
. "$(dirname "${BASH_SOURCE[0]}")/log.sh"   # run_cmd, train_cmd_writes_log: the one train_cmd dispatch
say() { echo "$(date '+%Y-%m-%d %H:%M:%S') job ${name} $*" >&2; }
say "starts${OMP_NUM_THREADS:+ (${OMP_NUM_THREADS} thread(s))}: ${script}, log ${logfile}"
started=${SECONDS}
rc=0
if train_cmd_writes_log; then
  run_cmd "${logfile}" bash "${script}" || rc=$?   # Kaldi's scripts write the log themselves
  [ "${jobs}" -gt 1 ] || [ ${rc} -ne 0 ] || tail -5 "${logfile}" >&2
elif [ "${jobs}" -gt 1 ]; then
  run_cmd "${logfile}" bash "${script}" > "${logfile}" 2>&1 || rc=$?
else
  set +e
  # tee outlives a stop (ssl.sh sends SIGTERM to the job's group): the job's last words reach the terminal and log
  run_cmd "${logfile}" bash "${script}" 2>&1 | ( trap '' INT TERM; exec tee "${logfile}" )
  rc=${PIPESTATUS[0]}
  set -e
fi
took=$(( SECONDS - started ))
if [ "${rc}" -ne 0 ]; then
  touch "exp/.failed.${name}"
  say "FAILED (exit ${rc}); the end of ${logfile}:"
  tail -20 "${logfile}" >&2
  exit 1
fi
touch "exp/.done.${name}"
say "done ($(( took / 60 )) min $(( took % 60 )) s)"
