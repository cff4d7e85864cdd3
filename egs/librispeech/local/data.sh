#!/usr/bin/env bash
# The LibriSpeech data stage (ssl.sh stage 1) of every egs/librispeech/<method> recipe, run from its directory:
# the subsets' Kaldi data dirs (made once for all recipes by ../run.sh) linked into data/, data/train = the
# training subsets combined (local/prepare_train.sh), CMUdict phones for the probe sets.     ~1 min per 100 h
set -euo pipefail

train_set=100                     # 100: train-clean-100; 960: + train-clean-360 and train-other-500
eval_sets="dev-clean test-clean"
phone_sets="data/train_clean_100 data/test_clean"   # the probe's sets

. utils/log.sh
. utils/parse_options.sh

case "${train_set}" in
  100) subsets="train-clean-100" ;;
  960) subsets="train-clean-100 train-clean-360 train-other-500" ;;
  *) log "--train-set must be 100 or 960"; exit 1 ;;
esac
log "LibriSpeech data dirs (${subsets} + ${eval_sets})"
local/prepare_train.sh "${subsets}" "${eval_sets}"
log "CMUdict phones for the probe sets"
# shellcheck disable=SC2086
python -m s3prl_plugins.bin.make_phones --dirs ${phone_sets}
