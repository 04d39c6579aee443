"""The benchmarks land their histories on the platform's calendar, never the machine's date.

benchmarks/data_layer.py once took `date.today()`: on a machine date past the fixed calendar's today, its
history ended after the daily partitions did and the ours leg failed before measuring anything."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from mlops_core.settings import DEFAULT_TODAY, Settings

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def data_layer(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import data_layer

    yield data_layer
    sys.modules.pop("data_layer", None)


def test_the_data_layer_history_ends_inside_the_platforms_partitions(data_layer, monkeypatch):
    monkeypatch.delenv("MLOPS_TODAY", raising=False)
    monkeypatch.delenv("MLOPS_PARTITIONS_START", raising=False)
    first, last = data_layer.landing_days(365)
    settings = Settings.from_env()
    assert (last - first).days == 364
    # The fixed calendar's today, whatever the machine says (this test's own date differs from it).
    assert last == DEFAULT_TODAY - dt.timedelta(days=2)
    assert settings.partitions_start <= first and last < settings.today


def test_a_pinned_calendar_moves_the_history_with_it(data_layer, monkeypatch):
    monkeypatch.setenv("MLOPS_TODAY", "2027-03-10")
    assert data_layer.landing_days(3) == (dt.date(2027, 3, 6), dt.date(2027, 3, 8))
