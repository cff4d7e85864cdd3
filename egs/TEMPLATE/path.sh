#!/usr/bin/env bash
# Puts the project's Python environment first on PATH (created on first use by tools/setup_env.sh).
__root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
__py=$(bash "$__root/tools/setup_env.sh")
export PATH="$(dirname "$__py"):$PATH"
export PYTHONUNBUFFERED=1
unset __root __py
