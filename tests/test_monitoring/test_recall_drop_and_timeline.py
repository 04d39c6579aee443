"""The recall-drop test of concept_drift, and the simulation's timeline record and plot."""

import math

import numpy as np
import pytest
from PIL import Image

from mlops_core.monitoring.performance import recall_drop
from mlops_core.monitoring.timeline import (
    DayRecord,
    DayScores,
    format_line,
    plot_timeline,
    pooled_auc_pr,
    recall,
    write_timeline,
)


def test_a_recall_collapse_is_significant_and_a_small_dip_is_not():
    collapsed = recall_drop(caught=4, frauds=40, reference_recall=0.8)
    assert collapsed["drop"] and collapsed["recall"] == 0.1 and collapsed["p_value"] < 1e-10
    dip = recall_drop(caught=28, frauds=40, reference_recall=0.8)
    assert not dip["drop"] and dip["p_value"] > 0.05


def test_too_few_frauds_never_alarm():
    assert not recall_drop(caught=0, frauds=4, reference_recall=0.9)["drop"]
    nothing = recall_drop(caught=0, frauds=0, reference_recall=0.9)
    assert not nothing["drop"] and math.isnan(nothing["recall"])


def test_false_alarm_rate_at_the_reference_is_below_one_percent():
    rng = np.random.default_rng(3)
    alarms = sum(recall_drop(int(rng.binomial(50, 0.75)), 50, 0.75)["drop"] for _ in range(2000))
    assert alarms / 2000 < 0.01


@pytest.mark.parametrize("caught, frauds", [(-1, 3), (4, 3)])
def test_impossible_counts_are_refused(caught, frauds):
    with pytest.raises(ValueError, match="caught"):
        recall_drop(caught, frauds, 0.5)


def _day(rng, n=500, signal=3.0):
    y = rng.random(n) < 0.05
    served = 1 / (1 + np.exp(-(signal * y + rng.normal(size=n) - 3)))
    frozen = rng.random(n)
    return DayScores(y, served, served > 0.5, frozen, frozen > 0.5)


def test_pooled_auc_pr_separates_a_good_model_from_noise_and_recall_counts_frauds():
    rng = np.random.default_rng(0)
    days = [_day(rng) for _ in range(7)]
    assert pooled_auc_pr(days, "served") > 0.6 > 0.2 > pooled_auc_pr(days, "frozen")
    # The oracle did not score these days: nothing to pool, not a zero.
    assert math.isnan(pooled_auc_pr(days, "oracle"))
    with pytest.raises(ValueError, match="unknown model"):
        pooled_auc_pr(days, "champion")
    assert recall(np.array([1, 1, 0, 1]), np.array([1, 0, 1, 1])) == pytest.approx(2 / 3)
    assert math.isnan(recall(np.array([0, 0]), np.array([1, 0])))


def test_timeline_files_and_plot(tmp_path):
    records = [
        DayRecord(
            f"2026-01-{i + 1:02d}",
            i,
            i >= 3,
            "2" if i >= 5 else "1",
            2000,
            30,
            0.8,
            0.8 if i < 3 else 0.2,
            0.7,
            0.7 if i < 3 else 0.3,
            "ok",
            0.1,
            0.02,
            0.8,
            triggers=["performance_sensor: recall dropped"] if i == 4 else [],
            retraining="retraining abc succeeded" if i == 4 else "",
            promoted="2" if i == 4 else None,
            seconds=12.0,
            landing_to_champion_seconds=55.0 if i == 4 else None,
        )
        for i in range(8)
    ]
    line = format_line(records[4])
    assert "PROMOTED v2 (55 s from landing)" in line and "trigger: performance_sensor" in line
    as_json, as_csv = write_timeline(records, tmp_path)
    assert as_csv.read_text().count("\n") == 9 and '"promoted": "2"' in as_json.read_text()
    png = plot_timeline(records, tmp_path / "plot.png", "test")
    with Image.open(png) as image:
        assert image.size[0] > 800 and image.size[1] > 500
