"""benchmarks/results.json: one row per measured goal, each with the peer measured in the same run.

Every benchmark script ends its run with

    from results import record, row          # benchmarks/ is the script's directory
    record([row("serving_p99_at_500rps", ours=..., peer=..., ...), ...])

`record` upserts the rows by name (a row of the same name is replaced, every other row is kept),
sorts the file by name and writes it with indent 2 and a trailing newline, so that re-running one
benchmark changes only its own rows.

Row schema, in this key order:
  name          unique key, e.g. "startup_definitions_validate"
  ours, peer    the two medians (peer is null only when the benchmark has no peer)
  peer_name     what the peer is
  ratio         ours/peer or peer/ours, as `ratio_meaning` says (null without a peer)
  ratio_meaning "ours/peer" or "peer/ours", then what the ratio means
  unit          unit of ours and peer ("s", "ms", "req/s", ...)
  goal          the goal in words, as benchmarks/RESULTS.md states it (null when none is stated)
  met           whether ours meets the goal (null only when no goal is stated)
  date          ISO date of the run
  commit        `git rev-parse --short HEAD`, plus "-dirty" when the tree had uncommitted changes
  machine       architecture, cores and CPU model
  details       optional: repeats, the runs behind each median, anything else worth keeping
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
FIELDS = (
    "name",
    "ours",
    "peer",
    "peer_name",
    "ratio",
    "ratio_meaning",
    "unit",
    "goal",
    "met",
    "date",
    "commit",
    "machine",
)
RATIOS = ("ours/peer", "peer/ours")


def commit(repo: Path = ROOT) -> str:
    """The short commit of `repo`'s HEAD, with "-dirty" if tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"{head}-dirty" if dirty else head


def machine() -> str:
    """Architecture, cores and CPU model, e.g. "x86_64, 2 cores, Intel(R) Xeon(R) ..."."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, {model}"


def common(repo: Path = ROOT) -> dict[str, str]:
    """The fields every row of one run shares: date, commit and machine."""
    return {"date": dt.date.today().isoformat(), "commit": commit(repo), "machine": machine()}


def row(
    name: str,
    *,
    ours: float,
    peer: float | None,
    peer_name: str | None,
    ratio: str,
    unit: str,
    goal: str | None,
    met: bool | None,
    meaning: str = "",
    details: dict | None = None,
    shared: dict[str, str] | None = None,
) -> dict:
    """One row. `ratio` is "ours/peer" or "peer/ours" (computed here); `meaning` says what it means.

    `shared` is `common()` of the run (computed here when not given).
    """
    if ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}, not {ratio!r}")
    value = None
    if peer is not None and ours is not None:
        value = ours / peer if ratio == "ours/peer" else peer / ours
    out = {
        "name": name,
        "ours": ours,
        "peer": peer,
        "peer_name": peer_name,
        "ratio": value,
        "ratio_meaning": f"{ratio}: {meaning}" if meaning else ratio,
        "unit": unit,
        "goal": goal,
        "met": None if met is None else bool(met),
        **(shared or common()),
    }
    if details:
        out["details"] = details
    return out


def _ordered(r: dict) -> dict:
    missing = [k for k in FIELDS if k not in r]
    if missing:
        raise ValueError(f"row {r.get('name')!r} lacks {missing}")
    if r["met"] is None and r["goal"] is not None:
        raise ValueError(f"row {r['name']!r} states a goal, so `met` must be true or false")
    # A median of nothing (NaN) is no figure: JSON null, never the invalid NaN.
    r = r | {k: None for k in ("ours", "peer", "ratio") if isinstance(r[k], float) and math.isnan(r[k])}
    return {k: r[k] for k in FIELDS} | {k: r[k] for k in sorted(r) if k not in FIELDS}


def record(rows: Iterable[dict], path: Path = RESULTS) -> list[dict]:
    """Upsert `rows` by name into `path`; every other row is kept. Returns the rows now in the file."""
    new = [_ordered(r) for r in rows]
    names = [r["name"] for r in new]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate names in one record() call: {names}")
    existing = json.loads(path.read_text()) if path.exists() else []
    merged = {r["name"]: r for r in existing}
    merged.update({r["name"]: r for r in new})
    result = [merged[name] for name in sorted(merged)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    if path == RESULTS:
        _render_results_md(result)
    return result


def _render_results_md(rows: list[dict]) -> None:
    """RESULTS.md's table of every row follows results.json (benchmarks/check.py renders it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_check", HERE / "check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    check.RESULTS_MD.write_text(check.rerender(check.RESULTS_MD.read_text(), rows))


def show(rows: Iterable[dict]) -> None:
    """One line per row, for the end of a run."""
    for r in rows:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        print(
            f"{r['name']:40s} ours {fmt(r['ours'])} {r['unit']}  peer {fmt(r['peer'])} ({r['peer_name']})  "
            f"ratio {fmt(r['ratio'])} [{r['ratio_meaning'].split(':')[0]}]  goal: {r['goal']}  met: {r['met']}",
            flush=True,
        )
