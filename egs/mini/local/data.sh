#!/usr/bin/env bash
# The mini corpus's data stage (ssl.sh stage 1), run from egs/mini:
#   espeak-ng -> --corpus-dir (LibriSpeech layout, exact word times) and its --subsets (keyword spotting in
#   the Speech Commands v0.01 layout, speaker identification) -> $corpus_dir/subsets          ~45 s, 75 MB
#   -> data/{train,dev,test} (Kaldi data dirs + skipped.txt + phones: the corpus's espeak-ng phones, words
#   separated by |), data/{ks,sid}_{train,dev,test} (text = keyword class; utt2spk = speaker)    ~2 s
set -euo pipefail

corpus_dir=data/mini_corpus
utts_per_speaker=45
seed=0
subsets="ks sid"
jobs=2

. utils/log.sh
. utils/parse_options.sh

if stage_done corpus; then
  log "the mini corpus is already in ${corpus_dir}"
else
  log "synthesising the mini corpus into ${corpus_dir}"
  # shellcheck disable=SC2086
  python -m s3prl_plugins.bin.make_mini_corpus --out "${corpus_dir}" --seed "${seed}" \
    --utts-per-speaker "${utts_per_speaker}" --jobs "${jobs}" --subsets ${subsets}
  mark_done corpus
fi
log "Kaldi data dirs from ${corpus_dir}"
python -m s3prl_plugins.bin.prepare_data --root "${corpus_dir}/LibriSpeech" --subsets train dev test --out data
for split in train dev test; do
  python -m s3prl_plugins.bin.make_phones --dirs "data/${split}" --mini-corpus "${corpus_dir}" --split "${split}" > /dev/null
done
for kind in ${subsets}; do
  for split in train dev test; do
    rm -rf "data/${kind}_${split}" && cp -r "${corpus_dir}/subsets/data/${kind}_${split}" "data/${kind}_${split}"
  done
done
