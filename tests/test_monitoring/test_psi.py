"""One PSI formula, two binnings: the numbers against hand computations."""

import math

import numpy as np
import pandas as pd
import pytest

from mlops_core.monitoring.drift import compute_drift
from mlops_core.monitoring.psi import PSI_FLOOR, psi_of_shares, psi_on_edges
from mlops_core.serving.analysis import SCORE_EDGES


def test_the_formula_on_two_bins():
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5) = 0.25 ln 3
    assert psi_of_shares(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(0.25 * math.log(3), abs=1e-12)
    assert psi_of_shares(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0


def test_an_empty_bin_is_floored():
    # The expected's empty bin counts as PSI_FLOOR: (0.5 - 1) ln 0.5 + (0.5 - 1e-4) ln(0.5 / 1e-4)
    hand = -0.5 * math.log(0.5) + (0.5 - PSI_FLOOR) * math.log(0.5 / PSI_FLOOR)
    assert psi_of_shares(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(hand, abs=1e-12)


def test_psi_on_edges_bins_both_samples_on_the_given_edges():
    # Edges (0, 0.5, 1): expected 2 of 4 below 0.5, actual 1 of 4, so shares (0.5, 0.5) and (0.25, 0.75).
    expected, actual = np.array([0.1, 0.1, 0.6, 0.6]), np.array([0.1, 0.6, 0.6, 0.6])
    assert psi_on_edges(expected, actual, edges=(0.0, 0.5, 1.0)) == pytest.approx(0.25 * math.log(3), abs=1e-12)
    # The outer edges are open: a score of exactly 1.0 or beyond lands in the last bin.
    assert psi_on_edges(np.array([0.2, 1.0]), np.array([0.2, 7.0]), edges=(0.0, 0.5, 1.0)) == 0.0
    assert math.isnan(psi_on_edges(np.array([]), actual, edges=SCORE_EDGES))


def test_psi_on_pooled_quantiles_without_edges():
    # One value on both sides: nothing to bin.
    assert psi_on_edges(np.array([3.0, 3.0]), np.array([3.0])) == 0.0
    # Pooled (0, 0, 1, 2, 2, 2): its median 1.5 splits two bins; shares (1, 0) against (0, 1), both floored:
    # (1e-4 - 1) ln(1e-4) + (1 - 1e-4) ln(1 / 1e-4) = 2 (1 - 1e-4) ln(1e4).
    hand = 2 * (1 - PSI_FLOOR) * math.log(1 / PSI_FLOOR)
    assert psi_on_edges(np.array([0.0, 0.0, 1.0]), np.array([2.0, 2.0, 2.0]), bins=2) == pytest.approx(hand, abs=1e-12)


def test_feature_drift_psi_bins_a_categorical_feature_per_value():
    # Shares a: 0.5 -> 0.25, b: 0.5 -> 0.75.
    report = compute_drift(pd.DataFrame({"c": list("aabb")}), pd.DataFrame({"c": list("abbb")}), [], ["c"])
    assert report.features[0].psi == pytest.approx(0.25 * math.log(3), abs=1e-12)
