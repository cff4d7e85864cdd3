#!/usr/bin/env bash
# STaRHuBERT on LibriSpeech (Jang, Kim and Kim 2024): distil a HuBERT-family teacher into a STaR student.
#
# Stages (inputs -> outputs; rough cost):
#   0 data        ${LIBRISPEECH} -> data/<subsets> (../local/prepare_train.sh over ../run.sh) and data/train (the
#                 training subsets combined; --train-set 100 or 960)              ~1 min per 100 h
#   1 phones      CMUdict (offline) phones for the probe sets -> data/*/phones      ~10 s
#   2 teacher     --teacher (hubert_base | wavlm_base | wav2vec2 | a checkpoint | a HF folder; default:
#                 the config's teacher.source) is loaded once (hub names download into s3prl's cache)
#                 -> EXP/teacher.txt, which later stages use when --teacher is not given
#   3 distill     --distill-config (default conf/star.yaml) -> EXP/model.pt, EXP = the config's
#                 trainer.exp_dir (exp/star) unless --exp-dir is given (STaR loss, AdamW 1e-3, cosine,
#                 effective batch 48); resumes from EXP/checkpoints after a kill. --ngpu N: torchrun DDP.
#                 ~17 h on one H100 for 100 h x 200 epochs (bf16; bench/RESULTS.md), data loading aside
#   4 downstream  frozen-feature CTC phone probe (train subset -> test-clean) -> EXP/probe/result.json
#                 and exp/probe/teacher_<teacher>/result.json; with --s3prl-root (a git checkout of
#                 s3prl, for its configs) also SUPERB PR -> EXP/superb_pr
#   5 report      parameters, MACs, RTF and PER of teacher and student (+ SUPERB PR when run), loss curves
#                 -> EXP/report.{json,md}, EXP/report_*.png
#
# Configs: conf/star.yaml (STaRHuBERT, 22.31 M), conf/star_hubert_l.yaml (STaRHuBERT-L, 26.63 M),
#          conf/star_hubert_9m.yaml (a 9 M-class student, §3.5), conf/star_wavlm.yaml (STaRwavLM, 960 h).
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-set 100|960] [--teacher hubert_base]
#                 [--distill-config conf/star.yaml] [--exp-dir DIR] [--ngpu 1] [--epochs 200]
#   ./run.sh --stage 3            resumes at distillation
#   ./run.sh --stage 3 --distill-config conf/star_hubert_l.yaml   a second student beside the first
set -euo pipefail

stage=0
stop_stage=5
train_set=100
teacher=""                 # default: EXP/teacher.txt (stage 2), else the config's teacher.source
distill_config=conf/star.yaml
exp_dir=""                 # default: trainer.exp_dir of the config (exp/star if it has none)
ngpu=1
launcher=""                # default: python (1 GPU) or torchrun --standalone (N GPUs); multi-node: your torchrun line
epochs=""                  # default: 200 for 100 h, 100 for 960 h (the paper)
max_steps=""               # overrides epochs x utterances / effective batch
batch_size=12
effective_batch=48
probe_train_utts=1000
probe_steps=3000
s3prl_root="${S3PRL_ROOT:-}"   # an s3prl git checkout, for SUPERB PR (default: $S3PRL_ROOT)

. ./db.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

case "${train_set}" in
  100) subsets="train-clean-100"; [ -n "${epochs}" ] || epochs=200 ;;
  960) subsets="train-clean-100 train-clean-360 train-other-500"; [ -n "${epochs}" ] || epochs=100 ;;
  *) log "--train-set must be 100 or 960"; exit 1 ;;
esac
eval_sets="dev-clean test-clean"
[ -f "${distill_config}" ] || { log "no such config: ${distill_config}"; exit 1; }
conf_get() {  # conf_get SECTION KEY DEFAULT: a value of the distillation config
  python -m s3prl_plugins.bin.inspect "${distill_config}" --key "$1.$2" --default "$3"
}
[ -n "${exp_dir}" ] || exp_dir=$(conf_get trainer exp_dir exp/star)
if [ -z "${teacher}" ]; then
  if [ -f "${exp_dir}/teacher.txt" ]; then teacher=$(cat "${exp_dir}/teacher.txt"); else teacher=$(conf_get teacher source hubert_base); fi
fi
teacher_probe=exp/probe/teacher_$(printf %s "${teacher}" | tr -c 'A-Za-z0-9._-' '_' | tail -c 60)

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

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: teacher ${teacher}"
  python -m s3prl_plugins.bin.inspect "${teacher}" --load
  mkdir -p "${exp_dir}" && echo "${teacher}" > "${exp_dir}/teacher.txt"
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  utts=$(wc -l < data/train/wav.scp)
  if [ $((effective_batch % (batch_size * ngpu))) -ne 0 ]; then
    log "--effective-batch ${effective_batch} is not a multiple of --batch-size ${batch_size} x --ngpu ${ngpu}"; exit 1
  fi
  accum=$((effective_batch / (batch_size * ngpu)))
  steps=$((epochs * utts / effective_batch)); [ -z "${max_steps}" ] || steps=${max_steps}
  [ -n "${launcher}" ] || { if [ "${ngpu}" -gt 1 ]; then launcher="torchrun --standalone --nproc_per_node ${ngpu}"; else launcher=python; fi; }
  log "Stage 3: distillation from ${teacher}: ${steps} updates (${epochs} epochs of ${utts} utterances), batch ${batch_size} x ${ngpu} GPU(s) x accum ${accum}"
  ${train_cmd} ${launcher} -m s3prl_plugins.bin.distill --config "${distill_config}" --set \
    "teacher.source=${teacher}" data.train=data/train data.valid=data/dev_clean "data.batch_size=${batch_size}" \
    "trainer.exp_dir=${exp_dir}" "trainer.max_steps=${steps}" "trainer.grad_accum=${accum}"
  log "student: ${exp_dir}/model.pt (s3prl: hub.star_hubert_local(ckpt='${exp_dir}/model.pt'))"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  for name in teacher student; do
    feats=${exp_dir}/model.pt; out=${exp_dir}/probe
    [ ${name} = teacher ] && { feats=${teacher}; out=${teacher_probe}; }
    if [ -f "${out}/result.json" ] && [ ! "${feats}" -nt "${out}/result.json" ]; then
      log "Stage 4: ${out}/result.json is newer than ${feats}: kept"; continue
    fi
    log "Stage 4: phone probe on ${feats} (${probe_train_utts} train-clean-100 utterances -> test-clean)"
    ${train_cmd} python -m s3prl_plugins.bin.probe --features "${feats}" --train data/train_clean_100 --test data/test_clean \
      --out "${out}" --max-steps "${probe_steps}" --max-train-utts "${probe_train_utts}"
  done
  if [ -n "${s3prl_root}" ]; then
    log "Stage 4: SUPERB PR with s3prl's run_downstream (configs from ${s3prl_root}) -> ${exp_dir}/superb_pr/superb_test.json"
    ckpt=$(readlink -f "${exp_dir}/model.pt"); out=$(readlink -f "${exp_dir}")/superb_pr
    # s3prl's own runner and libriphone config (its ARPAbet lexicon, paths relative to the checkout's s3prl/),
    # through bin/run_downstream for torch 2.8 (checkpoint loading, device); evaluated on test-clean
    (cd "${s3prl_root}/s3prl" && ${train_cmd} python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" \
      -m train -u star_hubert_local -k "${ckpt}" -d ctc -c downstream/ctc/libriphone.yaml -p "${out}" \
      -o "config.downstream_expert.corpus.path='${LIBRISPEECH}'" \
      && python -m s3prl_plugins.bin.run_downstream --s3prl-root "${s3prl_root}" -m evaluate -e "${out}/dev-best.ckpt")
  fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  log "Stage 5: report"
  superb=(); [ -f "${exp_dir}/superb_pr/superb_test.json" ] && superb=(--superb "student=${exp_dir}/superb_pr")
  tb=(); [ -d "${exp_dir}/tensorboard" ] && tb=(--tensorboard "student=${exp_dir}/tensorboard")
  python -m s3prl_plugins.bin.report --models "teacher=${teacher}" "student=${exp_dir}/model.pt" \
    --probes "teacher=${teacher_probe}/result.json" "student=${exp_dir}/probe/result.json" ${superb[@]+"${superb[@]}"} \
    ${tb[@]+"${tb[@]}"} --out "${exp_dir}/report.json" --markdown "${exp_dir}/report.md"
fi
