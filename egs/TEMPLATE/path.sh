#!/usr/bin/env bash
# Puts the project's Python environment first on PATH (created on first use by tools/setup_env.sh).
# The repository root is found from this file's real location, so recipes linked from elsewhere work.
__root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
__py=$(bash "$__root/tools/setup_env.sh")
export PATH="$(dirname "$__py"):$PATH"
export PYTHONUNBUFFERED=1
unset __root __py
