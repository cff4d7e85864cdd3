#!/usr/bin/env bash
# How recipes run their jobs (utils/run_job.sh; every job of stages 3-8 and the aligner). Local by default.
# On a cluster, one of (each works as written):
#   export train_cmd="srun --gres=gpu:1 --cpus-per-task=8"   Slurm's srun: the job's command follows
#   export train_cmd="slurm.pl --gpu 1"                      Kaldi's slurm.pl / queue.pl / run.pl (on PATH,
#                                                            with their conf/*.conf): the job's log file first
export train_cmd="${train_cmd:-}"
