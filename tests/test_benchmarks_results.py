"""benchmarks/results.py: record() upserts rows by name and keeps every other row (no timing here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_results", Path(__file__).resolve().parents[1] / "benchmarks" / "results.py"
)
results = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(results)

SHARED = {"date": "2026-12-02", "commit": "abc1234", "machine": "x86_64, 2 cores, test CPU"}


def _row(name: str, ours: float, **extra) -> dict:
    return results.row(
        name,
        ours=ours,
        peer=2.0,
        peer_name="floor",
        ratio="ours/peer",
        unit="s",
        goal="under 3 s",
        met=ours < 3,
        shared=SHARED,
        **extra,
    )


def test_record_replaces_a_row_of_the_same_name_and_keeps_the_others(tmp_path):
    path = tmp_path / "results.json"
    results.record([_row("b_second", 1.0), _row("a_first", 4.0)], path)
    results.record([_row("c_third", 1.5)], path)
    results.record([_row("a_first", 2.5, details={"repeats": 3})], path)

    rows = json.loads(path.read_text())
    assert [r["name"] for r in rows] == ["a_first", "b_second", "c_third"]  # one each, sorted by name
    first = rows[0]
    assert (first["ours"], first["ratio"], first["met"], first["details"]) == (2.5, 1.25, True, {"repeats": 3})
    assert rows[1]["ours"] == 1.0 and rows[2]["ours"] == 1.5
    assert list(first)[: len(results.FIELDS)] == list(results.FIELDS)
    assert path.read_text().endswith("]\n") and path.read_text().startswith('[\n  {\n    "name"')


def test_record_refuses_rows_it_cannot_keep_apart_or_that_lack_fields(tmp_path):
    path = tmp_path / "results.json"
    with pytest.raises(ValueError, match="duplicate"):
        results.record([_row("same", 1.0), _row("same", 2.0)], path)
    incomplete = _row("incomplete", 1.0)
    del incomplete["goal"]
    with pytest.raises(ValueError, match="lacks"):
        results.record([incomplete], path)
    assert not path.exists()


def test_row_computes_the_ratio_it_names_and_nan_becomes_null(tmp_path):
    faster = results.row(
        "x", ours=0.5, peer=2.0, peer_name="p", ratio="peer/ours", unit="s", goal=None, met=None, shared=SHARED
    )
    assert faster["ratio"] == 4.0 and faster["ratio_meaning"] == "peer/ours"
    empty = results.row(
        "y", ours=float("nan"), peer=1.0, peer_name="p", ratio="ours/peer", unit="s", goal="g", met=False, shared=SHARED
    )
    (written,) = results.record([empty], tmp_path / "r.json")
    assert written["ours"] is None and written["ratio"] is None


def _check_module():
    import sys

    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    import benchmarks.check as check

    return check


def test_results_md_table_is_the_rendering_of_results_json():
    check = _check_module()
    rows = check.load()
    table = check.table_in(check.RESULTS_MD.read_text())
    assert table is not None, "RESULTS.md lost its table markers"
    assert table == check.render(rows), "RESULTS.md's table is stale: run python -m benchmarks.check --render"
    # Every row is a line of the table, and every goal stated has a verdict.
    for r in rows:
        (line,) = [x for x in table.splitlines() if x.startswith(f"| `{r['name']}` |")]
        assert ("not met" in line) == (r["met"] is False) and ("**met**" in line) == (r["met"] is True)


def test_check_exits_1_on_a_stale_table_and_names_what_is_not_met(tmp_path, monkeypatch, capsys):
    check = _check_module()
    rows = [
        _row("a_met", 1.0),
        _row("b_missed", 3.01),  # a hair over the 3 s goal
        results.row(
            "c_no_goal",
            ours=1.0,
            peer=None,
            peer_name=None,
            ratio="ours/peer",
            unit="s",
            goal=None,
            met=None,
            shared=SHARED,
        ),
    ]
    data, md = tmp_path / "results.json", tmp_path / "RESULTS.md"
    data.write_text(json.dumps([results._ordered(r) for r in rows]))
    md.write_text(f"# Results\n\n{check.BEGIN}\n{check.END}\n\nprose stays\n")
    monkeypatch.setattr(check, "RESULTS_MD", md)
    monkeypatch.setattr(check, "load", lambda path=data, _load=check.load: _load(path))
    assert check.main([]) == 1  # the empty table is stale
    out = capsys.readouterr()
    assert "NOT MET  b_missed: ours 3.01 s" in out.out and "a_met" not in out.out.replace("NO GOAL", "")
    assert "NO GOAL  c_no_goal" in out.out and "stale" in out.err
    assert check.main(["--render"]) == 0
    assert check.main([]) == 0 and md.read_text().endswith("prose stays\n")
    assert "| `b_missed` | 3.01 s | 2: floor | 1.505 (ours/peer) | under 3 s | not met |" in md.read_text()


def test_check_refuses_a_row_without_its_fields_naming_it(tmp_path):
    check = _check_module()
    broken = results._ordered(_row("has_all", 1.0))
    del broken["machine"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps([broken]))
    with pytest.raises(ValueError, match="'has_all' lacks \\['machine'\\]"):
        check.load(path)
    path.write_text(json.dumps([_row("twice", 1.0), _row("twice", 2.0)]))
    with pytest.raises(ValueError, match="duplicate row names \\['twice'\\]"):
        check.load(path)
