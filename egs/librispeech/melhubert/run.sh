#!/usr/bin/env bash
# MelHuBERT compression on LibriSpeech (Lin et al. 2024): pre-train MelHuBERT (two k-means iterations), compress
# it with every method -- weight, head (eq. 4 / eq. 5) and FFN pruning, KD, first-k layers, the combined chain,
# diagonal heads replaced by the identity / a 1-D convolution -- then report. The template's stages
# (../../TEMPLATE/ssl1/ssl.sh):
#   1 data      ${LIBRISPEECH} -> data/<subsets>, data/train (--train-set 960 or 100), CMUdict phones
#   3 targets   k-means (512) of log-Mel frames (every 2nd for 20 ms) -> exp/targets/it1_<F>ms; after iteration 1,
#               k-means (512) of its layer 9 -> exp/targets/it2_<F>ms
#   4 train     conf/melhubert_<F>ms_it1.yaml, then _it2.yaml -> exp/melhubert_<F>ms_it{1,2}/model.pt (200 epochs;
#               iteration 2 at 20 ms: 100; effective batch 32)
#   5 compress  each of --chains (conf/compress/<chain>.yaml over conf/compress/common.yaml), every iteration
#               probed (phone CTC probe -> test-clean) -> exp/compress_<F>ms/<chain>/<NN>_<method><k>/model.pt,
#               trajectory.csv; then exp/compress_<F>ms/report/{report.md,tradeoff.png,density.png,...}
#   7 superb    with --s3prl-root: SUPERB PR through s3prl's own runner on --superb-model (a chain's model)
# Every model loads with s3prl.hub.melhubert_pruned_local(ckpt=.../model.pt).
# Usage: ./run.sh [--stage N] [--stop-stage M] [--frame 10|20] [--train-set 960|100]
#                 [--chains "weight heads heads_l1 ffn kd kd2 first_k combined identity conv"] [--ngpu 4]
set -euo pipefail

stage=1
stop_stage=8
frame=10
train_set=960
chains="weight heads heads_l1 ffn kd kd2 first_k combined identity conv"
epochs=""                  # default: 200 (iteration 2 at 20 ms: 100), the paper's
effective_batch=32
ngpu=1
probe_train_utts=1000
s3prl_root="${S3PRL_ROOT:-}"   # an s3prl git checkout, for SUPERB PR (default: $S3PRL_ROOT)
superb_model=""            # with --s3prl-root: a model to run SUPERB PR on (e.g. exp/compress_10ms/heads/03_heads3/model.pt)

. ./db.sh
passthrough=()              # any other --option VALUE goes on to ./ssl.sh (as ESPnet's run.sh passes "$@" to asr.sh)
passthrough_to=./ssl.sh
. utils/parse_options.sh

case "${frame}" in
  10) step1=1 ;;   # iteration-1 targets: every 10 ms frame
  20) step1=2 ;;   # the odd frames c_1, c_3, ... (§II-A)
  *) echo "$0: --frame must be 10 or 20" >&2; exit 1 ;;
esac
F=${frame}ms
[ -n "${epochs}" ] || { [ "${frame}" = 20 ] && epochs="200 melhubert_20ms_it2=100" || epochs=200; }
mask=""; [ "${frame}" = 10 ] || mask="objective.mask_prob=0.14 objective.mask_length=5"

./ssl.sh --stage "${stage}" --stop-stage "${stop_stage}" --local-data-opts "--train-set ${train_set}" \
  --train-data data/train --dev-data data/dev_clean --test-data data/test_clean \
  --targets "it1_${F}=fbank,512,${step1} it2_${F}=hidden,512,1,exp/melhubert_${F}_it1/model.pt,9" \
  --train "melhubert_${F}_it1 melhubert_${F}_it2" --epochs "${epochs}" --effective-batch "${effective_batch}" --ngpu "${ngpu}" \
  --compress "${chains}" --compress-dir "exp/compress_${F}" \
  --compress-args "model=exp/melhubert_${F}_it2/model.pt data.train_labels=exp/targets/it2_${F}/train.km data.valid_labels=exp/targets/it2_${F}/dev_clean.km measure.probe.max_train_utts=${probe_train_utts} ${mask}" \
  --superb "${s3prl_root:+${superb_model:+pr}}" --superb-model "${superb_model}" --s3prl-root "${s3prl_root}" \
  --librispeech "${LIBRISPEECH}" ${passthrough[@]+"${passthrough[@]}"}
