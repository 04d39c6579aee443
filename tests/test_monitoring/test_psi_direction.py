"""PSI bins by the reference's deciles: the reference and the current day are not interchangeable. A
mutation that swapped them in compute_drift survived every test before this one."""

import numpy as np
import pandas as pd
import pytest

from mlops_core.monitoring.drift import PSI_BINS, PSI_FLOOR, compute_drift


def expected_psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Independent reference: deciles of the reference (numpy's quantiles), bins [edge_k-1, edge_k)."""
    edges = np.unique(np.quantile(reference, np.arange(1, PSI_BINS) / PSI_BINS))
    bins = np.r_[-np.inf, edges, np.inf]
    ref = np.histogram(reference, bins)[0] / len(reference)
    cur = np.histogram(current, bins)[0] / len(current)
    # np.histogram's bins are [a, b) except the last: the +inf edge makes that moot.
    ref, cur = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def test_psi_bins_by_the_reference_and_matches_an_independent_computation():
    rng = np.random.default_rng(3)
    reference = rng.uniform(0, 1000, 5000)
    current = rng.uniform(0, 250, 800)  # the whole day sits in the reference's lowest three deciles
    report = compute_drift(pd.DataFrame({"amount": reference}), pd.DataFrame({"amount": current}), ["amount"], [])
    psi = report.as_frame().set_index("feature").loc["amount", "psi"]
    assert psi == pytest.approx(expected_psi(reference, current), rel=1e-9)
    swapped = expected_psi(current, reference)
    assert abs(psi - swapped) > 0.5  # the swap gives another number, far outside any tolerance
