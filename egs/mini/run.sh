#!/usr/bin/env bash
# The embedded default: every stage on the synthetic mini corpus, minutes on a laptop CPU.
#
# Stages (inputs -> outputs; cost in make demo on 2 cores, 58.7 min in all). Stages 0-3 run here, one after
# the other; stages 4-12 are jobs (utils/jobs.sh): --nj of them side by side, each after the jobs whose
# outputs it reads, one thread each on 2 cores, output in exp/log/<job>.log (--nj 1: one by one, on the
# terminal); their costs below are on one core beside another job.
#   0 corpus   espeak-ng -> $corpus_dir (LibriSpeech layout, exact word times), and --subsets:
#              keyword spotting (Speech Commands v0.01 layout) and speaker identification
#              -> $corpus_dir/subsets                                               ~45 s, 75 MB
#   1 data     $corpus_dir -> data/{train,dev,test} (Kaldi data dirs + skipped.txt,
#              + 'phones': the corpus's espeak-ng phones, words separated by |),
#              data/{ks,sid}_{train,dev,test} (text = keyword class; utt2spk = speaker)  ~2 s
#   2 align    data/* -> exp/align/{train,dev,test}/*.TextGrid (words + phones tiers),
#              failed.txt, report.json (PER, word-boundary error vs the exact times).
#              MFA when usable and given --mfa-dictionary/--mfa-acoustic-model, else a CTC
#              phone model on log-Mel (blank penalty tuned on dev, silence trimmed)   ~4 min
#   3 targets  k-means codes: MFCC at 50 Hz (HuBERT) and log-Mel at 50 Hz (MelHuBERT-20ms)
#              -> exp/targets/{mfcc,fbank}/{train,dev}.km                              ~20 s
#   4 hubert   with --hubert true: conf/hubert_tiny.yaml -> exp/hubert_tiny/{model.pt,hubert_local.pt}
#              (a waveform-CNN HuBERT, exported for s3prl's own hubert_local)  ~15 min on one core
#   5 melhubert conf/melhubert_tiny.yaml -> exp/melhubert_tiny/model.pt               ~3.5 min
#   6 star     STaR distillation (layer-wise + intra-layer TGM) of the --distill-teacher into a
#              narrower student of the same depth: conf/star_tiny.yaml -> exp/star_tiny/model.pt
#              (loads with s3prl's star_hubert_local)                                 ~24 min
#   7 distil   the DistilHuBERT-style baseline (L1 + cosine through prediction heads), same student
#              size: conf/distilhubert_tiny.yaml -> exp/distilhubert_tiny/model.pt    ~23 min
#   8 probe    frozen-feature CTC phone probe: log-Mel vs each teacher and student
#              -> exp/probe/*/result.json; and for each of --subsets, an utterance probe
#              (mean+std pooling, logistic regression): keyword / speaker accuracy
#              -> exp/probe_{ks,sid}/*/result.json          ~4-6 min per phone probe, seconds per utterance probe
#   9 subsample DistilHuBERT-style students with sequence subsampling (Meng et al. 2022), one per
#              --subsampling variant (conf/distilhubert_tiny_<v>.yaml): avg2 / avg4 (fixed, 25 / 12.5 Hz,
#              targets subsampled), cif_card4 (CIF + cardinality, 12.5 Hz), cif_dp4 (CIF guided by the
#              smoothed teacher codes, 12.5 Hz), phones (the forced-alignment topline); their
#              segmentations first -> exp/segments/{phones,dp<rate>}/*.seg; then each student's phone
#              probe -> exp/probe/distilhubert_tiny_<v>/result.json      ~18 min per variant (2,400 updates)
#  10 superb   --superb-model through s3prl's own SUPERB runner (bin/run_downstream: train, then
#              -m evaluate) for each of --superb ("ks sid asr"; "pr" too with --s3prl-root, a git checkout
#              of s3prl), --superb-steps updates each -> exp/superb/<model>/<task>/superb_test*.json; and
#              with --asr5k true, ESPnet ASR (CTC over --asr5k-nbpe BPE units, ESPnet's own commands)
#              -> exp/asr5k_<model>/result.json                             ~4 min per task, ASR-5k ~10 min
#  11 report   prints where everything is and what it scored -> exp/report.{json,md}: the comparison table
#              (params, MACs, MACs-C, RTF, probes, SUPERB metrics and scores, ASR-5k WER) with the
#              trade-off plot (exp/report_tradeoff.png) and the training-loss curves from TensorBoard
#              (exp/report_losses.png); the PER vs frame rate / MACs-C plot of the students
#              -> exp/subsampling.png; the average frame rates of phones / characters / BPE pieces on
#              dev (Fig. 2) -> exp/unit_rates.{json,png}
#  12 compress compression chains of the stage-5 MelHuBERT (Lin et al. 2024), one per --compress entry
#              (conf/compress/<chain>.yaml over conf/compress/common.yaml): weight, heads (eq. 5), heads_l1
#              (eq. 4), ffn, kd, first_k, combined (KD -> heads -> FFN), identity / conv (diagonal heads
#              replaced); each iteration recovers 200 updates and is probed (phones; speakers with the sid
#              subset) -> exp/compress/<chain>/
#              {trajectory.csv, <NN>_<method><k>/model.pt}; then exp/compress/report/{report.md, tradeoff.png,
#              density.png, weight_density.png, diagonality.png}            ~3 min per iteration
#
# Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 2] [--corpus-dir DIR] [--utts-per-speaker K] [--seed S] [--hubert false]
#                 [--subsets "ks sid"] [--subsampling "cif_dp4"] [--superb "ks"] [--asr5k false] [--compress "heads"]
# Finished stages are skipped (markers in exp/.done.*); delete a marker to redo a stage.
set -euo pipefail

stage=0
stop_stage=100
corpus_dir=data/mini_corpus
utts_per_speaker=45
seed=0
subsets="ks sid"      # KS/SID subsets of the corpus ("" for none; sid needs >= 3 utterances per speaker)
nj=2                  # jobs side by side (stages 4-12, utils/jobs.sh; 1: one after the other, output on the terminal)
aligner=auto          # auto: MFA if it runs here, else CTC; mfa; ctc
align_steps=600
align_blank_penalty=auto   # auto: the best of 0..40 on dev against its exact word times
mfa_dictionary=""          # with MFA installed (conda): a dictionary and acoustic model for `mfa align`
mfa_acoustic_model=""
teacher_steps=600
hubert=false                # stage 4: also pre-train the waveform HuBERT teacher (~15 min of one core beside the
                            # other jobs; make demo: off -- MelHuBERT is the students' teacher); on by itself when
                            # --distill-teacher or --superb-model is hubert_tiny
distill_teacher=melhubert_tiny   # the teacher of stages 6-7: melhubert_tiny (the better one here) or hubert_tiny
student_steps=2400          # students' updates: 600 is far from converged (test PER 49.8/45.7%), 2400 gives
                            # 30.7/28.9-30.4% (two runs), 4800 26.1/24.5% (egs/mini/RESULTS.md); 4800 doubles 6-7
probe_steps=5000            # linear probe updates (SUPERB PR design; ~1-3 min each)
subsampling="cif_dp4"      # stage 9 variants (each ~18 min); the full comparison: "avg2 avg4 cif_card4 cif_dp4 phones" ("" for none)
dp_layer=2                  # teacher layer of the smoothed codes (the paper: 6 of HuBERT's 12; here 2 of 4)
dp_rate=12.5                # target average frame rate of the DP segmentation (Hz)
superb="ks"                 # stage 10 tasks through s3prl's runner: ks sid asr (pr: needs --s3prl-root); "" for none
superb_model=star_tiny      # the model they run on (any exp/<name>/model.pt of the stages above)
superb_steps=2000           # updates per task (SUPERB's configs: 200k; the mini corpus is ~0.4 h)
s3prl_root="${S3PRL_ROOT:-}"  # a git checkout of s3prl, for PR (its ctc/libriphone corpus code); default: $S3PRL_ROOT
asr5k=false                 # stage 10: ESPnet ASR-5k (CTC over BPE) on --superb-model (~10 min; off in make demo)
asr5k_nbpe=100              # BPE units the mini text holds (LibriSpeech 100 h: 5000)
asr5k_epochs=15
compress_updates=""         # stage 12: cap every recovery at this many updates (quick checks; default: the configs')
compress_probe_steps=""     # stage 12: phone-probe updates per iteration (default: the configs' 1,000)
compress="heads"            # stage 12 chains (make demo: heads, ~12 min); the full comparison (~50 min, two at a
                            # time on 2 cores): "weight heads heads_l1 ffn kd first_k combined identity conv"

. ./cmd.sh
. utils/log.sh
. utils/jobs.sh
. utils/parse_options.sh
. ./path.sh    # after the options: --help installs nothing

if [ ${stage} -le 0 ] && [ ${stop_stage} -ge 0 ]; then
  if stage_done corpus; then
    log "Stage 0: corpus already made in ${corpus_dir}"
  else
    log "Stage 0: synthesising the mini corpus into ${corpus_dir}"
    python -m s3prl_plugins.bin.make_mini_corpus --out "${corpus_dir}" --seed "${seed}" \
      --utts-per-speaker "${utts_per_speaker}" --jobs "${nj}" --subsets ${subsets}
    mark_done corpus
  fi
fi

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
  if stage_done data; then
    log "Stage 1: data dirs already in data/"
  else
    log "Stage 1: Kaldi data dirs from ${corpus_dir}"
    python -m s3prl_plugins.bin.prepare_data --root "${corpus_dir}/LibriSpeech" --subsets train dev test --out data
    for split in train dev test; do
      python -m s3prl_plugins.bin.make_phones --dirs "data/${split}" --mini-corpus "${corpus_dir}" --split "${split}" > /dev/null
    done
    for kind in ${subsets}; do
      for split in train dev test; do
        rm -rf "data/${kind}_${split}" && cp -r "${corpus_dir}/subsets/data/${kind}_${split}" "data/${kind}_${split}"
      done
    done
    mark_done data
  fi
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
  if stage_done align; then
    log "Stage 2: alignments already in exp/align"
  else
    log "Stage 2: forced alignment (aligner=${aligner})"
    mfa_ok=false
    if [ "${aligner}" != ctc ] && python -m s3prl_plugins.bin.inspect --mfa 2>/dev/null; then
      mfa_ok=true
    fi
    if [ "${aligner}" = mfa ] && { [ "${mfa_ok}" = false ] || [ -z "${mfa_dictionary}" ] || [ -z "${mfa_acoustic_model}" ]; }; then
      log "--aligner mfa needs a working MFA and --mfa-dictionary/--mfa-acoustic-model"; exit 1
    fi
    if [ "${mfa_ok}" = true ] && [ -n "${mfa_dictionary}" ] && [ -n "${mfa_acoustic_model}" ]; then
      ${train_cmd} python -m s3prl_plugins.bin.mfa_align --dirs data/train data/dev data/test \
        --dictionary "${mfa_dictionary}" --acoustic-model "${mfa_acoustic_model}" --out exp/align --jobs "${nj}"
      mark_done align
    else
      log "MFA not used (not installed/working here, or no --mfa-dictionary/--mfa-acoustic-model): CTC aligner"
      ${train_cmd} python -m s3prl_plugins.bin.align --train data/train --dirs data/train data/dev data/test \
        --out exp/align --method ctc --max-steps "${align_steps}" --blank-penalty "${align_blank_penalty}" \
        --tune-dir data/dev --trim-silence --reference-dir "${corpus_dir}/reference"
      mark_done align
    fi
  fi
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
  if stage_done targets; then
    log "Stage 3: targets already in exp/targets"
  else
    log "Stage 3: k-means targets (MFCC for HuBERT, log-Mel for MelHuBERT)"
    python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev --feature mfcc --clusters 100 --frame-step 2 --out exp/targets/mfcc
    python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev --feature fbank --clusters 100 --frame-step 2 --out exp/targets/fbank
    mark_done targets
  fi
fi

# From here on, stages queue jobs (see the header); the long trainings go --first, the probes fill the gaps.
model_job() {  # the job that trains exp/<name>/model.pt ("" for fbank or a model from elsewhere)
  case "$1" in
    hubert_tiny) echo hubert ;; melhubert_tiny) echo melhubert ;; star_tiny) echo star ;;
    distilhubert_tiny) echo distil ;; distilhubert_tiny_*) echo "subsample_${1#distilhubert_tiny_}" ;; *) echo "" ;;
  esac
}
teacher_job=$(model_job "${distill_teacher}")
teacher_width() {
  python -m s3prl_plugins.bin.inspect "exp/${distill_teacher}/model.pt" --key model_config.embed_dim
}

with_hubert=false   # the waveform HuBERT is made (and probed) when asked for, needed, or already there
if [ "${hubert}" = true ] || [ "${distill_teacher}" = hubert_tiny ] || [ "${superb_model}" = hubert_tiny ] || stage_done hubert; then
  with_hubert=true
fi
if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
  if stage_done hubert; then
    log "Stage 4: HuBERT teacher already in exp/hubert_tiny"
  elif [ "${with_hubert}" = false ]; then
    log "Stage 4: skipped (--hubert true pre-trains the waveform HuBERT teacher too)"
  else
    log "Stage 4: masked-prediction pre-training of a small HuBERT (resumes if interrupted)"
    job --first hubert "" ${train_cmd} python -m s3prl_plugins.bin.pretrain --config conf/hubert_tiny.yaml --set trainer.max_steps=${teacher_steps}
  fi
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ]; then
  if stage_done melhubert; then
    log "Stage 5: MelHuBERT teacher already in exp/melhubert_tiny"
  else
    log "Stage 5: masked-prediction pre-training of a small MelHuBERT-20ms"
    job --first melhubert "" ${train_cmd} python -m s3prl_plugins.bin.pretrain --config conf/melhubert_tiny.yaml --set trainer.max_steps=${teacher_steps}
  fi
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ]; then
  if stage_done star; then
    log "Stage 6: STaR student already in exp/star_tiny"
  else
    log "Stage 6: STaR distillation of exp/${distill_teacher}/model.pt (resumes if interrupted)"
    job --first star "${teacher_job}" ${train_cmd} python -m s3prl_plugins.bin.distill --config conf/star_tiny.yaml \
      --set "teacher.source=exp/${distill_teacher}/model.pt" "trainer.max_steps=${student_steps}"
  fi
fi

train_distil() {
  ${train_cmd} python -m s3prl_plugins.bin.distill --config conf/distilhubert_tiny.yaml \
    --set "teacher.source=exp/${distill_teacher}/model.pt" "trainer.max_steps=${student_steps}" "student.args.head.out_dim=$(teacher_width)"
}
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ]; then
  if stage_done distil; then
    log "Stage 7: DistilHuBERT-style student already in exp/distilhubert_tiny"
  else
    log "Stage 7: DistilHuBERT-style distillation of exp/${distill_teacher}/model.pt (same student size)"
    job --first distil "${teacher_job}" train_distil
  fi
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ]; then
  probed="fbank $([ "${with_hubert}" = false ] || echo hubert_tiny) melhubert_tiny star_tiny distilhubert_tiny"   # log-Mel, teacher(s), students
  for name in ${probed}; do
    if stage_done "probe_${name}"; then
      log "Stage 8: probe ${name} already done"
      continue
    fi
    features=${name}
    [ "${name}" = fbank ] || features=exp/${name}/model.pt
    log "Stage 8: phone-recognition probe on ${features}"
    job "probe_${name}" "$(model_job "${name}")" ${train_cmd} python -m s3prl_plugins.bin.probe --features "${features}" \
      --train data/train --test data/test --out "exp/probe/${name}" --max-steps "${probe_steps}"
  done
  for kind in ${subsets}; do
    label=text; [ "${kind}" = sid ] && label=speaker
    for name in ${probed}; do
      stage_done "probe_${kind}_${name}" && continue
      features=${name}
      [ "${name}" = fbank ] || features=exp/${name}/model.pt
      log "Stage 8: ${kind} probe (utterance accuracy) on ${features}"
      job "probe_${kind}_${name}" "$(model_job "${name}")" ${train_cmd} python -m s3prl_plugins.bin.probe_utt --features "${features}" \
        --train "data/${kind}_train" --test "data/${kind}_test" --label "${label}" --out "exp/probe_${kind}/${name}"
    done
  done
fi

segments_phones() {
  for split in train dev test; do
    python -m s3prl_plugins.bin.segment textgrid --data "data/${split}" --textgrids "exp/align/${split}" --out "exp/segments/phones/${split}.seg"
  done
}
train_subsample() {  # train_subsample VARIANT [--set overrides...]
  local v=$1; shift
  ${train_cmd} python -m s3prl_plugins.bin.distill --config "conf/distilhubert_tiny_${v}.yaml" \
    --set "teacher.source=exp/${distill_teacher}/model.pt" "trainer.max_steps=${student_steps}" "student.args.head.out_dim=$(teacher_width)" "$@"
}
if [ ${stage} -le 9 ] && [ ${stop_stage} -ge 9 ] && [ -n "${subsampling}" ]; then
  case " ${subsampling} " in *" phones "*)
    if ! stage_done segments_phones; then
      log "Stage 9: phone segmentations from the stage-2 alignments -> exp/segments/phones"
      job segments_phones "" segments_phones
    fi ;;
  esac
  case " ${subsampling} " in *" cif_dp"*)
    if ! stage_done "segments_dp${dp_rate}"; then
      log "Stage 9: smoothed codes of layer ${dp_layer} of exp/${distill_teacher} (DP, lambda for ${dp_rate} Hz) -> exp/segments/dp${dp_rate}"
      job --first "segments_dp${dp_rate}" "${teacher_job}" python -m s3prl_plugins.bin.segment dp --train data/train --also data/dev data/test \
        --ckpt "exp/${distill_teacher}/model.pt" --layer "${dp_layer}" --clusters 100 --target-rate "${dp_rate}" --out "exp/segments/dp${dp_rate}"
    fi ;;
  esac
  for v in ${subsampling}; do
    name=distilhubert_tiny_${v}
    [ -f "conf/${name}.yaml" ] || { log "--subsampling ${v}: no conf/${name}.yaml"; exit 1; }
    seg=(); probe_seg=(); deps="${teacher_job}"
    case "${v}" in
      cif_dp*) seg=("data.train_segmentation=exp/segments/dp${dp_rate}/train.seg" "data.valid_segmentation=exp/segments/dp${dp_rate}/dev.seg")
               deps+=" segments_dp${dp_rate}" ;;
      phones) probe_seg=(--segmentation exp/segments/phones/train.seg exp/segments/phones/test.seg); deps+=" segments_phones" ;;
    esac
    if ! stage_done "subsample_${v}"; then
      log "Stage 9: ${name} (conf/${name}.yaml, ${student_steps} updates)"
      job --first "subsample_${v}" "${deps}" train_subsample "${v}" ${seg[@]+"${seg[@]}"}
    fi
    if ! stage_done "probe_${name}"; then
      log "Stage 9: phone-recognition probe on exp/${name}/model.pt"
      job "probe_${name}" "subsample_${v} ${deps}" ${train_cmd} python -m s3prl_plugins.bin.probe --features "exp/${name}/model.pt" \
        --train data/train --test data/test --out "exp/probe/${name}" --max-steps "${probe_steps}" ${probe_seg[@]+"${probe_seg[@]}"}
    fi
  done
fi

up=$( [ "${superb_model#melhubert}" != "${superb_model}" ] && echo melhubert_local || echo star_hubert_local )
superb_task() {  # superb_task TASK: s3prl's runner trains, then -m evaluate on the best checkpoint
  local task=$1 d split exp over best prep
  local ckpt=exp/${superb_model}/model.pt
  local root_opt=(); [ -z "${s3prl_root}" ] || root_opt=(--s3prl-root "${s3prl_root}")
  case "${task}" in
    asr|pr) prep=(--train data/train --dev data/dev --test data/test) ;;
    sid) prep=(--train data/sid_train --dev data/sid_dev --test data/sid_test) ;;
    ks) prep=(--speech-commands "${corpus_dir}/subsets") ;;
  esac
  d=$(python -m s3prl_plugins.bin.inspect --downstream "${task}")
  split=test; [ "${task}" != asr ] || split=test-clean
  exp=exp/superb/${superb_model}/${task}
  python -m s3prl_plugins.bin.superb_prepare "${task}" "${prep[@]}" --out "exp/superb/tasks/${task}" --steps "${superb_steps}" --num-workers 0 >/dev/null
  over=""   # the mini ASR head is narrower than SUPERB's 2 x 1024 BLSTM (2 CPU cores)
  [ "${task}" != asr ] || over="config.downstream_expert.modelrc.project_dim=256,,config.downstream_expert.modelrc.RNNs.dim=[256,256],,config.downstream_expert.datarc.batch_size=16"
  rm -rf "${exp}"; mkdir -p "$(dirname "${exp}")"
  ${train_cmd} python -m s3prl_plugins.bin.run_downstream ${root_opt[@]+"${root_opt[@]}"} -m train -u "${up}" -k "${ckpt}" -d "${d}" \
    -c "exp/superb/tasks/${task}/config.yaml" -p "${exp}" ${over:+-o "${over}"} > "${exp}.train.log" 2>&1 \
    || { tail -20 "${exp}.train.log"; log "Stage 10: ${task} training failed (log: ${exp}.train.log)"; return 1; }
  best=$(ls "${exp}"/dev*-best.ckpt 2>/dev/null | head -1); [ -n "${best}" ] || best=$(ls -v "${exp}"/states-*.ckpt | tail -1)
  ${train_cmd} python -m s3prl_plugins.bin.run_downstream ${root_opt[@]+"${root_opt[@]}"} -m evaluate -t "${split}" -e "${best}" \
    > "${exp}.evaluate.log" 2>&1 || { tail -20 "${exp}.evaluate.log"; log "Stage 10: ${task} evaluation failed"; return 1; }
  echo "   $(python -m s3prl_plugins.bin.inspect "${exp}/superb_${split}.json" --key superb)"
}
asr5k_task() {
  local conf
  conf=$(dirname "$(readlink -f "$0")")/../../espnet_recipes/mini/asr5k/conf/train_asr_mini.yaml
  ${train_cmd} python -m s3prl_plugins.bin.espnet_asr --config "${conf}" \
    --upstream "${up}" --ckpt "exp/${superb_model}/model.pt" --train data/train --valid data/dev --test data/test --nbpe "${asr5k_nbpe}" \
    --work "exp/asr5k_${superb_model}" --train-args "--max_epoch ${asr5k_epochs}"
}
if [ ${stage} -le 10 ] && [ ${stop_stage} -ge 10 ]; then
  superb_job=$(model_job "${superb_model}")
  if [ -n "${superb}${asr5k#false}" ] && [ ! -f "exp/${superb_model}/model.pt" ] && { [ -z "${superb_job}" ] || [ -z "${__job_pid[${superb_job}]:-}" ]; }; then
    log "Stage 10: no exp/${superb_model}/model.pt (--superb-model names a model of stages 4-9)"; exit 1
  fi
  for task in ${superb}; do
    stage_done "superb_${superb_model}_${task}" && continue
    case "${task}" in asr|pr|sid|ks) ;; *) log "--superb ${task}: the tasks are ks sid asr pr"; exit 1 ;; esac
    [ "${task}" != pr ] || [ -n "${s3prl_root}" ] || { log "--superb pr needs --s3prl-root (a git checkout of s3prl)"; exit 1; }
    log "Stage 10: SUPERB ${task^^} on exp/${superb_model}/model.pt through s3prl's runner (${superb_steps} updates) -> exp/superb/${superb_model}/${task}"
    job "superb_${superb_model}_${task}" "${superb_job}" superb_task "${task}"
  done
  if [ "${asr5k}" = true ] && ! stage_done "asr5k_${superb_model}"; then
    log "Stage 10: ESPnet ASR-${asr5k_nbpe} on exp/${superb_model}/model.pt (${asr5k_epochs} epochs) -> exp/asr5k_${superb_model}"
    job "asr5k_${superb_model}" "${superb_job}" asr5k_task
  fi
fi

make_report() {
  python -m s3prl_plugins.bin.unit_rates --data data/dev --train data/train --vocab 100 200 500 1000 \
    --out exp/unit_rates.json --plot exp/unit_rates.png > /dev/null   # Fig. 2; 5k/16k pieces do not fit this text
  python -m s3prl_plugins.bin.mini_report --subsampling ${subsampling} > exp/report.txt.tmp
  mv exp/report.txt.tmp exp/report.txt
}
if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
  log "Stage 11: report (after the jobs above) -> exp/report.{json,md,txt}"
  rm -f exp/.done.report exp/report.txt
  job report "${!__job_pid[*]}" make_report
fi

compress_chain() {  # compress_chain CHAIN
  local c=$1 quick=()
  [ -z "${compress_updates}" ] || quick+=("updates_cap=${compress_updates}")
  [ -z "${compress_probe_steps}" ] || quick+=("measure.probe.max_steps=${compress_probe_steps}" "measure.diagonality=10")
  [ -d data/sid_train ] || quick+=("measure.sid=null")   # no speaker subset (--subsets without sid): no SID probe
  [ ${#quick[@]} -eq 0 ] || quick=(--set "${quick[@]}")
  ${train_cmd} python -m s3prl_plugins.bin.compress --config conf/compress/common.yaml "conf/compress/${c}.yaml" ${quick[@]+"${quick[@]}"}
}
compress_report() {
  local dirs=() c
  for c in ${compress}; do dirs+=("exp/compress/${c}"); done
  python -m s3prl_plugins.bin.compression_report --chains "${dirs[@]}" --out exp/compress/report > /dev/null
}
if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ] && [ -n "${compress}" ]; then
  chains=""
  for c in ${compress}; do
    [ -f "conf/compress/${c}.yaml" ] || { log "no such chain: conf/compress/${c}.yaml"; exit 1; }
    log "Stage 12: compression chain ${c} -> exp/compress/${c} (resumes where it stopped)"
    job --first "compress_${c}" melhubert compress_chain "${c}"
    chains+=" compress_${c}"
  done
  rm -f exp/.done.compress_report
  job compress_report "${chains}" compress_report
fi

job_wait
if [ ${stage} -le 11 ] && [ ${stop_stage} -ge 11 ]; then
  cat exp/report.txt
fi
if [ ${stage} -le 12 ] && [ ${stop_stage} -ge 12 ] && [ -n "${compress}" ]; then
  log "Stage 12: exp/compress/report/report.md (table), tradeoff.png, density.png, weight_density.png, diagonality.png"
  log "          every model loads with s3prl.hub.melhubert_pruned_local(ckpt='exp/compress/<chain>/<NN>_<method><k>/model.pt')"
fi
