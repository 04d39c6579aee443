"""The population stability index, one formula with two ways of binning. No dagster here.

PSI = sum over bins of (actual share - expected share) * ln(actual share / expected share), every share
floored at PSI_FLOOR so an empty bin stays finite (the usual convention). The binning is what differs:

- `psi_on_edges` (scores: prediction drift, canary analysis): bins on given edges, such as fixed
  probability bins, or else on quantiles of both samples pooled;
- feature drift bins on the reference's deciles (mlops_core.monitoring.drift, as Evidently does), or per
  value for a categorical feature, and calls `psi_of_shares` on its own counts.
"""

import numpy as np

PSI_FLOOR = 1e-4


def psi_of_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of the bin shares `actual` against the bin shares `expected` (each summing to 1, same bins),
    every share floored at PSI_FLOOR first."""
    expected, actual = np.maximum(expected, PSI_FLOOR), np.maximum(actual, PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_on_edges(
    expected: np.ndarray, actual: np.ndarray, bins: int = 10, edges: tuple[float, ...] | None = None
) -> float:
    """PSI of the sample `actual` against the sample `expected`, binned on `edges` (the outer two taken as
    -inf and +inf) or else on `bins` quantiles of both samples pooled: the expected's alone collapse to one
    bin when its values pile up on one value, hiding any shift. NaN when a sample is empty; 0.0 when both
    are one and the same value."""
    expected = np.asarray(expected, dtype=float)
    actual = np.asarray(actual, dtype=float)
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    if edges is None:
        edges = np.unique(np.quantile(np.concatenate([expected, actual]), np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            return 0.0
    edges = np.array(edges, dtype=float)
    edges[0], edges[-1] = -np.inf, np.inf
    return psi_of_shares(np.histogram(expected, edges)[0] / len(expected), np.histogram(actual, edges)[0] / len(actual))
