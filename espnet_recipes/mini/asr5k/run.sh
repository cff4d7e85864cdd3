#!/usr/bin/env bash
# ASR-5k's recipe on the mini corpus: the same ESPnet stages as ../../librispeech_100/asr5k/run.sh
# (dump -> BPE -> stats -> train -> decode -> score, ESPnet's own commands), a laptop-sized model
# (conf/train_asr_mini.yaml) and a BPE vocabulary the mini text holds (--nbpe 100).
#
# Inputs: the mini recipe's data dirs and a student (egs/mini: ./run.sh --stop-stage 6 makes both).
# Stages: 1 dump  2 bpe  3 stats  4 train (15 epochs, ~8 min on 2 cores)  5 decode  6 score
#         -> WORK/result.json (WER/CER on the mini test set)
# Usage: ./run.sh [--ckpt ../../../egs/mini/exp/star_tiny/model.pt] [--upstream star_hubert_local]
#                 [--mini ../../../egs/mini] [--stage N] [--stop-stage M] [--nbpe 100] [--work exp/asr5k]
#                 [--asr-config conf/train_asr_mini.yaml] [--epochs N] [--train-args "--batch_size 4 ..."]
set -euo pipefail

stage=1
stop_stage=6
mini=../../../egs/mini
upstream=star_hubert_local
ckpt=""                 # default: MINI/exp/star_tiny/model.pt
asr_config=conf/train_asr_mini.yaml   # ESPnet's training config (not --config: Kaldi's parse_options.sh sources that as shell)
epochs=""               # asr_train --max_epoch (default: the config's)
train_args=""           # more espnet2.bin.asr_train arguments, e.g. "--batch_size 4 --num_workers 0"
nbpe=100
work=""                 # default: exp/asr5k_<upstream>

. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing
targs="${epochs:+--max_epoch ${epochs} }${train_args}"

[ -n "${ckpt}" ] || ckpt=${mini}/exp/star_tiny/model.pt
[ -n "${work}" ] || work=exp/asr5k_${upstream}
for d in train dev test; do
  [ -f "${mini}/data/${d}/text" ] || { log "no ${mini}/data/${d}: run the mini recipe first (cd ${mini} && ./run.sh --stop-stage 1)"; exit 1; }
done
[ -f "${ckpt}" ] || { log "no upstream checkpoint ${ckpt}: give --ckpt, or run the mini recipe's stage 6"; exit 1; }

log "Stages ${stage}-${stop_stage}: ESPnet ASR-${nbpe} of ${upstream} (${ckpt}) on ${mini}/data -> ${work}"
run_cmd "${work}/log/espnet_asr.log" python -m s3prl_plugins.bin.espnet_asr --config "${asr_config}" --upstream "${upstream}" --ckpt "${ckpt}" \
  --train "${mini}/data/train" --valid "${mini}/data/dev" --test "${mini}/data/test" \
  --train-args="${targs}" --nbpe "${nbpe}" --ngpu 0 --work "${work}" --stage "${stage}" --stop-stage "${stop_stage}"
