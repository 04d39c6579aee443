#!/usr/bin/env bash
# Install the locked environment into .venv with uv (about 30 s cold; pip takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"
fi
# Byte-compiling at install halves the start-up of every dagster CLI call.
UV_COMPILE_BYTECODE=1 uv sync --frozen --python python3.11 --quiet
# The repo's own packages are installed editable, so uv compiles none of them; where PYTHONDONTWRITEBYTECODE is
# set (this machine, CI) every process then compiled each module it imported from source: 0.4 s of the 3.6 s a
# process takes to import the code location, paid again by every dagster and mlops command. A stale file is
# recompiled in memory, never trusted. tests/test_load_time.py keeps this list to pyproject's packages.
.venv/bin/python -m compileall -q -j 0 mlops_assets mlops_core mlops_cli resources sensors
