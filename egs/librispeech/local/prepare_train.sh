#!/usr/bin/env bash
# The data stage every LibriSpeech recipe here shares (star, distilhubert_cif, melhubert: their stage 0).
#
# Usage (from a recipe directory, egs/librispeech/<recipe>):
#   ../local/prepare_train.sh "train-clean-100 train-clean-360 train-other-500" "dev-clean test-clean"
#
# egs/librispeech/run.sh stages 1-2 make (or keep) the Kaldi data dirs of every subset once, for all recipes,
# in egs/librispeech/data/<subset with _>; they are linked into this recipe's data/, and data/train is the
# training subsets combined (bin/combine_data: utterance ids must not repeat across subsets).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 \"TRAIN_SUBSETS\" \"EVAL_SUBSETS\"" >&2; exit 2; }
subsets=$1
eval_sets=$2

(cd .. && ./run.sh --stage 1 --stop-stage 2 --subsets "${subsets} ${eval_sets}")
mkdir -p data
for s in ${subsets} ${eval_sets}; do ln -sfn "../../data/${s//-/_}" "data/${s//-/_}"; done
# shellcheck disable=SC2046
python -m s3prl_plugins.bin.combine_data --out data/train $(for s in ${subsets}; do echo "data/${s//-/_}"; done)
