#!/usr/bin/env bash
# The embedded default: every stage of the template (../TEMPLATE/ssl1/ssl.sh) on the synthetic mini corpus,
# about an hour on 2 CPU cores (make demo; the stages' costs and figures: RESULTS.md).
#   1 data      local/data.sh: espeak-ng corpus + KS/SID subsets -> data/*
#   2 phones    CTC phone aligner (MFA with --mfa-dictionary/--mfa-acoustic-model) -> exp/align, exp/segments/phones
#   3 targets   k-means of MFCC (HuBERT) and log-Mel (MelHuBERT) -> exp/targets/{mfcc,fbank}; the DP segmentation
#               of --distill-teacher's layer --dp-layer for the cif_dp variants -> exp/segments/dp<rate>
#   4 train     the MelHuBERT teacher (+ the waveform HuBERT with --hubert true), the STaR and DistilHuBERT-style
#               students of --distill-teacher, one subsampled student per --subsampling variant -> exp/<name>
#   5 compress  chains of the MelHuBERT teacher (Lin et al. 2024) -- dp: of the waveform HuBERT --, one per --compress
#     deploy    entry -> exp/compress; --deploy models as int8 ONNX (calibrated on data/dev) -> exp/<name>_int8.onnx
#   6 probe     phone probe of log-Mel and every model; KS/SID utterance probes of the teachers and students
#   7 superb    --superb tasks through s3prl's own runner on --superb-model (+ ESPnet ASR with --asr5k true)
#   8 report    local/report.sh -> exp/report.{txt,json,md}, exp/*.png
# Usage: ./run.sh [--stage N] [--stop-stage M] [--jobs 2] [--hubert true] [--student-steps 4800]
#                 [--subsampling "avg2 avg4 cif_card4 cif_dp4 phones"] [--superb "ks sid"] [--compress "heads ffn"]
set -euo pipefail

stage=1
stop_stage=100
jobs=2                      # jobs side by side (1: one after the other, output on the terminal)
corpus_dir=data/mini_corpus
utts_per_speaker=45
seed=0
subsets="ks sid"            # KS/SID subsets of the corpus ("" for none; sid needs >= 3 utterances per speaker)
aligner=auto                # auto: MFA if it runs here (with --mfa-dictionary/--mfa-acoustic-model), else CTC
align_steps=600
align_blank_penalty=auto    # auto: the best of 0..40 on dev against the corpus's exact word times
mfa_dictionary=""
mfa_acoustic_model=""
teacher_steps=600
hubert=false                # also pre-train the waveform HuBERT (on by itself when it is the teacher or SUPERB's model)
distill_teacher=melhubert_tiny   # the students' teacher: melhubert_tiny or hubert_tiny
student_steps=2400          # 600: far from converged; 4800: both students reach the teacher's PER (RESULTS.md)
probe_steps=5000            # linear probe updates (SUPERB PR design)
subsampling="cif_dp4"       # subsampled students; all: "avg2 avg4 cif_card4 cif_dp4 phones" ("" for none)
dp_layer=2                  # teacher layer of the smoothed codes (the paper: 6 of HuBERT's 12; here 2 of 4)
dp_rate=12.5                # target average frame rate of the DP segmentation (Hz)
superb="ks"                 # ks sid asr (pr: needs --s3prl-root); "" for none
superb_model=star_tiny
superb_steps=2000           # updates per task (SUPERB's configs: 200k; the mini corpus is ~0.4 h)
s3prl_root="${S3PRL_ROOT:-}"
asr5k=false                 # ESPnet ASR-5k (CTC over BPE) on --superb-model (~10 min)
asr5k_nbpe=100
asr5k_epochs=15
deploy="star_tiny"          # deployed as int8 ONNX (bin/export --int8 auto), probed beside their source ("" for none)
compress="heads"            # all (~50 min): "weight heads heads_l1 ffn kd first_k combined identity conv";
                            # "dp": distil + prune the waveform HuBERT teacher to 0.3 of its MACs (trains it too)
compress_updates=""         # cap every recovery at this many updates (quick checks)
compress_probe_steps=""     # phone-probe updates per iteration (default: the configs' 1,000)

passthrough=()              # any other --option VALUE goes on to ./ssl.sh (as ESPnet's run.sh passes "$@" to asr.sh)
passthrough_to=./ssl.sh
. utils/parse_options.sh

hub=""; [ "${hubert}" = false ] && [ "${distill_teacher}" != hubert_tiny ] && [ "${superb_model}" != hubert_tiny ] \
  && [[ " ${compress} " != *" dp "* ]] && [ ! -f exp/.done.hubert_tiny ] || hub=hubert_tiny
students="star_tiny distilhubert_tiny"
variants=$(for v in ${subsampling}; do echo "distilhubert_tiny_${v}"; done)
deployed=$(for m in ${deploy}; do echo "${m}_int8"; done)
dp=""; [[ " ${subsampling}" != *" cif_dp"* ]] || dp="dp${dp_rate}=exp/${distill_teacher}/model.pt,${dp_layer},100,${dp_rate}"
quick=""; [ -z "${compress_updates}" ] || quick="updates_cap=${compress_updates}"
[ -z "${compress_probe_steps}" ] || quick+=" measure.probe.max_steps=${compress_probe_steps} measure.diagonality=10"
[[ " ${subsets} " == *" sid "* ]] || quick+=" measure.sid=null"

./ssl.sh --stage "${stage}" --stop-stage "${stop_stage}" --jobs "${jobs}" \
  --local-data-opts "--corpus-dir ${corpus_dir} --seed ${seed} --utts-per-speaker ${utts_per_speaker} --jobs ${jobs} --subsets '${subsets}'" \
  --align "${aligner}" --mfa-dictionary "${mfa_dictionary}" --mfa-acoustic-model "${mfa_acoustic_model}" \
  --align-args "--max-steps ${align_steps} --blank-penalty ${align_blank_penalty} --tune-dir data/dev --trim-silence --reference-dir ${corpus_dir}/reference" \
  --targets "mfcc=mfcc,100,2 fbank=fbank,100,2" --segments "${dp}" \
  --train "melhubert_tiny ${hub} ${students} ${variants}" --teacher "exp/${distill_teacher}/model.pt" \
  --pretrain-args "trainer.max_steps=${teacher_steps}" --distill-args "trainer.max_steps=${student_steps}" \
  --deploy "${deploy}" --compress "${compress}" --compress-args "${quick}" \
  --probe "fbank ${hub} melhubert_tiny ${students} ${variants} ${deployed}" --probe-args "--max-steps ${probe_steps}" \
  --utt-probe "fbank ${hub} melhubert_tiny ${students} ${deployed}" --utt-probe-sets "${subsets}" \
  --superb "${superb}" --superb-model "${superb_model}" --superb-steps "${superb_steps}" --s3prl-root "${s3prl_root}" \
  --speech-commands "${corpus_dir}/subsets" --asr5k "${asr5k}" --asr5k-nbpe "${asr5k_nbpe}" --asr5k-epochs "${asr5k_epochs}" \
  --superb-asr-args "config.downstream_expert.modelrc.project_dim=256,,config.downstream_expert.modelrc.RNNs.dim=[256,256],,config.downstream_expert.datarc.batch_size=16" \
  --report-args "${subsampling}" ${passthrough[@]+"${passthrough[@]}"}
