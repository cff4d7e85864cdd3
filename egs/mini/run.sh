#!/usr/bin/env bash
# The embedded default: every stage on the synthetic mini corpus, minutes on a laptop CPU.
#
# Stages (inputs -> outputs; rough cost on 2 CPU cores):
#   0 corpus   espeak-ng -> $corpus_dir (LibriSpeech layout, exact word times)     ~30 s, 60 MB
#   1 data     $corpus_dir -> data/{train,dev,test} (Kaldi data dirs + skipped.txt)  ~2 s
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--corpus-dir DIR] [--utts-per-speaker K] [--seed S]
# Finished stages are skipped (markers in exp/.done.*); delete a marker to redo a stage.
set -euo pipefail

stage=0
stop_stage=100
corpus_dir=data/mini_corpus
utts_per_speaker=45
seed=0
nj=2

. ./path.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if stage_done corpus; then
    log "Stage 0: corpus already made in ${corpus_dir}"
  else
    log "Stage 0: synthesising the mini corpus into ${corpus_dir}"
    python -m s3prl_plugins.bin.make_mini_corpus --out "${corpus_dir}" --seed "${seed}" \
      --utts-per-speaker "${utts_per_speaker}" --jobs "${nj}"
    mark_done corpus
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  if stage_done data; then
    log "Stage 1: data dirs already in data/"
  else
    log "Stage 1: Kaldi data dirs from ${corpus_dir}"
    python -m s3prl_plugins.bin.prepare_data --root "${corpus_dir}/LibriSpeech" --subsets train dev test --out data
    mark_done data
  fi
fi

log "Done. Corpus: ${corpus_dir}; data dirs: data/{train,dev,test}"
