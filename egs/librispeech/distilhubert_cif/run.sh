#!/usr/bin/env bash
# DistilHuBERT with fixed and variable-length sequence subsampling on LibriSpeech (Meng et al. 2022,
# "On Compressing Sequences for Self-Supervised Speech Models"; the baseline is DistilHuBERT, Chang et al. 2022).
#
# Stages (inputs -> outputs):
#   0 data        ${LIBRISPEECH} -> data/<subsets> (../local/prepare_train.sh over ../run.sh), data/train (combined)
#   1 phones      CMUdict phones for the probe sets -> data/*/phones
#   2 alignments  (configs with data.*_segmentation under exp/segments/phones, i.e. the MFA topline)
#                 MFA TextGrids (--textgrids DIR with <set>/<utt>.TextGrid, or run here with
#                 --mfa-dictionary/--mfa-acoustic-model) -> exp/segments/phones/<set>.seg
#   3 codes       (configs under exp/segments/dp<rate>) k-means on teacher layer --dp-layer (6) and Kamper and
#                 van Niekerk's DP, lambda swept on --sweep-utts utterances for --dp-rate Hz
#                 -> exp/segments/dp<rate>/<set>.seg, .codes, info.json (lambda, rates)
#   4 distill     --distill-config (default conf/distilhubert.yaml; fixed: avg2/avg4/avg8/avg_repeat2/
#                 conv_deconv2, CIF: card4/dp12.5, topline: mfa) -> EXP/model.pt (+ distiller_local.pt for the
#                 baseline, s3prl's own format); resumes after a kill; --ngpu N: torchrun DDP
#   5 downstream  frozen-feature CTC phone probe on the subsampled states (the topline with its alignments)
#                 -> EXP/probe/result.json (PER and the measured frame rate); with --s3prl-root also SUPERB PR
#   6 report      Fig. 2 (unit frame rates on dev-clean) -> exp/unit_rates.{json,png}; params, MACs,
#                 MACs-C, frame rate and PER of every EXP in --report-exps -> exp/report.json, exp/subsampling.png
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-set 960|100] [--distill-config conf/dp12.5.yaml]
#                 [--dp-rate 12.5] [--textgrids DIR] [--ngpu 8] [--report-exps "exp/distilhubert exp/avg4"]
set -euo pipefail

stage=0
stop_stage=6
train_set=960
distill_config=conf/distilhubert.yaml
exp_dir=""                 # default: trainer.exp_dir of the config
ngpu=1
launcher=""
max_steps=""               # default: the config's (200k, the paper)
textgrids=""               # MFA TextGrids: DIR/<set>/<utt>.TextGrid (sets: train, dev_clean, test_clean)
mfa_dictionary=""
mfa_acoustic_model=""
dp_layer=6
dp_clusters=100
dp_rate=12.5
sweep_utts=500
probe_train_utts=1000
probe_steps=3000
s3prl_root="${S3PRL_ROOT:-}"   # an s3prl git checkout, for SUPERB PR (default: $S3PRL_ROOT)
report_exps=""             # default: every exp/*/probe/result.json

. ./db.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

case "${train_set}" in
  100) subsets="train-clean-100" ;;
  960) subsets="train-clean-100 train-clean-360 train-other-500" ;;
  *) log "--train-set must be 100 or 960"; exit 1 ;;
esac
eval_sets="dev-clean test-clean"
[ -f "${distill_config}" ] || { log "no such config: ${distill_config}"; exit 1; }
conf_get() {  # conf_get SECTION KEY DEFAULT
  python -m s3prl_plugins.bin.inspect "${distill_config}" --key "$1.$2" --default "$3"
}
[ -n "${exp_dir}" ] || exp_dir=$(conf_get trainer exp_dir exp/distilhubert)
teacher=$(conf_get teacher source hubert_base)
segmentation=$(conf_get data train_segmentation "")
seg_dir=$(dirname "${segmentation:-none/x}")
sets="train dev_clean test_clean"

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
  log "Stage 1: CMUdict phones for the probe"
  python -m s3prl_plugins.bin.make_phones --dirs data/train_clean_100 data/test_clean
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ] && [ "${seg_dir}" = exp/segments/phones ]; then
  if [ -z "${textgrids}" ]; then
    [ -n "${mfa_dictionary}" ] && [ -n "${mfa_acoustic_model}" ] || {
      log "the topline needs forced alignments: --textgrids DIR, or --mfa-dictionary and --mfa-acoustic-model to run MFA"; exit 1; }
    log "Stage 2: MFA alignments -> exp/align"
    ${train_cmd} python -m s3prl_plugins.bin.mfa_align --dirs $(for s in ${sets}; do echo "data/${s}"; done) \
      --dictionary "${mfa_dictionary}" --acoustic-model "${mfa_acoustic_model}" --out exp/align --jobs 8
    textgrids=exp/align
  fi
  for s in ${sets}; do
    log "Stage 2: phone boundaries of ${textgrids}/${s} -> exp/segments/phones/${s}.seg"
    python -m s3prl_plugins.bin.segment textgrid --data "data/${s}" --textgrids "${textgrids}/${s}" --out "exp/segments/phones/${s}.seg"
  done
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ] && [[ "${seg_dir}" == exp/segments/dp* ]]; then
  log "Stage 3: smoothed codes of ${teacher} layer ${dp_layer} (DP, lambda for ${dp_rate} Hz) -> ${seg_dir}"
  ${train_cmd} python -m s3prl_plugins.bin.segment dp --train data/train --also data/dev_clean data/test_clean --ckpt "${teacher}" \
    --layer "${dp_layer}" --clusters "${dp_clusters}" --target-rate "${dp_rate}" --sweep-utts "${sweep_utts}" --out "${seg_dir}"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  [ -n "${launcher}" ] || { if [ "${ngpu}" -gt 1 ]; then launcher="torchrun --standalone --nproc_per_node ${ngpu}"; else launcher=python; fi; }
  extra=(); [ -z "${max_steps}" ] || extra=("trainer.max_steps=${max_steps}")
  log "Stage 4: distillation ${distill_config} -> ${exp_dir} (${ngpu} GPU(s))"
  ${train_cmd} ${launcher} -m s3prl_plugins.bin.distill --config "${distill_config}" --set \
    data.train=data/train data.valid=data/dev_clean "trainer.exp_dir=${exp_dir}" ${extra[@]+"${extra[@]}"}
  log "student: ${exp_dir}/model.pt (s3prl: hub.distilhubert_cif_local(ckpt='${exp_dir}/model.pt'))"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  probe_seg=()
  [ "${seg_dir}" = exp/segments/phones ] && probe_seg=(--segmentation exp/segments/phones/train.seg exp/segments/phones/test_clean.seg)
  log "Stage 5: phone probe on ${exp_dir}/model.pt (${probe_train_utts} train-clean-100 utterances -> test-clean)"
  ${train_cmd} python -m s3prl_plugins.bin.probe --features "${exp_dir}/model.pt" --train data/train_clean_100 --test data/test_clean \
    --out "${exp_dir}/probe" --max-steps "${probe_steps}" --max-train-utts "${probe_train_utts}" ${probe_seg[@]+"${probe_seg[@]}"}
  if [ -n "${s3prl_root}" ] && [ -z "${probe_seg[*]:-}" ]; then
    log "Stage 5: SUPERB PR with s3prl's run_downstream (configs from ${s3prl_root}; the fixed-stride output)"
    ckpt=$(readlink -f "${exp_dir}/model.pt"); out=$(readlink -f "${exp_dir}")/superb_pr
    # s3prl's own runner and libriphone config (its ARPAbet lexicon, paths relative to the checkout's s3prl/),
    # through bin/run_downstream for torch 2.8 (checkpoint loading, device); evaluated on test-clean
    (cd "${s3prl_root}/s3prl" && ${train_cmd} python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" \
      -m train -u distilhubert_cif_local -k "${ckpt}" -d ctc -c downstream/ctc/libriphone.yaml -p "${out}" \
      -o "config.downstream_expert.corpus.path='${LIBRISPEECH}'" \
      && python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" -m evaluate -e "${out}/dev-best.ckpt")
  fi
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  log "Stage 6: unit frame rates (Fig. 2) and the report"
  python -m s3prl_plugins.bin.unit_rates --data data/dev_clean --train data/train --out exp/unit_rates.json --plot exp/unit_rates.png >/dev/null || true
  [ -n "${report_exps}" ] || report_exps=$(for f in exp/*/probe/result.json; do [ -f "$f" ] && dirname "$(dirname "$f")"; done)
  models=(); probes=()
  for e in ${report_exps}; do n=$(basename "$e"); models+=("${n}=${e}/model.pt"); probes+=("${n}=${e}/probe/result.json"); done
  python -m s3prl_plugins.bin.report --models ${models[@]+"${models[@]}"} --probes ${probes[@]+"${probes[@]}"} \
    --out exp/report.json --plot exp/subsampling.png
fi
