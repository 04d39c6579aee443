#!/usr/bin/env bash
# The suite over both cores (pytest-xdist), then the load tests alone.
#
# Phase 1 runs every test but those marked `load` in PYTEST_WORKERS processes (default 2, one per core here;
# "auto" takes every core). A module or session fixture is built once per worker that runs one of its tests,
# so the plugin tests/shared_fixture_scheduling.py hands a worker whole test files, and files
# sharing a session fixture (the production world on Postgres) together, costliest first by
# tests/test_costs.json, so the last unit to end is a short one. It replaced --dist worksteal, which split a
# module's tests over both workers and built their fixtures twice; --dist loadgroup would group them, but
# with pytest 9.2 xdist 3.8 silently ignores its groups (pytest-dev/pytest-xdist#1386).
# Each worker has its own MLOPS_HOME (tests/conftest.py) and its own ports, so the workers share nothing but
# the CPU.
# Phase 2 runs the `load` tests (1000 requests/s held for 60 s) on a machine the suite no longer shares: they
# measure what the endpoint does under load, not what two pytest workers beside it leave over.
#
# Extra arguments go to both phases (a path, -k, --randomly-seed=N). pytest exits 5 when it collects no
# test: one phase collecting none is fine (a path without load tests), both collecting none is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
workers="${PYTEST_WORKERS:-2}"
.venv/bin/python -m pytest -n "$workers" -p tests.shared_fixture_scheduling -m "not load" "$@"
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
