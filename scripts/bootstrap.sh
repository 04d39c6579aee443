#!/usr/bin/env bash
# Install the locked environment into .venv with uv (about 30 s cold; pip takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "uv>=0.13,<0.14"
fi
# Byte-compiling at install halves the start-up of every dagster CLI call.
UV_COMPILE_BYTECODE=1 uv sync --frozen --python python3.11 --quiet
