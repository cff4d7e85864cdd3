#!/usr/bin/env bash
# egs/TEMPLATE/setup.sh NEW_DIR: a new recipe folder holding what every recipe has -- links to the template's
# cmd.sh, path.sh, ssl.sh (ssl1/ssl.sh) and utils/, empty conf/ and local/, and a run.sh that passes every
# option on to ./ssl.sh (ESPnet's egs2/TEMPLATE/asr1/setup.sh, for this template). A folder that exists is
# refused: nothing is overwritten. Then: local/data.sh (the corpus -> data/*), conf/*.yaml, and the options
# this recipe fixes in run.sh (egs/mini/run.sh and egs/librispeech/star/run.sh are worked examples).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 NEW_DIR" >&2; exit 2; }
dir=$1
if [ -e "${dir}" ] || [ -L "${dir}" ]; then
  echo "$0: ${dir} exists: give a new folder (nothing was changed)" >&2
  exit 2
fi
template=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
mkdir -p "${dir}/conf" "${dir}/local"
to=$(realpath --relative-to="$(cd "${dir}" && pwd -P)" "${template}")   # relative links: the clone can move
ln -s "${to}/cmd.sh" "${dir}/cmd.sh"
ln -s "${to}/path.sh" "${dir}/path.sh"
ln -s "${to}/ssl1/ssl.sh" "${dir}/ssl.sh"
ln -s "${to}/utils" "${dir}/utils"
cat > "${dir}/run.sh" <<'RUN'
#!/usr/bin/env bash
# A new recipe (egs/TEMPLATE/setup.sh wrote this). Say here what it trains and its stages; the stages are the
# template's (./ssl.sh --help): give below the options this recipe fixes, each with a comment (./run.sh --help
# prints them), and pass them to ./ssl.sh; any other --option VALUE goes on to ./ssl.sh as given.
# Usage: ./run.sh [--stage N] [--stop-stage M] [any ./ssl.sh option]
set -euo pipefail

stage=1                     # first stage to run
stop_stage=100              # last stage to run

passthrough=()              # any other --option VALUE goes on to ./ssl.sh
passthrough_to=./ssl.sh
. utils/parse_options.sh
. ./path.sh                 # after the options: --help installs nothing

./ssl.sh --stage "${stage}" --stop-stage "${stop_stage}" ${passthrough[@]+"${passthrough[@]}"}
RUN
chmod +x "${dir}/run.sh"
echo "$0: wrote ${dir} (run.sh, conf/, local/; cmd.sh, path.sh, ssl.sh, utils -> ${to})"
