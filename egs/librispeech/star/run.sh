#!/usr/bin/env bash
# STaRHuBERT on LibriSpeech (Lee et al. 2024): distil a HuBERT-family teacher into a STaR student.
#
# Stages (inputs -> outputs; rough cost):
#   0 data        ${LIBRISPEECH} -> data/<subsets> (shared prep in ../run.sh) and data/train (the
#                 training subsets combined; --train-set 100 or 960)              ~1 min per 100 h
#   1 phones      CMUdict (offline) phones for the probe sets -> data/*/phones      ~10 s
#   2 teacher     --teacher (hubert_base | wavlm_base | wav2vec2 | a checkpoint | a HF folder) is
#                 loaded once (hub names download into s3prl's cache) -> exp/teacher.txt
#   3 distill     conf/star.yaml -> exp/star/model.pt (STaR loss, AdamW 1e-3, cosine, effective batch
#                 48); resumes from exp/star/checkpoints after a kill. --ngpu N uses torchrun DDP.
#                 ~2 days on 2 GPUs for 100 h x 200 epochs
#   4 downstream  frozen-feature CTC phone probe (train subset -> test-clean) -> exp/probe/*/result.json;
#                 with --s3prl-root (a git checkout of s3prl, for its configs) also SUPERB PR
#   5 report      parameters, MACs and PER of teacher and student -> exp/report.json
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-set 100|960] [--teacher hubert_base]
#                 [--distill-config conf/star.yaml] [--ngpu 1] [--epochs 200]
#   ./run.sh --stage 3            resumes at distillation
set -euo pipefail

stage=0
stop_stage=5
train_set=100
teacher=hubert_base
distill_config=conf/star.yaml
exp_dir=exp/star
ngpu=1
launcher=""                # default: python (1 GPU) or torchrun --standalone (N GPUs); multi-node: your torchrun line
epochs=""                  # default: 200 for 100 h, 100 for 960 h (the paper)
max_steps=""               # overrides epochs x utterances / effective batch
batch_size=12
effective_batch=48
probe_train_utts=1000
probe_steps=3000
s3prl_root=""

. ./db.sh
. ./path.sh
. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh

case "${train_set}" in
  100) subsets="train-clean-100"; [ -n "${epochs}" ] || epochs=200 ;;
  960) subsets="train-clean-100 train-clean-360 train-other-500"; [ -n "${epochs}" ] || epochs=100 ;;
  *) log "--train-set must be 100 or 960"; exit 1 ;;
esac
eval_sets="dev-clean test-clean"

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if stage_done data_${train_set}; then
    log "Stage 0: data already prepared"
  else
    log "Stage 0: LibriSpeech data dirs (${subsets} + ${eval_sets})"
    (cd .. && ./run.sh --stage 1 --stop-stage 2 --subsets "${subsets} ${eval_sets}")
    mkdir -p data
    for s in ${subsets} ${eval_sets}; do ln -sfn "../../data/${s//-/_}" "data/${s//-/_}"; done
    # shellcheck disable=SC2046
    python -m s3prl_plugins.bin.combine_data --out data/train $(for s in ${subsets}; do echo "data/${s//-/_}"; done)
    mark_done data_${train_set}
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  log "Stage 1: CMUdict phones for the probe"
  python -m s3prl_plugins.bin.make_phones --dirs data/train_clean_100 data/test_clean
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  log "Stage 2: teacher ${teacher}"
  python -c "import sys; from s3prl_plugins.models.loading import load_pretrained as l; m = l(sys.argv[1]); print(sys.argv[1], m.config.name, m.config.num_layers, 'layers')" "${teacher}"
  mkdir -p exp && echo "${teacher}" > exp/teacher.txt
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  teacher_src=$(cat exp/teacher.txt 2>/dev/null || echo "${teacher}")
  utts=$(wc -l < data/train/wav.scp)
  if [ $((effective_batch % (batch_size * ngpu))) -ne 0 ]; then
    log "--effective-batch ${effective_batch} is not a multiple of --batch-size ${batch_size} x --ngpu ${ngpu}"; exit 1
  fi
  accum=$((effective_batch / (batch_size * ngpu)))
  steps=$((epochs * utts / effective_batch)); [ -z "${max_steps}" ] || steps=${max_steps}
  [ -n "${launcher}" ] || { if [ "${ngpu}" -gt 1 ]; then launcher="torchrun --standalone --nproc_per_node ${ngpu}"; else launcher=python; fi; }
  log "Stage 3: distillation from ${teacher_src}: ${steps} updates (${epochs} epochs of ${utts} utterances), batch ${batch_size} x ${ngpu} GPU(s) x accum ${accum}"
  ${train_cmd} ${launcher} -m s3prl_plugins.bin.distill --config "${distill_config}" --set \
    "teacher.source=${teacher_src}" data.train=data/train data.valid=data/dev_clean "data.batch_size=${batch_size}" \
    "trainer.exp_dir=${exp_dir}" "trainer.max_steps=${steps}" "trainer.grad_accum=${accum}"
  log "student: ${exp_dir}/model.pt (s3prl: hub.star_hubert_local(ckpt='${exp_dir}/model.pt'))"
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  teacher_src=$(cat exp/teacher.txt 2>/dev/null || echo "${teacher}")
  for name in teacher student; do
    feats=${exp_dir}/model.pt; [ ${name} = teacher ] && feats=${teacher_src}
    log "Stage 4: phone probe on ${feats} (${probe_train_utts} train-clean-100 utterances -> test-clean)"
    ${train_cmd} python -m s3prl_plugins.bin.probe --features "${feats}" --train data/train_clean_100 --test data/test_clean \
      --out "exp/probe/${name}" --max-steps "${probe_steps}" --max-train-utts "${probe_train_utts}"
  done
  if [ -n "${s3prl_root}" ]; then
    log "Stage 4: SUPERB PR with s3prl's run_downstream (configs from ${s3prl_root})"
    ckpt=$(readlink -f "${exp_dir}/model.pt"); out=$(readlink -f exp)/superb_pr
    (cd "${s3prl_root}/s3prl" && ${train_cmd} python run_downstream.py -m train -u star_hubert_local -k "${ckpt}" \
      -d ctc -c downstream/ctc/libriphone.yaml -p "${out}" -o "config.downstream_expert.corpus.path='${LIBRISPEECH}'")
  fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  teacher_src=$(cat exp/teacher.txt 2>/dev/null || echo "${teacher}")
  log "Stage 5: report"
  python -m s3prl_plugins.bin.report --models "teacher=${teacher_src}" "student=${exp_dir}/model.pt" \
    --probes teacher=exp/probe/teacher/result.json student=exp/probe/student/result.json --out exp/report.json
fi
