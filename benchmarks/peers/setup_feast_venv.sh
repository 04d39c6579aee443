#!/usr/bin/env bash
# Create (idempotently) the isolated Feast venv used by benchmarks/peers/feast_peer.py
# and print the path of its python interpreter on stdout (last line).
#
#   FEAST_VENV   venv directory (default: <repo>/.bench-venvs/feast)
#   PYTHON       interpreter to base the venv on (default: python3.11)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${FEAST_VENV:-$REPO/.bench-venvs/feast}"
PY="${PYTHON:-python3.11}"
REQ="$HERE/requirements-feast.txt"

# No telemetry from anything we install or run.
export FEAST_USAGE=False
export DO_NOT_TRACK=1
export UV_COMPILE_BYTECODE=1   # this machine sets PYTHONDONTWRITEBYTECODE=1

STAMP="$VENV/.requirements-feast.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "feast venv up to date: $VENV" >&2
else
    if command -v uv >/dev/null 2>&1; then
        [[ -x "$VENV/bin/python" ]] || uv venv --quiet --python "$PY" "$VENV" >&2
        uv pip install --quiet --python "$VENV/bin/python" -r "$REQ" >&2
    else
        [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet --compile -r "$REQ" >&2
    fi
    echo "$WANT" > "$STAMP"
    echo "feast venv ready: $VENV ($("$VENV/bin/python" -c 'import feast; print("feast", feast.__version__)'))" >&2
fi

echo "$VENV/bin/python"
