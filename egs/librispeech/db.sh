#!/usr/bin/env bash
# Where the corpora live on this machine: the one place to edit (or export LIBRISPEECH before running).
# LIBRISPEECH is the folder that holds train-clean-100/, dev-clean/, ... (i.e. .../LibriSpeech).
export LIBRISPEECH="${LIBRISPEECH:-$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/downloads/LibriSpeech}"
