#!/usr/bin/env bash
# LibriSpeech data preparation shared by every LibriSpeech recipe (egs/librispeech/<method>/ link here).
#
# Stages (inputs -> outputs; rough cost):
#   0 download  openslr.org tarballs -> ${LIBRISPEECH} (only with --download true; 960 h is ~60 GB)
#   1 data      ${LIBRISPEECH}/<subset> -> data/<subset with _>/ (wav.scp, text, utt2spk, spk2utt,
#               utt2dur, skipped.txt); every audio header is read: ~1 min per 100 h
#   2 validate  re-reads each data dir and checks every listed audio file exists
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--subsets "train-clean-100 dev-clean test-clean"]
#        [--download true]     (set the corpus root in db.sh or export LIBRISPEECH=/path/LibriSpeech)
set -euo pipefail

stage=0
stop_stage=2
subsets="train-clean-100 dev-clean dev-other test-clean test-other"
download=false

. ./db.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if [ "${download}" = true ]; then
    log "Stage 0: downloading ${subsets} into $(dirname "${LIBRISPEECH}")"
    mkdir -p "$(dirname "${LIBRISPEECH}")"
    for s in ${subsets}; do
      if [ -d "${LIBRISPEECH}/${s}" ]; then log "${s} already there"; continue; fi
      # the tarballs unpack to LibriSpeech/<subset>: LIBRISPEECH must end in /LibriSpeech
      wget -c -P "$(dirname "${LIBRISPEECH}")" "https://www.openslr.org/resources/12/${s}.tar.gz"
      tar -C "$(dirname "${LIBRISPEECH}")" -xzf "$(dirname "${LIBRISPEECH}")/${s}.tar.gz"
    done
  else
    log "Stage 0: skipped (--download false); using ${LIBRISPEECH}"
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: Kaldi data dirs for ${subsets}"
  # shellcheck disable=SC2086
  python -m s3prl_plugins.bin.prepare_data --root "${LIBRISPEECH}" --subsets ${subsets} --out data
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: validating data dirs"
  for s in ${subsets}; do
    python -m s3prl_plugins.bin.inspect "data/${s//-/_}"
  done
fi
