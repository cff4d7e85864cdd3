#!/usr/bin/env bash
# STaRHuBERT on LibriSpeech (Jang, Kim and Kim 2024): distil a HuBERT-family teacher into a STaR student, probe
# both, report. The stages are the template's (../../TEMPLATE/ssl1/ssl.sh):
#   1 data      ${LIBRISPEECH} -> data/<subsets>, data/train (--train-set 100 or 960), CMUdict phones  ~1 min per 100 h
#   4 train     --distill-config (conf/star.yaml) -> its trainer.exp_dir (exp/star)/model.pt: STaR loss, AdamW 1e-3,
#               cosine, --epochs of --effective-batch 48 utterances; resumes after a kill; --ngpu N: torchrun DDP.
#               ~17 h on one H100 for 100 h x 200 epochs (bf16; bench/RESULTS.md), data loading aside
#   6 probe     frozen-feature CTC phone probe of the teacher and the student (train-clean-100 -> test-clean)
#               -> exp/probe/<teacher>, exp/probe/<student>
#   7 superb    with --s3prl-root (a git checkout of s3prl): SUPERB PR through s3prl's own runner and its
#               libriphone config -> exp/superb/<student>/pr
#   8 report    params, MACs, RTF, PER (+ SUPERB PR), loss curves -> exp/report.{json,md}, exp/report_*.png
# Configs: conf/star.yaml (STaRHuBERT, 22.31 M), conf/star_hubert_l.yaml (STaRHuBERT-L, 26.63 M),
#          conf/star_hubert_9m.yaml (a 9 M-class student, §3.5), conf/star_wavlm.yaml (STaRwavLM, 960 h).
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-set 100|960] [--teacher hubert_base]
#                 [--distill-config conf/star_hubert_l.yaml] [--ngpu 8] [--epochs 200] [--s3prl-root DIR]
#   ./run.sh --stage 4            resumes at distillation
set -euo pipefail

stage=1
stop_stage=8
train_set=100
teacher=""                 # hubert_base | wavlm_base | wav2vec2 | a checkpoint | a HF folder (default: the config's)
distill_config=conf/star.yaml
ngpu=1
launcher=""                # default: python (1 GPU) or torchrun --standalone (N GPUs); multi-node: your torchrun line
epochs=""                  # default: 200 for 100 h, 100 for 960 h (the paper)
max_steps=""               # instead of --epochs
batch_size=12
effective_batch=48
probe_train_utts=1000
probe_steps=3000
s3prl_root="${S3PRL_ROOT:-}"   # an s3prl git checkout, for SUPERB PR (default: $S3PRL_ROOT)

. ./db.sh
passthrough=()              # any other --option VALUE goes on to ./ssl.sh (as ESPnet's run.sh passes "$@" to asr.sh)
passthrough_to=./ssl.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

[ -n "${epochs}" ] || { [ "${train_set}" = 960 ] && epochs=100 || epochs=200; }
[ -z "${max_steps}" ] || epochs=""
[ -f "${distill_config}" ] || { echo "$0: no such config: ${distill_config}" >&2; exit 1; }
[ -n "${teacher}" ] || teacher=$(python -m s3prl_plugins.bin.inspect "${distill_config}" --key teacher.source --default hubert_base)
student=$(basename "${distill_config}" .yaml)

./ssl.sh --stage "${stage}" --stop-stage "${stop_stage}" --local-data-opts "--train-set ${train_set}" \
  --train-data data/train --dev-data data/dev_clean --test-data data/test_clean \
  --train "${distill_config}" --teacher "${teacher}" --ngpu "${ngpu}" --launcher "${launcher}" \
  --epochs "${epochs}" --effective-batch "${effective_batch}" \
  --distill-args "data.train=data/train data.valid=data/dev_clean data.batch_size=${batch_size} ${max_steps:+trainer.max_steps=${max_steps}}" \
  --probe "${teacher} ${student}" --probe-train data/train_clean_100 --probe-test data/test_clean \
  --probe-args "--max-steps ${probe_steps} --max-train-utts ${probe_train_utts}" \
  --superb "${s3prl_root:+pr}" --superb-model "${student}" --s3prl-root "${s3prl_root}" \
  --librispeech "${LIBRISPEECH}" ${passthrough[@]+"${passthrough[@]}"}
