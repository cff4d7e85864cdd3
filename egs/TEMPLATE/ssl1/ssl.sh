#!/usr/bin/env bash
# The one recipe template: every recipe's run.sh is options plus one call of this script (ESPnet's asr.sh
# pattern), run from the recipe's directory, which holds conf/, local/data.sh, cmd.sh, path.sh and utils/.
#
# Stages (each one command per item; stages 3-8 are jobs, see below):
#   1 data      local/data.sh ${local_data_opts}: the recipe's own corpus preparation -> data/*
#   2 phones    with --align: forced alignment of --align-sets -> exp/align/<set>/*.TextGrid, report.json
#               (MFA when it runs here and has --mfa-dictionary/--mfa-acoustic-model, else the CTC aligner;
#               --textgrids DIR: alignments made elsewhere); their phone boundaries -> exp/segments/phones/<set>.seg
#   3 targets   one k-means job per --targets entry NAME=FEATURE,CLUSTERS,FRAME_STEP[,CKPT,LAYER] -> exp/targets/NAME
#               and one segmentation job per --segments entry NAME=CKPT,LAYER,CLUSTERS,RATE (smoothed codes and
#               Kamper and van Niekerk's DP) -> exp/segments/NAME
#   4 train     one job per --train config conf/NAME.yaml -> its trainer.exp_dir: bin/pretrain, or bin/distill
#               when the config has a teacher (--teacher, --pretrain-args, --distill-args: overrides)
#   5 compress  one job per --compress chain (conf/compress/common.yaml + conf/compress/CHAIN.yaml, overrides
#     deploy    --compress-args) -> ${compress_dir}/CHAIN, then their report -> ${compress_dir}/report; and one
#               deployment job per --deploy model: int8 ONNX (bin/export --int8 MODE --calibration DEV, MODE from
#               --deploy-int8) -> exp/NAME_int8.onnx
#   6 probe     phone probe (--probe-train -> --probe-test) of each of --probe (fbank, exp/NAME/model.pt, or any
#               model source) -> exp/probe/NAME; utterance probes of --utt-probe on data/<set>_{train,test} for
#               each of --utt-probe-sets (ks: keyword, sid: speaker) -> exp/probe_<set>/NAME
#   7 superb    each of --superb (ks sid asr pr) through s3prl's own runner on --superb-model (train, then
#               -m evaluate) -> exp/superb/<model>/<task>; with --asr5k true ESPnet ASR -> exp/asr5k_<model>
#   8 report    local/report.sh when the recipe has one, else bin/report over every probed model
#               -> exp/report.{json,md}
#
# Jobs. Stages 3-8 write one script per job (exp/jobs/NAME.sh: the command, readable and rerunnable) and a
# makefile (exp/jobs.mk), where each job waits for the jobs that write what it reads (found from the paths
# its command or config reads under exp/), then GNU make runs them, --jobs of them side by side (make -j:
# one thread each on 2 cores with --jobs 2; stamp files exp/.done.NAME; a failed job stops only the jobs
# that need it). Each job runs through ${train_cmd} from cmd.sh (local, srun, or Kaldi's run.pl/queue.pl/
# slurm.pl, which take the job's log file first), its output in exp/log/NAME.log (with --jobs 1: on the
# terminal). When several are ready, the one of the earliest stage goes first. A finished job is skipped;
# delete exp/.done.NAME to redo it (only it: a training resumes from its checkpoints).
#
# Usage (from a recipe): ./ssl.sh [--stage N] [--stop-stage M] [--jobs 2] [options, see --help]
set -euo pipefail
shopt -s extglob

stage=1
stop_stage=100
jobs=1                    # jobs side by side (make -j); 1: one after the other, output on the terminal
local_data_opts=""        # options of local/data.sh
align=none                # stage 2: none, auto (MFA if it runs here with a dictionary and model, else CTC), ctc, mfa
align_sets="data/train data/dev data/test"
align_args=""             # more options of bin/align (the CTC aligner)
textgrids=""              # stage 2: TextGrids made elsewhere, DIR/<set>/<utt>.TextGrid (instead of aligning)
mfa_dictionary=""
mfa_acoustic_model=""
targets=""                # stage 3: NAME=FEATURE,CLUSTERS,FRAME_STEP[,CKPT,LAYER] ...
segments=""               # stage 3: NAME=CKPT,LAYER,CLUSTERS,RATE ...
segment_args=""           # more options of bin/segment dp (e.g. --sweep-utts 500)
train_data=data/train     # the training set (targets, segmentations)
dev_data=data/dev
test_data=data/test
train=""                  # stage 4: NAME (conf/NAME.yaml) or a config path ...
teacher=""                # teacher.source of every distillation (default: each config's)
pretrain_args=""          # --set overrides of every pre-training (e.g. trainer.max_steps=600)
distill_args=""           # --set overrides of every distillation
ngpu=1                    # GPUs per training (torchrun --standalone with more than one)
launcher=""               # default: python, or torchrun for --ngpu > 1 (multi-node: your torchrun line)
epochs=""                 # trainings' budgets in epochs of --train-data: "N" for all, "NAME=N" for one
effective_batch=""        # utterances per update (with --epochs: grad_accum = it / (data.batch_size x ngpu))
compress=""               # stage 5: chains conf/compress/CHAIN.yaml ...
compress_args=""          # --set overrides of every chain
compress_dir=exp/compress
deploy=""                 # stage 5: models (NAME or a checkpoint) deployed as int8 ONNX -> exp/NAME_int8.onnx
                          # (probe and report it as NAME_int8)
deploy_int8=auto          # matmul | all | auto: bin/export --int8 MODE, calibrated on --dev-data's audio
int8=""                   # retired: --deploy NAMES (bin/export's --int8 is the quantisation mode)
int8_mode=""              # retired: --deploy-int8 MODE
probe=""                  # stage 6: fbank, NAME (exp/NAME/model.pt) or a model source (hubert_base) ...
probe_train=""            # default: --train-data
probe_test=""             # default: --test-data
probe_args=""             # more options of bin/probe (e.g. --max-steps 5000)
utt_probe=""              # stage 6: models of the utterance probes (default: none)
utt_probe_sets=""         # ks sid
superb=""                 # stage 7: ks sid asr pr
superb_model=""           # NAME (exp/NAME/model.pt)
superb_steps=2000
superb_asr_args=""        # -o overrides of s3prl's runner for asr (e.g. a narrower head)
speech_commands=""        # ks: the Speech Commands v0.01 folder
librispeech=""            # pr on LibriSpeech: s3prl's own libriphone config with this corpus root
s3prl_root="${S3PRL_ROOT:-}"
asr5k=false               # stage 7: ESPnet ASR (CTC over BPE) on --superb-model
asr5k_nbpe=100
asr5k_epochs=15
asr5k_config=""           # default: espnet_recipes/mini/asr5k/conf/train_asr_mini.yaml
report_args=""            # more options of local/report.sh or bin/report

. ./cmd.sh
. utils/log.sh
. utils/parse_options.sh
[ -z "${int8}${int8_mode}" ] || {
  echo "$0: --int8 / --int8-mode are --deploy NAMES / --deploy-int8 MODE now (bin/export's --int8 is the mode)" >&2
  exit 2
}
. ./path.sh    # after the options: --help installs nothing

__root=$(cd "$(dirname "$(readlink -f "$0")")/../../.." && pwd)   # the repository
[ -n "${asr5k_config}" ] || asr5k_config=${__root}/espnet_recipes/mini/asr5k/conf/train_asr_mini.yaml
[ -n "${probe_train}" ] || probe_train=${train_data}
[ -n "${probe_test}" ] || probe_test=${test_data}
in_stages() { [ "${stage}" -le "$1" ] && [ "${stop_stage}" -ge "$1" ]; }
conf_get() { local f=$1 k=$2 d=${3-}; shift 3; python -m s3prl_plugins.bin.inspect "${f}" --key "${k}" --default "${d}" "$@"; }

# --- jobs (stage 2's aligner, stages 3-8) -------------------------------------------------------------------------------
declare -A __out=() __in=() __model=()   # job -> the folder it writes / the paths under exp/ it reads / its model
__order=()
mkdir -p exp/jobs exp/log
job() {  # job NAME OUT "INPUTS" COMMAND [ARGS...]: exp/jobs/NAME.sh runs COMMAND (a program or a function here)
  local name=$1 out=$2 inputs=$3; shift 3
  __out[${name}]=${out}; __in[${name}]=${inputs}; __order+=("${name}")
  {
    echo "#!/usr/bin/env bash"
    echo "# job ${name} -> ${out} (written by ssl.sh; run by utils/run_job.sh, or by hand from $(pwd))"
    echo "set -euo pipefail"
    if [ "$(type -t "$1")" = function ]; then   # a function of this script, with the options it reads
      declare -p s3prl_root superb_asr_args superb_steps librispeech speech_commands train_data dev_data test_data \
        asr5k_config asr5k_nbpe asr5k_epochs
      declare -f "$1"
    fi
    printf '%q ' "$@"; echo
  } > "exp/jobs/${name}.sh.tmp"
  mv "exp/jobs/${name}.sh.tmp" "exp/jobs/${name}.sh"
}
exp_inputs() {  # the paths under exp/ that a config reads, with --set overrides: exp_inputs CONFIG... [--set K=V...]
  python -m s3prl_plugins.bin.inspect "$@" --paths exp/
}
short_name() { local n; n=$(basename "${1%/model.pt}"); echo "${n%.@(pt|ckpt|onnx)}"; }   # exp/probe/<it>
model_path() {  # a probe's or SUPERB's model: fbank, a path, NAME (trained here: its model.pt; else exp/NAME/model.pt), a source
  case "$1" in
    fbank|*/*|*.pt|*.onnx) echo "$1" ;;
    *) if [ -n "${__model[$1]:-}" ]; then echo "${__model[$1]}"; elif [ -d "exp/$1" ]; then echo "exp/$1/model.pt"; else echo "$1"; fi ;;
  esac
}

if in_stages 1; then
  data_done=data_$(printf %s "${local_data_opts}" | md5sum | cut -c1-8)   # other options: prepared again
  if stage_done "${data_done}"; then
    log "Stage 1: data already prepared (exp/.done.${data_done})"
  else
    log "Stage 1: local/data.sh ${local_data_opts}"
    eval "local/data.sh ${local_data_opts}"   # eval: quoted lists in the options stay one value
    mark_done "${data_done}"
  fi
fi

if in_stages 2 && { [ "${align}" != none ] || [ -n "${textgrids}" ]; }; then
  if stage_done align; then
    log "Stage 2: alignments already in exp/align"
  else
    if [ -z "${textgrids}" ]; then
      mfa_ok=false
      if [ "${align}" != ctc ] && python -m s3prl_plugins.bin.inspect --mfa 2>/dev/null; then mfa_ok=true; fi
      if [ "${align}" = mfa ] && { [ "${mfa_ok}" = false ] || [ -z "${mfa_dictionary}" ] || [ -z "${mfa_acoustic_model}" ]; }; then
        log "--align mfa needs a working MFA and --mfa-dictionary/--mfa-acoustic-model"; exit 1
      fi
      # shellcheck disable=SC2086
      if [ "${mfa_ok}" = true ] && [ -n "${mfa_dictionary}" ] && [ -n "${mfa_acoustic_model}" ]; then
        log "Stage 2: MFA alignments of ${align_sets} -> exp/align"
        job align exp/align "" python -m s3prl_plugins.bin.mfa_align --dirs ${align_sets} \
          --dictionary "${mfa_dictionary}" --acoustic-model "${mfa_acoustic_model}" --out exp/align --jobs "${jobs}"
      else
        log "Stage 2: CTC phone aligner (MFA not used: not working here, or no --mfa-dictionary/--mfa-acoustic-model)"
        job align exp/align "" python -m s3prl_plugins.bin.align --train "${train_data}" --dirs ${align_sets} \
          --out exp/align --method ctc ${align_args}
      fi
      __order=()   # run now, alone, with every core (its figures were measured so)
      JOBS=1 utils/run_job.sh align
      textgrids=exp/align
    fi
    for d in ${align_sets}; do
      s=$(basename "${d}")
      python -m s3prl_plugins.bin.segment textgrid --data "${d}" --textgrids "${textgrids}/${s}" \
        --out "exp/segments/phones/${s}.seg" >> exp/log/align.log
    done
    mark_done align
  fi
fi

if in_stages 3; then
  for spec in ${targets}; do
    name=${spec%%=*}; IFS=, read -r feature clusters step ckpt layer <<< "${spec#*=}"
    from=(); [ -z "${ckpt:-}" ] || from=(--ckpt "${ckpt}" --layer "${layer}")
    job "targets_${name}" "exp/targets/${name}" "${ckpt:-}" python -m s3prl_plugins.bin.make_targets --train "${train_data}" \
      --also "${dev_data}" --feature "${feature}" --clusters "${clusters}" --frame-step "${step}" ${from[@]+"${from[@]}"} --out "exp/targets/${name}"
  done
  for spec in ${segments}; do
    name=${spec%%=*}; IFS=, read -r ckpt layer clusters rate <<< "${spec#*=}"
    # shellcheck disable=SC2086
    job "segments_${name}" "exp/segments/${name}" "${ckpt}" python -m s3prl_plugins.bin.segment dp --train "${train_data}" \
      --also "${dev_data}" "${test_data}" --ckpt "${ckpt}" --layer "${layer}" --clusters "${clusters}" --target-rate "${rate}" \
      ${segment_args} --out "exp/segments/${name}"
  done
fi

if [ -n "${train}" ]; then   # the models' paths are needed by the later stages, even when stage 4 is not run
  [ "${ngpu}" -le 1 ] || [ -n "${launcher}" ] || launcher="torchrun --standalone --nproc_per_node ${ngpu}"
  for entry in ${train}; do
    conf=${entry}; [[ "${conf}" == *.yaml ]] || conf=conf/${entry}.yaml
    name=$(basename "${conf}" .yaml)
    [ -f "${conf}" ] || { log "--train ${entry}: no ${conf}"; exit 1; }
    if [ -n "$(conf_get "${conf}" teacher.source "")" ]; then
      cli=distill; over=(); [ -z "${teacher}" ] || over=("teacher.source=${teacher}")
      # shellcheck disable=SC2206
      over+=(${distill_args})
    else
      # shellcheck disable=SC2206
      cli=pretrain; over=(${pretrain_args})
    fi
    ep=""; for e in ${epochs}; do case "${e}" in "${name}="*) ep=${e#*=} ;; *=*) ;; *) [ -n "${ep}" ] || ep=${e} ;; esac; done
    if [ -n "${effective_batch}" ]; then   # utterances per update: accumulation (and with --epochs, the updates)
      bs=$(conf_get "${conf}" data.batch_size "" --set ${over[@]+"${over[@]}"})
      [ -n "${bs}" ] && [ $((effective_batch % (bs * ngpu))) -eq 0 ] || {
        log "${conf}: --effective-batch ${effective_batch} is not a multiple of data.batch_size (${bs:-unset}) x --ngpu ${ngpu}"; exit 1; }
      over=("trainer.grad_accum=$((effective_batch / (bs * ngpu)))" ${over[@]+"${over[@]}"})
      if [ -n "${ep}" ] && in_stages 4; then   # the papers' budgets are in epochs of the training set
        [ -f "${train_data}/wav.scp" ] || {
          log "--epochs ${ep}: counting the utterances of --train-data needs ${train_data}/wav.scp, which is not there:" \
            "run stage 1 first (--stage 1), or give --max-steps / trainer.max_steps instead of epochs"; exit 1; }
        utts=$(wc -l < "${train_data}/wav.scp")
        over=("trainer.max_steps=$((ep * utts / effective_batch))" ${over[@]+"${over[@]}"})
        log "Stage 4: ${name}: ${ep} epochs of ${utts} utterances = $((ep * utts / effective_batch)) updates of ${effective_batch}"
      fi
    elif [ -n "${ep}" ]; then
      log "--epochs needs --effective-batch (utterances per update)"; exit 1
    fi
    out=$(conf_get "${conf}" trainer.exp_dir "exp/${name}" --set ${over[@]+"${over[@]}"})
    over=(--set "trainer.exp_dir=${out}" ${over[@]+"${over[@]}"})
    # shellcheck disable=SC2086
    in_stages 4 && job "${name}" "${out}" "$(exp_inputs "${conf}" "${over[@]}")" ${launcher:-python} -m "s3prl_plugins.bin.${cli}" --config "${conf}" "${over[@]}"
    __model[${name}]=${out}/model.pt
  done
fi

for name in ${deploy}; do   # the deployed graphs, probed and reported as NAME_int8
  n=$(short_name "${name}")_int8; __model[${n}]=exp/${n}.onnx
  if in_stages 5; then
    src=$(model_path "${name}")
    calibration=(--calibration "${dev_data}"); [ "${deploy_int8}" != matmul ] || calibration=()
    job "export_${n}" "exp/${n}.onnx" "${src}" python -m s3prl_plugins.bin.export "${src}" --out "exp/${n}.onnx" \
      --int8 "${deploy_int8}" ${calibration[@]+"${calibration[@]}"}
  fi
done
if in_stages 5 && [ -n "${compress}" ]; then
  chains=()
  for c in ${compress}; do
    [ -f "conf/compress/${c}.yaml" ] || { log "--compress ${c}: no conf/compress/${c}.yaml"; exit 1; }
    # the uncompressed model's row, shared by the chains of one model (a chain of another model names its own)
    base=${compress_dir}/$(basename "$(python -m s3prl_plugins.bin.inspect conf/compress/common.yaml \
      "conf/compress/${c}.yaml" --key base_dir --default base)")
    # shellcheck disable=SC2206
    over=(--set "exp_dir=${compress_dir}/${c}" "base_dir=${base}" ${compress_args})
    job "compress_${c}" "${compress_dir}/${c} ${base}" "$(exp_inputs conf/compress/common.yaml "conf/compress/${c}.yaml" "${over[@]}")" \
      python -m s3prl_plugins.bin.compress --config conf/compress/common.yaml "conf/compress/${c}.yaml" "${over[@]}"
    chains+=("${compress_dir}/${c}")
  done
  rm -f exp/.done.compress_report   # over whatever chains are there now
  job compress_report "${compress_dir}/report" "${chains[*]}" \
    python -m s3prl_plugins.bin.compression_report --chains "${chains[@]}" --out "${compress_dir}/report"
fi

if in_stages 6; then
  for name in ${probe}; do
    feats=$(model_path "${name}"); n=$(short_name "${name}")
    seg=()   # a student trained on phone segments is probed on them too (the topline)
    if [ -f "conf/${n}.yaml" ] && exp_inputs "conf/${n}.yaml" | grep -q '^exp/segments/phones/'; then
      seg=(--segmentation "exp/segments/phones/$(basename "${train_data}").seg" "exp/segments/phones/$(basename "${probe_test}").seg")
    fi
    # shellcheck disable=SC2086
    job "probe_${n}" "exp/probe/${n}" "${feats} ${seg[*]:-}" python -m s3prl_plugins.bin.probe --features "${feats}" \
      --train "${probe_train}" --test "${probe_test}" --out "exp/probe/${n}" ${probe_args} ${seg[@]+"${seg[@]}"}
  done
  for set in ${utt_probe_sets}; do
    label=text; [ "${set}" != sid ] || label=speaker
    for name in ${utt_probe}; do
      feats=$(model_path "${name}"); n=$(short_name "${name}")
      job "probe_${set}_${n}" "exp/probe_${set}/${n}" "${feats}" python -m s3prl_plugins.bin.probe_utt --features "${feats}" \
        --train "data/${set}_train" --test "data/${set}_test" --label "${label}" --out "exp/probe_${set}/${n}"
    done
  done
fi

superb_task() {  # superb_task TASK CKPT OUT: s3prl's runner trains, then -m evaluate on the best checkpoint
  local task=$1 ckpt=$2 exp=$3 up d split best root_opt=() prep=() over=() conf
  up=$(python -m s3prl_plugins.bin.inspect "${ckpt}" --upstream)
  [ -z "${s3prl_root}" ] || root_opt=(--s3prl-root "${s3prl_root}")
  d=$(python -m s3prl_plugins.bin.inspect --downstream "${task}")
  split=test; [ "${task}" != asr ] || split=test-clean
  [ "${task}" != asr ] || [ -z "${superb_asr_args}" ] || over=(-o "${superb_asr_args}")
  rm -rf "${exp}"; mkdir -p "$(dirname "${exp}")"
  if [ "${task}" = pr ] && [ -n "${librispeech}" ]; then
    # s3prl's own libriphone config (its ARPAbet lexicon; paths relative to the checkout's s3prl/)
    (cd "${s3prl_root}/s3prl" && python -m s3prl_plugins.bin.run_downstream "${root_opt[@]}" -m train -u "${up}" -k "${ckpt}" \
      -d ctc -c downstream/ctc/libriphone.yaml -p "${exp}" -o "config.downstream_expert.corpus.path='${librispeech}'")
  else
    case "${task}" in
      asr|pr) prep=(--train "${train_data}" --dev "${dev_data}" --test "${test_data}") ;;
      sid) prep=(--train data/sid_train --dev data/sid_dev --test data/sid_test) ;;
      ks) prep=(--speech-commands "${speech_commands}") ;;
    esac
    conf=exp/superb/tasks/${task}
    python -m s3prl_plugins.bin.superb_prepare "${task}" "${prep[@]}" --out "${conf}" --steps "${superb_steps}" --num-workers 0 >/dev/null
    python -m s3prl_plugins.bin.run_downstream ${root_opt[@]+"${root_opt[@]}"} -m train -u "${up}" -k "${ckpt}" -d "${d}" \
      -c "${conf}/config.yaml" -p "${exp}" ${over[@]+"${over[@]}"}
  fi
  best=$(ls "${exp}"/dev*-best.ckpt 2>/dev/null | head -1); [ -n "${best}" ] || best=$(ls -v "${exp}"/states-*.ckpt | tail -1)
  python -m s3prl_plugins.bin.run_downstream ${root_opt[@]+"${root_opt[@]}"} -m evaluate -t "${split}" -e "${best}"
  python -m s3prl_plugins.bin.inspect "${exp}/superb_${split}.json" --key superb
}
asr5k_task() {  # asr5k_task CKPT OUT: ESPnet's own ASR commands (CTC over BPE) on the frozen model
  python -m s3prl_plugins.bin.espnet_asr --config "${asr5k_config}" --upstream "$(python -m s3prl_plugins.bin.inspect "$1" --upstream)" \
    --ckpt "$1" --train "${train_data}" --valid "${dev_data}" --test "${test_data}" --nbpe "${asr5k_nbpe}" --work "$2" \
    --train-args "--max_epoch ${asr5k_epochs}"
}
if in_stages 7 && { [ -n "${superb}" ] || [ "${asr5k}" = true ]; }; then
  [ -n "${superb_model}" ] || { log "--superb/--asr5k need --superb-model"; exit 1; }
  sm=$(short_name "${superb_model}")
  ckpt=$(readlink -m "$(model_path "${superb_model}")")   # absolute: s3prl's runner stores it
  for task in ${superb}; do
    case "${task}" in asr|pr|sid|ks) ;; *) log "--superb ${task}: the tasks are ks sid asr pr"; exit 1 ;; esac
    [ "${task}" != pr ] || [ -n "${s3prl_root}" ] || { log "--superb pr needs --s3prl-root (a git checkout of s3prl)"; exit 1; }
    [ "${task}" != ks ] || [ -n "${speech_commands}" ] || { log "--superb ks needs --speech-commands DIR"; exit 1; }
    exp=$(pwd)/exp/superb/${sm}/${task}
    job "superb_${sm}_${task}" "exp/superb/${sm}/${task}" "$(model_path "${superb_model}")" \
      superb_task "${task}" "${ckpt}" "${exp}"
  done
  if [ "${asr5k}" = true ]; then
    job "asr5k_${sm}" "exp/asr5k_${sm}" "$(model_path "${superb_model}")" asr5k_task "$(model_path "${superb_model}")" "exp/asr5k_${sm}"
  fi
fi

if in_stages 8 && { [ -x local/report.sh ] || [ -n "${probe}" ]; }; then   # (a chain's report is stage 5's)
  rm -f exp/.done.report   # a report always reads what is there now
  if [ -x local/report.sh ]; then
    # shellcheck disable=SC2086
    job report exp/report exp local/report.sh ${report_args}
  else
    models=(); probes=(); tb=(); more=()   # every probed model, with its SUPERB results and training curves
    for name in ${probe}; do
      [ "${name}" = fbank ] && continue
      n=$(short_name "${name}"); models+=("${n}=$(model_path "${name}")"); probes+=("${n}=exp/probe/${n}/result.json")
      [ -z "${__model[${n}]:-}" ] || tb+=("${n}=$(dirname "${__model[${n}]}")/tensorboard")
      [ "${n}" != "$(short_name "${superb_model}")" ] || [ -z "${superb}" ] || more+=(--superb "${n}=exp/superb/${n}")
    done
    [ ${#tb[@]} -eq 0 ] || more+=(--tensorboard "${tb[@]}")
    # shellcheck disable=SC2086
    job report exp/report exp python -m s3prl_plugins.bin.report --models ${models[@]+"${models[@]}"} \
      --probes ${probes[@]+"${probes[@]}"} ${more[@]+"${more[@]}"} --out exp/report.json --markdown exp/report.md ${report_args}
  fi
fi

[ ${#__order[@]} -gt 0 ] || exit 0
# the makefile: a job needs the jobs whose folders hold a path it reads ("exp" alone: every other job); a path
# that no job of this run writes must be there already (refused before anything runs). It keeps the rules of
# earlier runs' jobs whose scripts are still in exp/jobs/ (this run's rules replace theirs), so that a run of one
# stage does not leave a makefile of that stage alone; make builds this run's jobs
missing=()
kept=()
if [ -f exp/jobs.mk ]; then
  while IFS= read -r line; do
    case "${line}" in exp/.done.*:*) ;; *) continue ;; esac
    n=${line%%:*}; n=${n#exp/.done.}
    [[ " ${__order[*]} " != *" ${n} "* ]] && [ -f "exp/jobs/${n}.sh" ] && kept+=("${line}")
  done < exp/jobs.mk
fi
{
  echo "# written by ssl.sh: one rule per job (this run's and earlier runs'); run with make -f exp/jobs.mk -j N"
  echo "all: $(for n in "${__order[@]}"; do printf 'exp/.done.%s ' "${n}"; done)$(for l in ${kept[@]+"${kept[@]}"}; do printf '%s ' "${l%%:*}"; done)"
  for l in ${kept[@]+"${kept[@]}"}; do
    echo "${l}"
    n=${l%%:*}
    echo "	@utils/run_job.sh ${n#exp/.done.}"
  done
  for n in "${__order[@]}"; do
    deps=()
    for p in ${__in[${n}]}; do
      found=false
      for o in ${__out[${n}]}; do [ "${p}" != "${o}" ] && [[ "${p}" != "${o}"/* ]] || found=true; done
      [ "${found}" = false ] || continue   # its own output (a shared one, like the chains' base, too)
      for m in "${__order[@]}"; do
        [ "${m}" != "${n}" ] || continue
        for o in ${__out[${m}]}; do
          if [ "${p}" = exp ] || [ "${p}" = "${o}" ] || [[ "${p}" == "${o}"/* ]]; then
            found=true; deps+=("exp/.done.${m}")
          fi
        done
      done
      [ "${found}" = true ] || [[ "${p}" != exp/* ]] || [ -e "${p}" ] || missing+=("job ${n} (exp/jobs/${n}.sh) reads ${p}")
    done
    # order-only (after the |): a job waits for what it reads, but a redone dependency does not redo it
    echo "exp/.done.${n}: | $(printf '%s\n' ${deps[@]+"${deps[@]}"} | sort -u | tr '\n' ' ')"
    echo "	@utils/run_job.sh ${n}"
  done
} > exp/jobs.mk
if [ ${#missing[@]} -gt 0 ]; then
  printf '%s\n' "${missing[@]}" | sed 's/$/, which is not there and which no stage of this run writes/' >&2
  log "run the stages that make them first (--stage/--stop-stage), or give the options that make them (see --help)"
  exit 1
fi
command -v make > /dev/null || { log "the jobs run with GNU make, which is not installed here (apt-get install make)"; exit 1; }
log "Stages 3-8: ${#__order[@]} jobs (exp/jobs/*.sh, exp/jobs.mk), ${jobs} side by side; logs in exp/log/"
# make and its jobs run in a session of their own, so that a signal to this script reaches all of them: Ctrl-C
# (SIGINT, sent to this script's process group) and SIGTERM (kill, a scheduler's cancel) are passed on to the
# whole job tree as SIGTERM -- make removes the stamps of the jobs it stops, each training ends at its last
# checkpoint -- and this script waits for them to end before it exits (130 / 143). (In the foreground, bash
# would run its trap only after make ended; a job started with & ignores SIGINT, hence SIGTERM for both.)
stop_jobs() {
  trap '' INT TERM HUP
  local pid=${make_pid:-${!:-}} n=0   # $!: a signal between make's start and make_pid=$!
  if [ -n "${pid}" ]; then          # else make has not started: nothing runs
    log "stopping the jobs (SIG$1): make and every running job get SIGTERM; waiting for them to end"
    kill -TERM -- "-${pid}" 2> /dev/null || kill -TERM "${pid}" 2> /dev/null || true
    # until the whole group has ended: SIGTERM once more after 5 s (a job make forked as the first one went out
    # never got it; sooner would cut short the clean-up of those that did), SIGKILL after 30 s
    while kill -0 -- "-${pid}" 2> /dev/null || kill -0 "${pid}" 2> /dev/null; do
      n=$((n + 1))
      if [ "${n}" -ge 150 ]; then kill -KILL -- "-${pid}" 2> /dev/null || true
      elif [ "${n}" -eq 25 ]; then kill -TERM -- "-${pid}" 2> /dev/null || true; fi
      sleep 0.2
    done
    wait "${pid}" 2> /dev/null || true
  fi
  # end by the signal itself, as an interrupted program does, so that a caller's loop stops too
  trap - "$1"
  kill -s "$1" $$
  exit "$2"
}
trap 'stop_jobs INT 130' INT
trap 'stop_jobs TERM 143' TERM
trap 'stop_jobs HUP 129' HUP   # the terminal closed: make's own session would not hear it
session=(setsid); command -v setsid > /dev/null || session=()   # util-linux; without it make shares our group
goals=(); for n in "${__order[@]}"; do goals+=("exp/.done.${n}"); done
JOBS=${jobs} ${session[@]+"${session[@]}"} make --no-print-directory -k -j "${jobs}" -f exp/jobs.mk "${goals[@]}" &
make_pid=$!
make_rc=0
wait "${make_pid}" || make_rc=$?
trap - INT TERM HUP
[ "${make_rc}" -eq 0 ] || exit "${make_rc}"
if in_stages 8 && [ -f exp/report.txt ]; then cat exp/report.txt; fi
