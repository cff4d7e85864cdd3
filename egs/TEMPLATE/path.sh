#!/usr/bin/env bash
# Puts the project's Python environment first on PATH (created on first use by tools/setup_env.sh;
# S3PRL_PLUGINS_PYTHON=/path/to/python uses that interpreter instead) and this clone first on PYTHONPATH,
# so the recipe runs this clone's code even when the environment's editable install points at another.
# The repository root is found from this file's real location, so recipes linked from elsewhere work.
__root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
if [ -n "${S3PRL_PLUGINS_PYTHON:-}" ]; then
  __py=${S3PRL_PLUGINS_PYTHON}
else
  __py=$(bash "$__root/tools/setup_env.sh")
fi
export PATH="$(dirname "$__py"):$PATH"
export PYTHONPATH="$__root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset __root __py
