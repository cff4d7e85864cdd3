#!/usr/bin/env bash
# The report of the sequence-subsampling recipe (ssl.sh stage 8), run from its directory:
#   Fig. 2 (unit frame rates on dev-clean) -> exp/unit_rates.{json,png}; params, MACs, MACs-C, frame rate and
#   PER of each student -> exp/report.{json,md}, the PER vs frame rate / MACs-C plot -> exp/subsampling.png
# Usage: local/report.sh NAME...   (students exp/NAME/model.pt, probed in exp/probe/NAME/result.json)
set -euo pipefail
python -m s3prl_plugins.bin.unit_rates --data data/dev_clean --train data/train --out exp/unit_rates.json \
  --plot exp/unit_rates.png > /dev/null || echo "unit rates not made (see above); the report goes on" >&2
models=(); probes=()
for n in "$@"; do models+=("${n}=exp/${n}/model.pt"); probes+=("${n}=exp/probe/${n}/result.json"); done
python -m s3prl_plugins.bin.report --models "${models[@]}" --probes "${probes[@]}" --out exp/report.json \
  --markdown exp/report.md --plot exp/subsampling.png
