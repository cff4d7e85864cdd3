#!/usr/bin/env bash
# MelHuBERT compression on LibriSpeech (Lin et al. 2024): pre-train MelHuBERT (two k-means iterations),
# compress it with every method -- weight, head (eq. 4 / eq. 5) and FFN pruning, KD, first-k layers, the
# combined chain, diagonal heads replaced by the identity / a 1-D convolution -- then probe and report.
#
# Stages (inputs -> outputs):
#   0 data        ${LIBRISPEECH} -> data/<subsets> (../local/prepare_train.sh over ../run.sh), data/train (--train-set 960 or 100)
#   1 phones      CMUdict phones for the probe -> data/{train_clean_100,test_clean}/phones
#   2 targets 1   k-means (512) of log-Mel frames (every 2nd for 20 ms) -> exp/targets/it1_<F>ms
#   3 pretrain 1  conf/melhubert_<F>ms.yaml -> exp/melhubert_<F>ms_it1/model.pt   (200 epochs)
#   4 targets 2   k-means (512) of layer 9 of iteration 1 -> exp/targets/it2_<F>ms
#   5 pretrain 2  -> exp/melhubert_<F>ms_it2/model.pt (200 epochs at 10 ms, 100 at 20 ms)
#   6 compress    each of --chains (conf/compress/<chain>.yaml over conf/compress/common.yaml) ->
#                 exp/compress_<F>ms/<chain>/<NN>_<method><k>/model.pt (+ metrics.json), trajectory.csv;
#                 resumes where it stopped (every iteration probed: phone CTC probe -> test-clean)
#   7 downstream  with --s3prl-root: SUPERB PR through s3prl's own runner on each chain's last model
#                 -> exp/compress_<F>ms/<chain>/superb_pr/superb_test.json
#   8 report      exp/compress_<F>ms/report/{report.md,tradeoff.png,density.png,weight_density.png,diagonality.png}
#
# Every model loads with s3prl.hub.melhubert_pruned_local(ckpt=.../model.pt).
# Usage: ./run.sh [--stage N] [--stop-stage M] [--frame 10|20] [--train-set 960|100]
#                 [--chains "weight heads heads_l1 ffn kd kd2 first_k combined identity conv"] [--s3prl-root DIR]
set -euo pipefail

stage=0
stop_stage=8
frame=10
train_set=960
chains="weight heads heads_l1 ffn kd kd2 first_k combined identity conv"
epochs=""                  # default: 200 (iteration 2 at 20 ms: 100), the paper's
effective_batch=32
probe_train_utts=1000
s3prl_root="${S3PRL_ROOT:-}"   # an s3prl git checkout, for SUPERB PR (default: $S3PRL_ROOT)

. ./db.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

case "${train_set}" in
  100) subsets="train-clean-100" ;;
  960) subsets="train-clean-100 train-clean-360 train-other-500" ;;
  *) log "--train-set must be 960 or 100"; exit 1 ;;
esac
case "${frame}" in
  10) step1=1 ;;   # iteration-1 targets: every 10 ms frame
  20) step1=2 ;;   # the odd frames c_1, c_3, ... (§II-A)
  *) log "--frame must be 10 or 20"; exit 1 ;;
esac
F=${frame}ms
eval_sets="dev-clean test-clean"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if stage_done data_${train_set}; then
    log "Stage 0: data already prepared"
  else
    log "Stage 0: LibriSpeech data dirs (${subsets} + ${eval_sets})"
    ../local/prepare_train.sh "${subsets}" "${eval_sets}"
    mark_done data_${train_set}
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: CMUdict phones for the probe (${probe_train_utts} train-clean-100 utterances, test-clean)"
  python -m s3prl_plugins.bin.make_phones --dirs data/train_clean_100 data/test_clean
fi

pretrain() {  # pretrain ITERATION EPOCHS
  local it=$1 ep=$2 utts accum
  utts=$(wc -l < data/train/wav.scp)
  accum=4   # 8 utterances x 4 = the paper's effective 32 (one GPU; with N GPUs use grad_accum 4/N)
  log "Stage: MelHuBERT-${F} iteration ${it}: ${ep} epochs = $((ep * utts / effective_batch)) updates"
  ${train_cmd} python -m s3prl_plugins.bin.pretrain --config conf/melhubert_${F}.yaml --set \
    "data.train_labels=exp/targets/it${it}_${F}/train.km" "data.valid_labels=exp/targets/it${it}_${F}/dev_clean.km" \
    "trainer.exp_dir=exp/melhubert_${F}_it${it}" "trainer.max_steps=$((ep * utts / effective_batch))" "trainer.grad_accum=${accum}"
}

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: iteration-1 targets: k-means of log-Mel frames"
  python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev_clean --feature fbank --clusters 512 \
    --frame-step ${step1} --out exp/targets/it1_${F}
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  pretrain 1 "${epochs:-200}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  log "Stage 4: iteration-2 targets: k-means of layer 9 of iteration 1"
  python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev_clean --feature hidden \
    --ckpt exp/melhubert_${F}_it1/model.pt --layer 9 --clusters 512 --frame-step 1 --out exp/targets/it2_${F}
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  if [ ${frame} = 20 ]; then pretrain 2 "${epochs:-100}"; else pretrain 2 "${epochs:-200}"; fi
fi

mask=(); [ ${frame} = 20 ] && mask=(objective.mask_prob=0.14 objective.mask_length=5)
if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  for c in ${chains}; do
    [ -f conf/compress/${c}.yaml ] || { log "no such chain: conf/compress/${c}.yaml"; exit 1; }
    log "Stage 6: compression chain ${c} -> exp/compress_${F}/${c}"
    ${train_cmd} python -m s3prl_plugins.bin.compress --config conf/compress/common.yaml conf/compress/${c}.yaml --set \
      "model=exp/melhubert_${F}_it2/model.pt" "data.train_labels=exp/targets/it2_${F}/train.km" \
      "data.valid_labels=exp/targets/it2_${F}/dev_clean.km" "exp_dir=exp/compress_${F}/${c}" "base_dir=exp/compress_${F}/base" \
      "measure.probe.max_train_utts=${probe_train_utts}" ${mask[@]+"${mask[@]}"}
  done
fi

if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ] && [ -n "${s3prl_root}" ]; then
  for c in ${chains}; do
    last=$(ls -d exp/compress_${F}/${c}/[0-9][0-9]_* | tail -1)
    ckpt=$(readlink -f "${last}/model.pt"); out=$(readlink -f "exp/compress_${F}/${c}")/superb_pr
    log "Stage 7: SUPERB PR (s3prl's runner, its libriphone config) on ${last}"
    (cd "${s3prl_root}/s3prl" && ${train_cmd} python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" \
      -m train -u melhubert_pruned_local -k "${ckpt}" -d ctc -c downstream/ctc/libriphone.yaml -p "${out}" \
      -o "config.downstream_expert.corpus.path='${LIBRISPEECH}'" \
      && python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" -m evaluate -e "${out}/dev-best.ckpt")
  done
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  dirs=(); for c in ${chains}; do [ -f "exp/compress_${F}/${c}/trajectory.json" ] && dirs+=("exp/compress_${F}/${c}"); done
  log "Stage 8: report of ${#dirs[@]} chain(s) -> exp/compress_${F}/report"
  python -m s3prl_plugins.bin.compression_report --chains "${dirs[@]}" --out exp/compress_${F}/report
fi
