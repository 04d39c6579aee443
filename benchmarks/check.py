"""What the benchmarks say now: the goals not met, and whether RESULTS.md still agrees with results.json.

    python -m benchmarks.check            # the goals not met (and the rows without a goal); exit 1 when
                                          # results.json is malformed or RESULTS.md's table is stale
    python -m benchmarks.check --render   # rewrite RESULTS.md's table of every row from results.json

RESULTS.md holds the prose (how each benchmark runs, the causes of a missed goal); its table of every row
between the two markers below is rendered from results.json, so the two cannot drift apart unnoticed
(tests/test_benchmarks_results.py checks it on every CI run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__:  # python -m benchmarks.check
    from benchmarks.results import RESULTS, _ordered
else:  # python benchmarks/check.py, or loaded by file from results.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import RESULTS, _ordered

RESULTS_MD = RESULTS.with_name("RESULTS.md")
BEGIN = "<!-- rows: rendered from results.json by `python -m benchmarks.check --render`; do not edit by hand -->"
END = "<!-- end of rows -->"


def load(path: Path = RESULTS) -> list[dict]:
    """The rows of results.json, each checked for every field (ValueError naming the row otherwise)."""
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of rows, found {type(rows).__name__}")
    names = [r.get("name") for r in rows]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate row names {duplicates}")
    return [_ordered(dict(r)) for r in rows]


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _verdict(row: dict) -> str:
    if row["met"] is None:
        return "no goal stated"
    return "**met**" if row["met"] else "not met"


def render(rows: list[dict]) -> str:
    """The table of every row, between the markers (the markers included)."""
    lines = [
        BEGIN,
        "",
        "| row | ours | peer (same run) | ratio | goal | met | date | commit |",
        "|---|---:|---|---:|---|---|---|---|",
    ]
    for r in rows:
        peer = "-" if r["peer"] is None else f"{_figure(r['peer'])}: {r['peer_name']}"
        ratio = "-" if r["ratio"] is None else f"{_figure(r['ratio'])} ({r['ratio_meaning'].split(':')[0]})"
        cells = [
            f"`{r['name']}`",
            f"{_figure(r['ours'])} {r['unit']}",
            peer,
            ratio,
            r["goal"] or "-",
            _verdict(r),
            r["date"],
            r["commit"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", END]
    return "\n".join(lines)


def table_in(markdown: str) -> str | None:
    """RESULTS.md's rendered table (markers included), or None when the markers are missing."""
    start, end = markdown.find(BEGIN), markdown.find(END)
    if start < 0 or end < start:
        return None
    return markdown[start : end + len(END)]


def rerender(markdown: str, rows: list[dict]) -> str:
    current = table_in(markdown)
    if current is None:
        raise ValueError(f"{RESULTS_MD.name} has no table markers: add a line {BEGIN!r} and a line {END!r}")
    return markdown.replace(current, render(rows))


def unmet(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["met"] is False]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="rewrite RESULTS.md's table from results.json")
    args = parser.parse_args(argv)
    try:
        rows = load()
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"benchmarks/results.json is not valid: {exc}", file=sys.stderr)
        return 1
    markdown = RESULTS_MD.read_text()
    if args.render:
        RESULTS_MD.write_text(rerender(markdown, rows))
        print(f"{RESULTS_MD} table rendered from {len(rows)} rows")
        return 0
    missed = unmet(rows)
    print(
        f"{len(rows)} rows: {sum(r['met'] is True for r in rows)} goals met, {len(missed)} not met, "
        f"{sum(r['met'] is None for r in rows)} without a goal"
    )
    for r in missed:
        peer = (
            "" if r["peer"] is None else f"; peer {_figure(r['peer'])} ({r['peer_name']}), ratio {_figure(r['ratio'])}"
        )
        print(
            f"NOT MET  {r['name']}: ours {_figure(r['ours'])} {r['unit']}{peer}; goal: {r['goal']} "
            f"[{r['date']}, {r['commit']}]"
        )
    for r in rows:
        if r["met"] is None:
            print(f"NO GOAL  {r['name']}: ours {_figure(r['ours'])} {r['unit']} [{r['date']}]")
    if table_in(markdown) != render(rows):
        print(
            f"{RESULTS_MD.name}'s table is stale against results.json: run python -m benchmarks.check --render",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
