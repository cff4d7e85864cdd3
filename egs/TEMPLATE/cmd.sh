#!/usr/bin/env bash
# How recipes run their heavy jobs. Local by default; on a cluster, set e.g.
#   train_cmd="srun --gres=gpu:1 --cpus-per-task=8"   (Slurm)
#   train_cmd="queue.pl --gpu 1"                      (Kaldi's queue.pl)
# Recipes run "$train_cmd python -m ..." so the same stage works in both places.
export train_cmd="${train_cmd:-}"
export decode_cmd="${decode_cmd:-}"
