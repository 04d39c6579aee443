#!/usr/bin/env bash
# The suite over both cores (pytest-xdist), then the load tests, with a few in-process tests on one pinned core
# beside them.
#
# Phase 1 runs every test but those marked `load` or `beside_load` in PYTEST_WORKERS processes (default 2, one
# per core here; "auto" takes every core). A module or session fixture is built once per worker that runs one of
# its tests, so the plugin tests/shared_fixture_scheduling.py hands a worker whole test files, and files
# sharing a session fixture (the production world on Postgres) together, costliest first by
# tests/test_costs.json, so the last unit to end is a short one. It replaced --dist worksteal, which split a
# module's tests over both workers and built their fixtures twice; --dist loadgroup would group them, but
# with pytest 9.2 xdist 3.8 silently ignores its groups (pytest-dev/pytest-xdist#1386).
# Each worker has its own MLOPS_HOME (tests/conftest.py) and its own ports, so the workers share nothing but
# the CPU.
# Phase 2 runs the `load` tests (1000 requests/s held for 60 s) on a machine the suite no longer shares: they
# measure what the endpoint does under load, not what two pytest workers beside it leave over. The endpoint and
# the load generator use about half a core at 1000 requests/s, so the other core would sit idle for the whole
# minute: the `beside_load` tests (in-process, CPU-bound, about a minute on one core) run then, pinned with
# taskset to the last core, which their threads and any child inherit, so the load test always has a core of
# its own. Their output follows the load phase's. With one core, or without taskset, they run after it.
#
# Extra arguments go to every phase (a path, -k, --randomly-seed=N). pytest exits 5 when it collects no
# test: a phase collecting none is fine (a path without load tests), all collecting none is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
workers="${PYTEST_WORKERS:-2}"
.venv/bin/python -m pytest -n "$workers" -p tests.shared_fixture_scheduling -m "not load and not beside_load" "$@"
parallel=$?
# The last of the cores this script may use, and how many it may use (not `nproc`: it obeys OMP_NUM_THREADS,
# which libraries the suite imports may set).
read -r last_core cores < <(.venv/bin/python -c 'import os; a = os.sched_getaffinity(0); print(max(a), len(a))')
if [ "$cores" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  beside_log=$(mktemp)
  taskset -c "$last_core" .venv/bin/python -m pytest -m beside_load "$@" >"$beside_log" 2>&1 &
  beside_pid=$!
  .venv/bin/python -m pytest -m load "$@"
  serial=$?
  wait "$beside_pid"
  beside=$?
  echo "run_tests: the beside_load tests, pinned to core $last_core while the load tests ran:"
  cat "$beside_log"
  rm -f "$beside_log"
else
  .venv/bin/python -m pytest -m load "$@"
  serial=$?
  .venv/bin/python -m pytest -m beside_load "$@"
  beside=$?
fi
echo "run_tests: parallel phase exit $parallel, load phase exit $serial, beside-load exit $beside"
if [ "$parallel" -eq 5 ] && [ "$serial" -eq 5 ] && [ "$beside" -eq 5 ]; then
  echo "run_tests: no test was collected" >&2
  exit 5
fi
for status in "$parallel" "$serial" "$beside"; do
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
  fi
done
exit 0
