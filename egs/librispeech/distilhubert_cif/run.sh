#!/usr/bin/env bash
# DistilHuBERT with fixed and variable-length sequence subsampling on LibriSpeech (Meng et al. 2022, "On Compressing
# Sequences for Self-Supervised Speech Models"; the baseline is DistilHuBERT, Chang et al. 2022). The template's
# stages (../../TEMPLATE/ssl1/ssl.sh):
#   1 data      ${LIBRISPEECH} -> data/<subsets>, data/train (--train-set 960 or 100), CMUdict phones
#   2 phones    (the MFA topline, conf/mfa.yaml) --textgrids DIR (<set>/<utt>.TextGrid), or MFA run here with
#               --mfa-dictionary/--mfa-acoustic-model -> exp/segments/phones/<set>.seg
#   3 targets   (configs reading exp/segments/dp<rate>) k-means on teacher layer --dp-layer (6) and Kamper and
#               van Niekerk's DP, lambda swept on --sweep-utts utterances for --dp-rate Hz -> exp/segments/dp<rate>
#   4 train     --distill-config (conf/distilhubert.yaml; fixed: avg2/avg4/avg8/avg_repeat2/conv_deconv2, CIF:
#               card4/dp12.5, topline: mfa) -> its trainer.exp_dir/model.pt; resumes after a kill; --ngpu N: DDP
#   6 probe     frozen-feature CTC phone probe on the subsampled states (the topline on its alignments)
#   7 superb    with --s3prl-root: SUPERB PR through s3prl's own runner (the fixed-stride output)
#   8 report    local/report.sh: Fig. 2 unit rates -> exp/unit_rates.{json,png}; this student and --report-exps
#               -> exp/report.json, exp/subsampling.png
# Usage: ./run.sh [--stage N] [--stop-stage M] [--train-set 960|100] [--distill-config conf/dp12.5.yaml]
#                 [--dp-rate 12.5] [--textgrids DIR] [--ngpu 8] [--report-exps "distilhubert avg4"]
set -euo pipefail

stage=1
stop_stage=8
train_set=960
distill_config=conf/distilhubert.yaml
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
report_exps=""             # students trained before (exp/<name>) to report beside this one

. ./db.sh
passthrough=()              # any other --option VALUE goes on to ./ssl.sh (as ESPnet's run.sh passes "$@" to asr.sh)
passthrough_to=./ssl.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

[ -f "${distill_config}" ] || { echo "$0: no such config: ${distill_config}" >&2; exit 1; }
student=$(basename "${distill_config}" .yaml)
teacher=$(python -m s3prl_plugins.bin.inspect "${distill_config}" --key teacher.source --default hubert_base)
seg=$(dirname "$(python -m s3prl_plugins.bin.inspect "${distill_config}" --key data.train_segmentation --default none/x)")
align=none; [ "${seg}" != exp/segments/phones ] || [ -z "${mfa_dictionary}" ] || align=mfa
dp=""; [[ "${seg}" != exp/segments/dp* ]] || dp="${seg#exp/segments/}=${teacher},${dp_layer},${dp_clusters},${dp_rate}"
superb=""; [ -z "${s3prl_root}" ] || [ "${seg}" = exp/segments/phones ] || superb=pr

./ssl.sh --stage "${stage}" --stop-stage "${stop_stage}" --local-data-opts "--train-set ${train_set}" \
  --train-data data/train --dev-data data/dev_clean --test-data data/test_clean \
  --align "${align}" --align-sets "data/train data/dev_clean data/test_clean" --textgrids "${textgrids}" \
  --mfa-dictionary "${mfa_dictionary}" --mfa-acoustic-model "${mfa_acoustic_model}" \
  --segments "${dp}" --segment-args "--sweep-utts ${sweep_utts}" \
  --train "${distill_config}" --ngpu "${ngpu}" --launcher "${launcher}" \
  --distill-args "data.train=data/train data.valid=data/dev_clean ${max_steps:+trainer.max_steps=${max_steps}}" \
  --probe "${student}" --probe-train data/train_clean_100 --probe-test data/test_clean \
  --probe-args "--max-steps ${probe_steps} --max-train-utts ${probe_train_utts}" \
  --superb "${superb}" --superb-model "${student}" --s3prl-root "${s3prl_root}" --librispeech "${LIBRISPEECH}" \
  --report-args "${student} ${report_exps}" ${passthrough[@]+"${passthrough[@]}"}
