#!/usr/bin/env bash
# ASR-5k on LibriSpeech 100 h through ESPnet: CTC over 5000 BPE units on a frozen upstream's features
# (SUPERB's weighted sum of its hidden states), the upstream one of ours registered into s3prl.hub.
#
# Stages (inputs -> outputs; rough cost):
#   0 data    ${LIBRISPEECH}/{train-clean-100,dev-clean,test-clean,test-other} -> data/<subset>  ~2 min
#   1 dump    data/* -> WORK/dump/*/{wav.scp,text}; WORK/config.yaml (upstream, checkpoint and the
#             pre-encoder's input size filled in)                                      ~1 min
#   2 bpe     sentencepiece unigram, --nbpe units on the training text -> WORK/bpe/{bpe.model,tokens.txt}
#   3 stats   espnet2.bin.asr_train --collect_stats + aggregate_stats_dirs -> WORK/stats  ~10 min
#   4 train   espnet2.bin.asr_train (frozen upstream, BLSTM, CTC) -> WORK/asr/valid.loss.best.pth
#             ~20 epochs; hours on one GPU (--ngpu 1)
#   5 decode  espnet2.bin.asr_inference, CTC greedy -> WORK/decode/<set>/1best_recog/text
#   6 score   WER/CER (jiwer) -> WORK/decode/<set>/score.json, WORK/result.json
# Every ESPnet stage is ESPnet's own command in a fresh process (logs: WORK/log/<stage>.{cmd,log}).
#
# Usage: ./run.sh --ckpt exp/star/model.pt [--upstream star_hubert_local] [--stage N] [--stop-stage M]
#                 [--asr-config conf/train_asr5k.yaml] [--nbpe 5000] [--ngpu 1] [--work exp/asr5k]
#                 [--epochs N] [--train-args "--batch_size 4 ..."]
#   (set the corpus root in db.sh or export LIBRISPEECH=/path/LibriSpeech)
set -euo pipefail

stage=0
stop_stage=6
upstream=star_hubert_local
ckpt=""
asr_config=conf/train_asr5k.yaml   # ESPnet's training config (not --config: Kaldi's parse_options.sh sources that as shell)
epochs=""               # asr_train --max_epoch (default: the config's)
train_args=""           # more espnet2.bin.asr_train arguments, e.g. "--batch_size 4 --num_workers 0"
nbpe=5000
ngpu=1
work=""                  # default: exp/asr5k_<upstream>
train_set=train-clean-100
valid_set=dev-clean
test_sets="test-clean test-other"

. ./db.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing
targs="${epochs:+--max_epoch ${epochs} }${train_args}"

[ -n "${work}" ] || work=exp/asr5k_${upstream}
dirs() { for s in "$@"; do printf 'data/%s ' "${s//-/_}"; done; }

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  log "Stage 0: LibriSpeech data dirs (${train_set} ${valid_set} ${test_sets}) from ${LIBRISPEECH}"
  # shellcheck disable=SC2086
  python -m s3prl_plugins.bin.prepare_data --root "${LIBRISPEECH}" --subsets ${train_set} ${valid_set} ${test_sets} --out data
fi

if [ ${stop_stage} -ge 1 ] && [ ${stage} -le 6 ]; then
  [ -n "${ckpt}" ] || { log "--ckpt PATH (the upstream checkpoint) is required"; exit 1; }
  first=$(( stage > 1 ? stage : 1 ))
  log "Stages ${first}-${stop_stage}: ESPnet ASR-${nbpe} of ${upstream} (${ckpt}) -> ${work}"
  # shellcheck disable=SC2046
  run_cmd "${work}/log/espnet_asr.log" python -m s3prl_plugins.bin.espnet_asr --config "${asr_config}" --upstream "${upstream}" --ckpt "${ckpt}" \
    --train $(dirs "${train_set}") --valid $(dirs "${valid_set}") --test $(dirs ${test_sets}) \
    --train-args="${targs}" --nbpe "${nbpe}" --ngpu "${ngpu}" --work "${work}" --stage "${first}" --stop-stage "${stop_stage}"
fi
