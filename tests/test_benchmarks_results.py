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
