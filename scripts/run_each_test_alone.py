"""Run every selected test alone, one `pytest <nodeid>` process each, and list the ones that fail.

A test that passes in the suite but fails alone relies on something an earlier test left behind
(a fixture's state, an environment variable, a cache). CI does not run this (one interpreter and
one collection per test: hours for the whole suite); run it on the files you touched:

    .venv/bin/python scripts/run_each_test_alone.py tests/test_core tests/test_cli.py -m "not slow"
    .venv/bin/python scripts/run_each_test_alone.py tests/test_features --sample 20 --seed 3

Arguments other than the options below are passed to pytest's collection (paths, -m, -k).
Exits 1 when any test failed alone, and prints the command that replays each failure.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collect(selection: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *selection]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    ids = [line for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if out.returncode not in (0, 5) or not ids:
        sys.exit(f"collection failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, help="run only N tests picked at random (with --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per test before it counts as failed")
    args, selection = parser.parse_known_args()
    nodeids = collect(selection)
    if args.sample is not None and args.sample < len(nodeids):
        nodeids = sorted(random.Random(args.seed).sample(nodeids, args.sample))
    print(f"{len(nodeids)} tests, each alone", flush=True)
    failed: list[tuple[str, str]] = []
    for i, nodeid in enumerate(nodeids, 1):
        # No -m here: the node id selects the test, whatever its markers.
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", nodeid]
        started = time.monotonic()
        try:
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout)
            code, output = run.returncode, run.stdout + run.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = -1, f"timed out after {args.timeout:.0f} s\n{exc.stdout or ''}"
        took = time.monotonic() - started
        verdict = "ok" if code == 0 else "FAILED"
        print(f"[{i}/{len(nodeids)}] {verdict} {nodeid} ({took:.1f} s)", flush=True)
        if code != 0:
            failed.append((nodeid, output))
    for nodeid, output in failed:
        print(f"\n===== {nodeid} failed alone =====\n{output[-4000:]}")
    print(f"\n{len(nodeids) - len(failed)} passed alone, {len(failed)} failed alone")
    for nodeid, _ in failed:
        print(f"  replay: .venv/bin/python -m pytest '{nodeid}'")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
