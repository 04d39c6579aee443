"""Feature drift between a reference frame and a current frame.

`compute_drift` gives every feature a drift verdict with the same test, statistic, threshold
and decision rule as Evidently 0.7's `DataDriftPreset` defaults, so the two agree; it is
vectorized and about two orders of magnitude faster on a million rows (benchmarks/drift.py).
`evidently_html` renders Evidently's own report for people.

The test depends on the sample size, as in Evidently (its `_get_default_stattest`). On large
samples a p-value test flags nearly every feature, because any real-world difference, however
small, becomes significant (evidently issue 50). So above 1000 reference rows the verdict comes
from an effect size with a fixed threshold:

| reference rows | numeric, > 5 distinct values | numeric <= 5 distinct, or categorical |
|---|---|---|
| <= 1000 | two-sample K-S, drift if p <= 0.05 | chi-square (> 2 values) or two-proportion z-test (<= 2), drift if p < 0.05 |
| > 1000 | Wasserstein distance / std of reference, drift if >= 0.1 | Jensen-Shannon distance (natural log), drift if >= 0.1 |

Details mirrored from Evidently 0.7.23: the rule counts the reference rows left after dropping
nulls and +-inf (a current sample of any size does not change the test); "distinct values" are
those of both samples together; the std is the population one (ddof=0), floored at 0.001; the
Jensen-Shannon distance is scipy's with the natural logarithm, so it lies in [0, sqrt(ln 2)];
the chi-square expects the reference shares times the current size; the z-test compares the
shares of the smallest value. The dataset drifts when at least half the features drift.

Deliberate differences and choices:
- Evidently's chi-square is a goodness-of-fit test that takes the reference shares as exact.
  Both samples vary, so on two samples of one population it flags far more than 5%: about 30%
  with 5 categories and equal sizes, more with more categories or a larger current sample
  (tests/test_monitoring/test_drift.py measures it). It is the default, for parity;
  `chisquare="two_sample"` swaps in the chi-square test of homogeneity of the 2 x k table
  (test `chisquare_two_sample`), which holds its 5%. It only matters up to 1000 reference rows.
- Evidently's count of drifted columns (`DriftedColumnsCount`) skips the +-inf cleaning for a
  column that has no null, so such a column gets a NaN statistic there and counts as not
  drifted, while its own per-column `ValueDrift` drops the infinities. The share here follows
  the per-column verdicts.
- The PSI of every feature is reported too, as a familiar second opinion, never as a verdict.
  Its bins are reference deciles (or each reference value when there are at most 10 of them,
  plus one bin for unseen values; each category for a categorical), with empty bins floored at
  1e-4. Evidently's optional PSI test bins both samples on Sturges edges instead.
- Statistics equal Evidently's up to float rounding (about 1e-13 relative: the Wasserstein
  integral is summed in another order), so a verdict could only differ for a statistic that
  sits on its threshold to that precision.
- Text columns, per-column tests and thresholds are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import pandas as pd

from mlops_core.monitoring.psi import PSI_FLOOR, psi_of_shares  # noqa: F401  (PSI_FLOOR re-exported with PSI_BINS)

# scipy (over a second to import) is imported by the functions that test: the code location imports
# this module and tests nothing.

SMALL_SAMPLE_ROWS = 1000
LOW_CARDINALITY = 5
P_VALUE_THRESHOLD = 0.05
DISTANCE_THRESHOLD = 0.1
DRIFT_SHARE = 0.5
# Floor of std(reference) under the Wasserstein distance, as in Evidently.
WASSERSTEIN_MIN_NORM = 0.001
PSI_BINS = 10

Kind = Literal["numeric", "categorical"]
Test = Literal["ks", "chisquare", "chisquare_two_sample", "z", "wasserstein", "jensenshannon"]
ChiSquare = Literal["goodness_of_fit", "two_sample"]
P_VALUE_TESTS: frozenset[str] = frozenset({"ks", "chisquare", "chisquare_two_sample", "z"})
# Evidently's display names of its tests (`ValueDrift.method` in a snapshot).
EVIDENTLY_TEST_NAMES: dict[str, Test] = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
}


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict of one feature. `statistic` is a p-value for ks, the chi-squares and z
    (drift when small) and a distance for wasserstein and jensenshannon (drift when large)."""

    feature: str
    kind: Kind
    test: Test
    statistic: float
    threshold: float
    drifted: bool
    psi: float
    reference_size: int
    current_size: int

    @property
    def statistic_kind(self) -> Literal["p_value", "distance"]:
        return "p_value" if self.test in P_VALUE_TESTS else "distance"


@dataclass(frozen=True)
class DriftReport:
    """Per-feature verdicts and the dataset verdict: drift when the share of drifted counted
    features is at least `drift_share`. `left_out` names features compared and shown but not
    counted in the share, each with its reason (monitoring/drift_scope.py: calendar features,
    windows not yet warm); with none left out, the share is Evidently's."""

    features: tuple[FeatureDrift, ...]
    drift_share: float = DRIFT_SHARE
    left_out: tuple[tuple[str, str], ...] = ()

    @property
    def counted(self) -> list[FeatureDrift]:
        skipped = {name for name, _ in self.left_out}
        return [f for f in self.features if f.feature not in skipped]

    @property
    def drifted_features(self) -> list[str]:
        """The counted features that drifted (left-out ones are in `as_frame` and `markdown`)."""
        return [f.feature for f in self.counted if f.drifted]

    @property
    def share_drifted(self) -> float:
        counted = self.counted
        return len(self.drifted_features) / len(counted) if counted else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.counted) and self.share_drifted >= self.drift_share

    def verdicts(self) -> dict[str, bool]:
        return {f.feature: f.drifted for f in self.features}

    def as_frame(self) -> pd.DataFrame:
        columns = [*(f.name for f in fields(FeatureDrift)), "statistic_kind"]
        rows = [{**asdict(f), "statistic_kind": f.statistic_kind} for f in self.features]
        return pd.DataFrame(rows, columns=columns)

    def markdown(self) -> str:
        verdict = "**drift**" if self.dataset_drift else "no drift"
        lines = [
            f"Dataset: {verdict}. {len(self.drifted_features)} of {len(self.counted)} counted features drifted "
            f"({self.share_drifted:.0%}; the dataset drifts from {self.drift_share:.0%}).",
            "",
        ]
        if self.left_out:
            drifted = {f.feature for f in self.features if f.drifted}
            lines += [
                f"Left out of the share ({len(self.left_out)}; compared and shown below, not counted):",
                "",
                *(f"- {name}{' (drifted)' if name in drifted else ''}: {reason}" for name, reason in self.left_out),
                "",
            ]
        lines += [
            "| feature | kind | test | statistic | threshold | drifted | PSI | reference rows | current rows |",
            "|---|---|---|---:|---:|---|---:|---:|---:|",
        ]
        for f in self.features:
            statistic = f"p = {f.statistic:.3g}" if f.statistic_kind == "p_value" else f"{f.statistic:.4f}"
            lines.append(
                f"| {f.feature} | {f.kind} | {f.test} | {statistic} | {f.threshold:g} | "
                f"{'**yes**' if f.drifted else 'no'} | {f.psi:.4f} | {f.reference_size:,} | {f.current_size:,} |"
            )
        return "\n".join(lines) + "\n"


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    drift_share: float = DRIFT_SHARE,
    chisquare: ChiSquare = "goodness_of_fit",
    left_out: Mapping[str, str] | None = None,
) -> DriftReport:
    """Drift of each listed feature of `current` against `reference` (see the module docstring
    for the tests). Nulls and +-inf are left out of every statistic. `chisquare` picks the
    chi-square of small samples: Evidently's "goodness_of_fit" (the default, for identical
    verdicts) or "two_sample", which keeps its false-alarm rate at 5%. Raises ValueError for a
    missing column, a non-numeric `numeric` column, a feature listed twice, or a column with
    no value left in either frame. `left_out` (feature -> reason) are compared and shown but
    not counted in the share; each must be a listed feature."""
    numeric, categorical = list(numeric), list(categorical)
    listed = numeric + categorical
    if len(set(listed)) != len(listed):
        raise ValueError(f"features listed more than once: {sorted({c for c in listed if listed.count(c) > 1})}")
    for side, frame in (("reference", reference), ("current", current)):
        missing = [c for c in listed if c not in frame.columns]
        if missing:
            raise ValueError(f"{side} frame lacks the columns {missing}")
    if chisquare not in ("goodness_of_fit", "two_sample"):
        raise ValueError(f"chisquare must be 'goodness_of_fit' or 'two_sample', not {chisquare!r}")
    rows = [_numeric_drift(name, reference[name], current[name], chisquare) for name in numeric]
    rows += [_categorical_drift(name, reference[name], current[name], chisquare) for name in categorical]
    left_out = dict(left_out or {})
    unknown = sorted(set(left_out) - set(listed))
    if unknown:
        raise ValueError(f"left_out names features that are not compared: {unknown}")
    return DriftReport(
        features=tuple(rows),
        drift_share=drift_share,
        left_out=tuple((name, left_out[name]) for name in listed if name in left_out),
    )


def _numeric_drift(name: str, reference: pd.Series, current: pd.Series, chisquare: ChiSquare) -> FeatureDrift:
    ref, cur = _sorted_finite(name, "reference", reference), _sorted_finite(name, "current", current)
    ref_distinct, cur_distinct = _distinct_count(ref), _distinct_count(cur)
    low_cardinality = False
    if ref_distinct <= LOW_CARDINALITY and cur_distinct <= LOW_CARDINALITY:
        keys, ref_counts, cur_counts = _aligned_value_counts(ref, cur)
        low_cardinality = len(keys) <= LOW_CARDINALITY
    if low_cardinality:
        test, statistic, drifted = _count_test(keys, ref_counts, cur_counts, len(ref), chisquare)
    elif len(ref) <= SMALL_SAMPLE_ROWS:
        from scipy.stats import ks_2samp

        statistic = float(ks_2samp(ref, cur).pvalue)
        test, drifted = "ks", statistic <= P_VALUE_THRESHOLD
    else:
        norm = max(float(np.std(ref)), WASSERSTEIN_MIN_NORM)
        statistic = _wasserstein_sorted(ref, cur) / norm
        test, drifted = "wasserstein", statistic >= DISTANCE_THRESHOLD
    return FeatureDrift(
        feature=name,
        kind="numeric",
        test=test,
        statistic=statistic,
        threshold=P_VALUE_THRESHOLD if test in P_VALUE_TESTS else DISTANCE_THRESHOLD,
        drifted=bool(drifted),
        psi=_psi_on_reference_deciles(ref, cur, ref_distinct),
        reference_size=len(ref),
        current_size=len(cur),
    )


def _categorical_drift(name: str, reference: pd.Series, current: pd.Series, chisquare: ChiSquare) -> FeatureDrift:
    ref_counts = _category_counts(name, "reference", reference)
    cur_counts = _category_counts(name, "current", current)
    keys = ref_counts.index.union(cur_counts.index, sort=False)
    ref_array = ref_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    cur_array = cur_counts.reindex(keys, fill_value=0).to_numpy(dtype=np.float64)
    reference_size, current_size = int(ref_array.sum()), int(cur_array.sum())
    test, statistic, drifted = _count_test(keys, ref_array, cur_array, reference_size, chisquare)
    return FeatureDrift(
        feature=name,
        kind="categorical",
        test=test,
        statistic=statistic,
        threshold=P_VALUE_THRESHOLD if test in P_VALUE_TESTS else DISTANCE_THRESHOLD,
        drifted=bool(drifted),
        psi=psi_of_shares(ref_array / reference_size, cur_array / current_size),
        reference_size=reference_size,
        current_size=current_size,
    )


def _sorted_finite(name: str, side: str, column: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(column):
        raise ValueError(f"numeric feature {name!r} has dtype {column.dtype} in the {side} frame")
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if len(values) == 0:
        raise ValueError(f"feature {name!r} has no finite value in the {side} frame")
    return np.sort(values)


def _distinct_count(sorted_values: np.ndarray) -> int:
    return int(np.count_nonzero(sorted_values[1:] != sorted_values[:-1])) + 1


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and how often each occurs."""
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    return sorted_values[starts], np.diff(np.r_[starts, len(sorted_values)])


def _aligned_value_counts(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (ref_values, ref_counts), (cur_values, cur_counts) = _runs(ref), _runs(cur)
    keys = np.union1d(ref_values, cur_values)
    ref_aligned, cur_aligned = np.zeros(len(keys)), np.zeros(len(keys))
    ref_aligned[np.searchsorted(keys, ref_values)] = ref_counts
    cur_aligned[np.searchsorted(keys, cur_values)] = cur_counts
    return keys, ref_aligned, cur_aligned


def _category_counts(name: str, side: str, column: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        column = column.replace([np.inf, -np.inf], np.nan)
    counts = column.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]  # a pandas categorical also counts its unused categories
    if isinstance(counts.index, pd.CategoricalIndex):
        counts.index = counts.index.astype(object)
    if counts.empty:
        raise ValueError(f"feature {name!r} has no non-null value in the {side} frame")
    return counts


def _count_test(
    keys: Sequence, ref: np.ndarray, cur: np.ndarray, reference_size: int, chisquare: ChiSquare
) -> tuple[Test, float, bool]:
    """Jensen-Shannon, chi-square or z-test on value counts aligned on `keys`."""
    from scipy import stats
    from scipy.spatial import distance

    if reference_size > SMALL_SAMPLE_ROWS:
        statistic = float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum()))
        return "jensenshannon", statistic, statistic >= DISTANCE_THRESHOLD
    if len(keys) > 2 and chisquare == "two_sample":
        # Every key occurs in one sample at least, so no expected count is 0.
        statistic = float(stats.chi2_contingency(np.vstack((ref, cur)), correction=False).pvalue)
        return "chisquare_two_sample", statistic, statistic < P_VALUE_THRESHOLD
    if len(keys) > 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            # A value absent from the reference expects 0: infinite chi-square, p = 0.
            statistic = float(stats.chisquare(cur, ref * (cur.sum() / ref.sum())).pvalue)
        return "chisquare", statistic, statistic < P_VALUE_THRESHOLD
    statistic = _two_proportion_z_p_value(keys, ref, cur)
    return "z", statistic, statistic < P_VALUE_THRESHOLD


def _two_proportion_z_p_value(keys: Sequence, ref: np.ndarray, cur: np.ndarray) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (statsmodels' proportions_ztest) on the shares
    of the values other than the smallest, as Evidently compares them; 1.0 for a feature with one value.
    statsmodels takes the tail as 2 * sf(|z|) where Evidently takes 2 * (1 - cdf(|z|)): the two differ
    by less than 1e-15."""
    from statsmodels.stats.proportion import proportions_ztest

    if len(keys) == 1:
        return 1.0
    keys = list(keys)
    first = keys.index(min(keys))  # Evidently compares the shares of the smallest value
    n1, n2 = ref.sum(), cur.sum()
    _, p_value = proportions_ztest([n1 - ref[first], n2 - cur[first]], [n1, n2])
    return float(p_value)


def _wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples: the integral over t in (0, 1) of
    |F_u^-1(t) - F_v^-1(t)|. Both quantile functions are steps, at i/n and j/m; on a grid of
    1/(n m) the breakpoints are integers, so the pieces and their widths are exact."""
    n, m = len(u), len(v)
    if n == m:
        return float(np.mean(np.abs(u - v)))
    levels = np.concatenate((np.arange(0, n * m, m, dtype=np.int64), np.arange(n, n * m, n, dtype=np.int64)))
    levels.sort()
    widths = np.diff(levels, append=n * m)
    return float(np.dot(widths, np.abs(u[levels // m] - v[levels // n]))) / (n * m)


def _psi_on_reference_deciles(ref: np.ndarray, cur: np.ndarray, ref_distinct: int) -> float:
    """PSI of the sorted sample `cur` against the sorted sample `ref`, binned on the reference's interior
    deciles, or per reference value when it takes at most PSI_BINS values (mlops_core.monitoring.psi
    says how this differs from the score PSI)."""
    if ref_distinct <= PSI_BINS:
        values, ref_counts = _runs(ref)
        cur_counts = np.searchsorted(cur, values, side="right") - np.searchsorted(cur, values, side="left")
        # One more bin for current values the reference never took.
        ref_counts = np.r_[ref_counts, 0]
        cur_counts = np.r_[cur_counts, len(cur) - cur_counts.sum()]
    else:
        # Interior reference deciles, linearly interpolated (numpy's default quantile).
        positions = np.arange(1, PSI_BINS) / PSI_BINS * (len(ref) - 1)
        below = np.floor(positions).astype(np.int64)
        above = np.minimum(below + 1, len(ref) - 1)
        edges = np.unique(ref[below] + (positions - below) * (ref[above] - ref[below]))
        # Bin k holds edges[k-1] <= x < edges[k].
        ref_counts = np.diff(np.r_[0, np.searchsorted(ref, edges, side="left"), len(ref)])
        cur_counts = np.diff(np.r_[0, np.searchsorted(cur, edges, side="left"), len(cur)])
    return psi_of_shares(ref_counts / len(ref), cur_counts / len(cur))


def evidently_snapshot(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
):
    """Evidently's DataDriftPreset (default tests, per-column tests on) run on the listed
    features. Returns its Snapshot. Evidently is imported here only: it takes seconds."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = [*numeric, *categorical]
    definition = DataDefinition(numerical_columns=list(numeric), categorical_columns=list(categorical))
    return Report([DataDriftPreset()], include_tests=True).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )


def evidently_verdicts(snapshot) -> dict[str, dict[str, object]]:
    """Per column of an `evidently_snapshot`: {"test", "statistic", "threshold", "drifted"},
    with the test named as in `FeatureDrift.test`."""
    found = snapshot.dict()
    verdicts: dict[str, dict[str, object]] = {}
    for metric in found["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            verdicts[config["column"]] = {
                "test": EVIDENTLY_TEST_NAMES.get(config["method"], config["method"]),
                "statistic": float(metric["value"]),
                "threshold": float(config["threshold"]),
            }
    prefix = "Value Drift for column "
    for test in found["tests"]:
        if test["name"].startswith(prefix):
            verdicts[test["name"][len(prefix) :]]["drifted"] = test["status"] == "FAIL"
    return verdicts


def evidently_html(
    reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]
) -> str:
    """Evidently's DataDriftPreset report as one self-contained HTML page, for people."""
    return evidently_snapshot(reference, current, numeric, categorical).get_html_str(as_iframe=False)
