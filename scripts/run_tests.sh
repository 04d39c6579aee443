#!/usr/bin/env bash
# The suite over both cores (pytest-xdist), then the load tests alone.
#
# Phase 1 runs every test but those marked `load` in PYTEST_WORKERS processes (default 2, one per core here;
# "auto" takes every core). --dist loadgroup hands the tests out one at a time as workers free up, except
# that the tests sharing a module- or session-scoped fixture (a loaded history, a trained champion, the
# production world on Postgres) form one group that runs on one worker (tests/conftest.py,
# pytest_collection_modifyitems): xdist builds such a fixture once per worker that runs any of its tests, and
# the work-stealing order split them across both. Groups go out first, largest first. Each worker has its own
# MLOPS_HOME (tests/conftest.py) and its own ports, so the workers share nothing but the CPU.
# Phase 2 runs the `load` tests (1000 requests/s held for 60 s) on a machine the suite no longer shares: they
# measure what the endpoint does under load, not what two pytest workers beside it leave over.
#
# Extra arguments go to both phases (a path, -k, --randomly-seed=N). pytest exits 5 when it collects no
# test: one phase collecting none is fine (a path without load tests), both collecting none is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
workers="${PYTEST_WORKERS:-2}"
.venv/bin/python -m pytest -n "$workers" --dist loadgroup -m "not load" "$@"
parallel=$?
.venv/bin/python -m pytest -m load "$@"
serial=$?
echo "run_tests: parallel phase exit $parallel, load phase exit $serial"
if [ "$parallel" -eq 5 ] && [ "$serial" -eq 5 ]; then
  echo "run_tests: no test was collected" >&2
  exit 5
fi
for status in "$parallel" "$serial"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
exit 0
