#!/usr/bin/env bash
# The mini recipe's report (ssl.sh stage 8), run from egs/mini: Fig. 2's unit rates (5k/16k pieces do not fit
# this text) -> exp/unit_rates.{json,png}; the comparison table, plots and summary -> exp/report.{json,md,txt}.
# Usage: local/report.sh [SUBSAMPLED_VARIANT...]   (the distilhubert_tiny_<variant> students to include)
set -euo pipefail
python -m s3prl_plugins.bin.unit_rates --data data/dev --train data/train --vocab 100 200 500 1000 \
  --out exp/unit_rates.json --plot exp/unit_rates.png > /dev/null
python -m s3prl_plugins.bin.mini_report --subsampling "$@" > exp/report.txt.tmp
mv exp/report.txt.tmp exp/report.txt
