"""Feature drift: known shifts are found, no-shift draws are not, large samples are judged by
effect size, and the verdicts equal Evidently's DataDriftPreset's."""

import math

import numpy as np
import pandas as pd
import pytest
from drift_frames import CATEGORICAL, MERCHANT_CATEGORIES, NUMERIC, RISKY, feature_frame
from scipy import stats

from mlops_core.monitoring.drift import (
    DriftReport,
    FeatureDrift,
    compute_drift,
    evidently_html,
    evidently_snapshot,
    evidently_verdicts,
)


def _one(reference, current, kind: str = "numeric", **options) -> FeatureDrift:
    frames = pd.DataFrame({"x": reference}), pd.DataFrame({"x": current})
    numeric, categorical = (["x"], []) if kind == "numeric" else ([], ["x"])
    (row,) = compute_drift(*frames, numeric, categorical, **options).features
    return row


# The test follows the reference size, as Evidently's default rule does.


@pytest.mark.parametrize(
    ("n_reference", "n_current", "values", "kind", "test"),
    [
        (1000, 100_000, "continuous", "numeric", "ks"),
        (1001, 50, "continuous", "numeric", "wasserstein"),
        (200, 200, "six", "numeric", "ks"),
        (5000, 5000, "six", "numeric", "wasserstein"),
        (200, 200, "five", "numeric", "chisquare"),
        (5000, 5000, "five", "numeric", "jensenshannon"),
        (200, 200, "binary", "numeric", "z"),
        (5000, 5000, "binary", "numeric", "jensenshannon"),
        (200, 200, "five", "categorical", "chisquare"),
        (200, 200, "binary", "categorical", "z"),
        (1001, 10, "binary", "categorical", "jensenshannon"),
    ],
)
def test_the_test_follows_reference_size_and_distinct_values(n_reference, n_current, values, kind, test):
    rng = np.random.default_rng(0)
    draw = {
        "continuous": lambda n: rng.normal(size=n),
        "six": lambda n: rng.integers(0, 6, n),
        "five": lambda n: rng.integers(0, 5, n),
        "binary": lambda n: rng.integers(0, 2, n),
    }[values]
    reference, current = draw(n_reference), draw(n_current)
    if kind == "categorical":
        reference, current = reference.astype(str), current.astype(str)
    row = _one(reference, current, kind)
    assert row.test == test
    assert (row.reference_size, row.current_size) == (n_reference, n_current)
    assert row.threshold == (0.05 if test in ("ks", "chisquare", "z") else 0.1)


def test_nulls_and_infinities_are_left_out_before_the_rule_counts_rows():
    rng = np.random.default_rng(1)
    reference = np.r_[rng.normal(size=1000), np.nan, np.inf, -np.inf]
    row = _one(reference, rng.normal(size=2000))
    assert (row.test, row.reference_size) == ("ks", 1000)


# Known shifts are detected on both sides of the rule.


@pytest.mark.parametrize("n", [300, 20_000])
def test_a_mean_shift_is_detected(n):
    rng = np.random.default_rng(2)
    row = _one(rng.normal(size=n), rng.normal(0.5, 1.0, n))
    assert row.drifted and row.test == ("ks" if n <= 1000 else "wasserstein")


@pytest.mark.parametrize("n", [1000, 20_000])
def test_a_variance_change_with_the_same_mean_is_detected(n):
    rng = np.random.default_rng(3)
    row = _one(rng.normal(size=n), rng.normal(0.0, 1.5, n))
    assert row.drifted
    if row.test == "wasserstein":  # E|X - Y| of the quantile coupling: 0.5 * E|Z| = 0.399
        assert row.statistic == pytest.approx(0.399, abs=0.02)


@pytest.mark.parametrize("n", [300, 20_000])
def test_a_change_of_the_category_mix_is_detected(n):
    rng = np.random.default_rng(4)
    reference = feature_frame(rng, n)["merchant_category"]
    current = feature_frame(rng, n, shift=1.0)["merchant_category"]
    assert current.isin(RISKY).mean() > 2 * reference.isin(RISKY).mean()
    row = _one(reference, current, "categorical")
    assert row.drifted and row.test == ("chisquare" if n <= 1000 else "jensenshannon")
    assert row.psi > 0.25


def test_the_two_sample_chi_square_is_the_test_of_homogeneity_of_the_2_by_k_table():
    rng = np.random.default_rng(13)
    reference, current = rng.choice(list("abcd"), 400), rng.choice(list("abcd"), 900, p=[0.3, 0.3, 0.2, 0.2])
    row = _one(reference, current, "categorical", chisquare="two_sample")
    table = pd.crosstab(np.r_[np.zeros(400), np.ones(900)], np.r_[reference, current])
    assert row.test == "chisquare_two_sample"
    assert row.statistic == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue, rel=1e-12)
    assert _one(rng.choice(list("abcd"), 5000), current, "categorical", chisquare="two_sample").test == "jensenshannon"


def test_a_category_the_reference_never_saw_is_drift():
    rng = np.random.default_rng(5)
    reference = rng.choice(["a", "b", "c"], 500)
    current = np.r_[rng.choice(["a", "b", "c"], 480), ["d"] * 20]
    row = _one(reference, current, "categorical")
    assert row.test == "chisquare" and row.statistic == 0.0 and row.drifted


@pytest.mark.parametrize("n", [5000, 200_000])
def test_the_same_population_is_not_flagged(n):
    rng = np.random.default_rng(6)
    report = compute_drift(feature_frame(rng, n), feature_frame(rng, n), NUMERIC, CATEGORICAL)
    assert report.drifted_features == [] and not report.dataset_drift
    assert all(f.psi < 0.1 for f in report.features)


# False-positive rates over many no-shift draws.


def _no_shift_flags(n: int, draws: int, seed: int, chisquare: str = "goodness_of_fit") -> dict[str, float]:
    rng = np.random.default_rng(seed)
    categories = pd.Index(MERCHANT_CATEGORIES[:5])
    flags = {"continuous": 0, "binary": 0, "categorical": 0}
    for _ in range(draws):
        frames = [
            pd.DataFrame(
                {
                    "continuous": rng.lognormal(3.5, 1.0, n),
                    "binary": (rng.random(n) < 0.3).astype(np.int64),
                    "categorical": pd.Categorical.from_codes(rng.integers(0, 5, n), categories=categories),
                }
            )
            for _ in range(2)
        ]
        report = compute_drift(*frames, ["continuous", "binary"], ["categorical"], chisquare=chisquare)
        for feature in report.drifted_features:
            flags[feature] += 1
    return {feature: count / draws for feature, count in flags.items()}


def test_false_positive_rate_of_the_p_value_tests_is_near_their_level_at_200_rows():
    # Two-sample K-S, z and chi-square at p < 0.05: about 5% of no-shift draws are flagged.
    rates = _no_shift_flags(200, draws=200, seed=7, chisquare="two_sample")
    assert all(rate <= 0.10 for rate in rates.values()), rates
    assert 0.02 <= np.mean(list(rates.values())) <= 0.08, rates


def test_evidentlys_goodness_of_fit_chi_square_flags_far_more_than_its_level():
    # It takes the reference shares as exact, so with equal sizes its statistic is about
    # 2 x chi2(k - 1): P(chi2(4) > 9.49 / 2) = 31% of no-shift draws with 5 categories.
    rates = _no_shift_flags(200, draws=200, seed=7)
    assert rates["continuous"] <= 0.10 and rates["binary"] <= 0.10, rates  # K-S and z are two-sample
    assert 0.20 <= rates["categorical"] <= 0.45, rates


@pytest.mark.parametrize(("n", "draws"), [(5000, 200), (200_000, 200)])
def test_false_positive_rate_is_zero_once_effect_sizes_decide(n, draws):
    assert _no_shift_flags(n, draws=draws, seed=8) == {"continuous": 0.0, "binary": 0.0, "categorical": 0.0}


def test_a_tiny_but_significant_shift_in_a_million_rows_is_not_drift():
    # The point of the rule (evidently issue 50): at n = 1M a p-value test flags a shift of
    # 2% of a standard deviation, which no one should act on; the effect size does not.
    rng = np.random.default_rng(9)
    n = 1_000_000
    reference = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(3, n, p=[0.50, 0.30, 0.20]).astype(str)})
    current = pd.DataFrame({"x": rng.normal(0.02, 1.0, n), "c": rng.choice(3, n, p=[0.49, 0.30, 0.21]).astype(str)})
    assert stats.ks_2samp(reference["x"], current["x"]).pvalue < 1e-10
    counts = pd.crosstab(np.r_[np.zeros(n), np.ones(n)], np.r_[reference["c"], current["c"]])
    assert stats.chi2_contingency(counts).pvalue < 1e-10
    report = compute_drift(reference, current, ["x"], ["c"])
    assert report.drifted_features == []
    x, c = report.features
    assert x.test == "wasserstein" and x.statistic == pytest.approx(0.02, abs=0.005)
    assert c.test == "jensenshannon" and c.statistic < 0.02


# Statistics, PSI and the report.


def test_the_wasserstein_statistic_is_scipys_over_the_reference_std_with_ties_and_unequal_sizes():
    rng = np.random.default_rng(10)
    reference, current = rng.integers(0, 40, 1500).astype(float), rng.integers(3, 45, 1777).astype(float)
    row = _one(reference, current)
    expected = stats.wasserstein_distance(reference, current) / np.std(reference)
    assert row.test == "wasserstein" and row.statistic == pytest.approx(expected, rel=1e-12)


def test_psi_is_zero_for_identical_samples_and_sees_a_rare_binary_value_grow():
    rng = np.random.default_rng(11)
    sample = rng.lognormal(size=5000)
    assert _one(sample, sample).psi == pytest.approx(0.0, abs=1e-12)
    rare = (rng.random(50_000) < 0.01).astype(int)
    grown = (rng.random(50_000) < 0.10).astype(int)
    # Each value is its own bin (all the deciles are 0): 0.09 ln 10 + 0.09 ln(0.99 / 0.90) = 0.216.
    assert _one(rare, grown).psi == pytest.approx(0.216, abs=0.02)


def test_dataset_drift_is_at_least_half_of_the_features():
    def report(drifted: list[bool]) -> DriftReport:
        rows = tuple(FeatureDrift(f"f{i}", "numeric", "ks", 0.5, 0.05, d, 0.0, 10, 10) for i, d in enumerate(drifted))
        return DriftReport(rows)

    assert report([True, True, False, False]).dataset_drift
    assert not report([True, False, False, False]).dataset_drift
    assert report([True, False, False, False]).share_drifted == 0.25
    assert not DriftReport(()).dataset_drift


def test_the_report_as_a_frame_and_as_markdown():
    rng = np.random.default_rng(12)
    report = compute_drift(feature_frame(rng, 3000), feature_frame(rng, 3000, shift=1.0), NUMERIC, CATEGORICAL)
    frame = report.as_frame()
    assert list(frame["feature"]) == NUMERIC + CATEGORICAL
    assert set(frame.columns) >= {
        "feature",
        "kind",
        "test",
        "statistic",
        "threshold",
        "drifted",
        "psi",
        "reference_size",
        "current_size",
    }
    assert frame["drifted"].dtype == bool and frame["drifted"].sum() == len(report.drifted_features) > 0
    text = report.markdown()
    assert text.startswith("Dataset: **drift**" if report.dataset_drift else "Dataset: no drift")
    assert text.count("\n| ") == len(NUMERIC) + len(CATEGORICAL) + 1  # header and one row each
    assert "| merchant_category | categorical | jensenshannon |" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r, c: (r.drop(columns="a"), c), "reference frame lacks the columns \\['a'\\]"),
        (lambda r, c: (r.assign(a=r["a"].astype(str)), c), "numeric feature 'a' has dtype object"),
        (lambda r, c: (r, c.assign(a=np.nan)), "feature 'a' has no finite value in the current frame"),
        (lambda r, c: (r.assign(b=None), c), "feature 'b' has no non-null value in the reference frame"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(change, message):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"]})
    with pytest.raises(ValueError, match=message):
        compute_drift(*change(frame, frame.copy()), ["a"], ["b"])
    with pytest.raises(ValueError, match="listed more than once"):
        compute_drift(frame, frame, ["a", "a"], ["b"])


# Agreement with Evidently 0.7's DataDriftPreset, column by column.


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Evidently's histograms of columns holding inf
@pytest.mark.parametrize(
    ("n_reference", "n_current", "shift", "seed"),
    [
        (300, 300, 0.0, 20),  # p-value tests, same population
        (300, 400, 0.4, 21),  # p-value tests, some features shifted
        (800, 5000, 0.3, 22),  # a small reference against a large current: still p-value tests
        (3000, 3000, 0.3, 23),  # effect sizes, borderline shifts
        (4000, 700, 1.0, 24),  # effect sizes, clear shifts
    ],
)
def test_verdicts_equal_evidentlys(n_reference, n_current, shift, seed):
    rng = np.random.default_rng(seed)
    reference, current = feature_frame(rng, n_reference), feature_frame(rng, n_current, shift)
    # Evidently drops +-inf like nulls. Not in a column without nulls: its count of drifted
    # columns would then disagree with its own per-column verdicts (see the drift module).
    current.loc[current.index[:5], "account_age_days"] = np.inf
    ours = compute_drift(reference, current, NUMERIC, CATEGORICAL)
    snapshot = evidently_snapshot(reference, current, NUMERIC, CATEGORICAL)
    theirs = evidently_verdicts(snapshot)
    assert set(theirs) == set(NUMERIC + CATEGORICAL)
    for row in ours.features:
        expected = theirs[row.feature]
        assert (row.feature, row.test, row.drifted) == (row.feature, expected["test"], expected["drifted"])
        assert row.statistic == pytest.approx(expected["statistic"], rel=1e-9, abs=1e-12)
        assert row.threshold == expected["threshold"]
    (count,) = [m for m in snapshot.dict()["metrics"] if m["config"]["type"].endswith(":DriftedColumnsCount")]
    assert ours.share_drifted == pytest.approx(count["value"]["share"])


def test_the_evidently_report_is_one_html_page_naming_every_feature():
    rng = np.random.default_rng(30)
    html = evidently_html(feature_frame(rng, 200), feature_frame(rng, 200, shift=1.0), NUMERIC, CATEGORICAL)
    assert html.lstrip().lower().startswith("<html") or "<!doctype html>" in html.lower()[:200]
    assert all(name in html for name in NUMERIC + CATEGORICAL)


def test_the_two_proportion_z_test_equals_the_hand_computed_p_value():
    """30 of 100 reference rows and 50 of 100 current rows are not the smallest value: pooled share 0.4,
    z = -0.2 / sqrt(0.4 * 0.6 * (1/100 + 1/100)) = -5 / sqrt(3), two-sided p = erfc(|z| / sqrt(2))."""
    row = _one(np.r_[np.zeros(70), np.ones(30)], np.r_[np.zeros(50), np.ones(50)], "categorical")
    assert row.test == "z"
    assert row.statistic == pytest.approx(math.erfc(5 / math.sqrt(6)), abs=1e-12)
    assert row.drifted  # p = 0.0039 < 0.05
    # The smallest value's share is compared, whichever side holds more rows of it; a one-valued feature: p = 1.
    swapped = _one(np.r_[np.zeros(30), np.ones(70)], np.r_[np.zeros(50), np.ones(50)], "categorical")
    assert swapped.statistic == pytest.approx(math.erfc(5 / math.sqrt(6)), abs=1e-12)
    assert _one(np.zeros(100), np.zeros(80), "categorical").statistic == 1.0
