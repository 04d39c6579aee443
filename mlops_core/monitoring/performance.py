"""Performance of the served model once labels arrive, and before they do.

Tools, none of which imports dagster:

- `live_performance`: realized quality of logged decisions against the labels known so far,
  overall, per model version and per segment.
- `PageHinkley`: a streaming detector of an increase in the mean of an error stream
  (`error_stream` builds one from the log and the labels).
- `calibration_drift`: expected calibration error of a window against the reference one.
- `recall_drop`: the one-sided binomial test of a recall fall on the frauds confirmed so far.
- `design_effect`: how much clustering by account inflates the variance of a mean, so the three tests
  above count independent evidence, not transactions.

Confidence-based performance estimation, before any label, is in `cbpe.py`.

Labels are late (docs/demo_data.md): a fraud is confirmed within days or weeks, a legitimate
transaction only when it matures 45 days after the event. Until a window is that old its
labelled rows are enriched in fraud, so realized precision, fraud rate and error rates are
biased upwards there. Recall is not affected as much, because it only looks at frauds. Compute
precision-like figures on matured windows (events before a cutoff, as `error_stream`'s
complete_before does) and use CBPE (cbpe.py) in between.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import orjson
import pandas as pd

from mlops_core.training.metrics import (
    CALIBRATION_BINS,
    _as_arrays,
    _auc_pr,
    _decision_counts,
    _ratio,
    expected_calibration_error,
)

# scipy (over a second to import) is imported by the functions that use it: the code location imports
# this module and computes nothing.

PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "segment",
    "value",
    "n_scored",
    "n_labelled",
    "label_coverage",
    "positives",
    "flag_rate",
    "precision",
    "recall",
    "f1",
    "auc_pr",
)
OVERALL = "overall"


def _f1(precision: float, recall: float) -> float:
    # Same convention as metrics.classification_metrics: NaN when either side is undefined.
    if np.isnan(precision) or np.isnan(recall):
        return float("nan")
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _label_lookup(labels: pd.DataFrame) -> pd.Series:
    missing = {"transaction_id", "is_fraud"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels lack column(s) {sorted(missing)}")
    duplicated = labels["transaction_id"].duplicated()
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} transaction(s) have more than one label, e.g. {labels['transaction_id'][duplicated].iloc[0]!r}"
        )
    return labels.set_index("transaction_id")["is_fraud"].astype(bool).astype(np.int64)


def _scored_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """Rows that carry a score and a decision: error rows of the log have neither."""
    missing = {"transaction_id", "score", "decision", "model_version"} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions lack column(s) {sorted(missing)}")
    return predictions[predictions["score"].notna() & predictions["decision"].notna()].reset_index(drop=True)


def _segment_values(predictions: pd.DataFrame, name: str) -> pd.Series:
    """A segment column, or the value of that key in the logged features JSON."""
    if name in predictions.columns:
        return predictions[name]
    if "features" in predictions.columns:
        parsed = predictions["features"].map(lambda text: orjson.loads(text) if isinstance(text, str | bytes) else {})
        keys = set().union(*parsed) if len(parsed) else set()
        if name in keys:
            return pd.Series([features.get(name) for features in parsed], index=predictions.index, dtype=object)
        raise ValueError(
            f"segment {name!r} is neither a column nor a key of the features JSON (keys: {sorted(keys)}); "
            "join the transactions for raw fields such as channel or country"
        )
    raise ValueError(f"segment {name!r} is not a column of the predictions")


def _group_row(
    segment: str, value: object, member: np.ndarray, score: np.ndarray, flagged: np.ndarray, label: np.ndarray
) -> dict[str, object]:
    labelled = member & ~np.isnan(label)
    y = label[labelled].astype(np.int64)
    tp, fp, fn, _ = _decision_counts(y, flagged[labelled])
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    n_scored, n_labelled = int(member.sum()), int(labelled.sum())
    return {
        "segment": segment,
        "value": value,
        "n_scored": n_scored,
        "n_labelled": n_labelled,
        "label_coverage": _ratio(n_labelled, n_scored),
        "positives": int(y.sum()),
        "flag_rate": _ratio(int(flagged[member].sum()), n_scored),
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "auc_pr": _auc_pr(y, score[labelled]),
    }


def live_performance(
    predictions: pd.DataFrame, labels: pd.DataFrame, segments: Sequence[str] = ("channel", "country")
) -> pd.DataFrame:
    """Realized quality of the logged decisions, overall, per model_version and per segment.

    `predictions` holds transaction_id, score, decision (0/1) and model_version, one row per
    scored transaction and model (rows without a score, i.e. errors, are left out); `labels`
    holds transaction_id and is_fraud, at most one per transaction. Each segment is a column
    of `predictions` or else a key of its `features` JSON column (e.g. is_online, is_foreign,
    merchant_category, age_band); the logged features hold neither channel nor country, so
    those need the transactions joined first.

    One row per (segment, value): the first is (overall, all), then model_version, then the
    segments in the given order, values sorted by their text (None: value unknown). n_scored
    and flag_rate count every scored row; precision, recall, f1 (of the logged decisions) and
    auc_pr (of the scores) count the labelled ones only, so a segment without labelled fraud
    gets NaN recall and auc_pr, and one without flags NaN precision.

    When the log's `served` column is there, the overall and segment rows count served rows
    only, so a transaction scored by the champion and a shadow counts once; the model_version
    rows count every row, so a shadow model is measured on the traffic it saw. On events
    younger than the label maturity, precision is biased upwards (module docstring).
    """
    scored = _scored_rows(predictions)
    label = scored["transaction_id"].map(_label_lookup(labels)).to_numpy(dtype=np.float64, na_value=np.nan)
    score = scored["score"].to_numpy(dtype=np.float64)
    flagged = scored["decision"].to_numpy(dtype=np.float64) >= 0.5
    served = scored["served"].to_numpy() == 1 if "served" in scored.columns else np.ones(len(scored), dtype=bool)
    rows = [_group_row(OVERALL, "all", served, score, flagged, label)]
    for column in ("model_version", *segments):
        counted = np.ones(len(scored), dtype=bool) if column == "model_version" else served
        values = _segment_values(scored, column).to_numpy(dtype=object)
        missing = pd.isna(values)
        for value in sorted(pd.unique(values[counted & ~missing]), key=str):
            rows.append(_group_row(column, value, counted & (values == value), score, flagged, label))
        if (counted & missing).any():
            rows.append(_group_row(column, None, counted & missing, score, flagged, label))
    return pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))


def error_stream(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    kind: str = "score",
    complete_before: pd.Timestamp | str | None = None,
) -> pd.Series:
    """Per labelled prediction, its error, ordered by event_timestamp (the index).

    kind "score" gives |is_fraud - score|, kind "decision" gives 1 when the decision was wrong.
    Because a legitimate transaction is only labelled when it matures, the labelled rows of a
    recent window are mostly fraud and their errors are far larger than usual: a detector fed
    with them alarms on label delay, not on the model. `complete_before` keeps only events
    before a time whose labels are complete (45 days before the last labels day in the demo).
    Rows are taken as given: pass one model's rows (e.g. the champion's) so each transaction
    appears once.
    """
    if kind not in ("score", "decision"):
        raise ValueError(f"kind must be 'score' or 'decision', not {kind!r}")
    scored = _scored_rows(predictions)
    label = scored["transaction_id"].map(_label_lookup(labels))
    event = pd.to_datetime(scored["event_timestamp"], utc=True, format="ISO8601")
    keep = label.notna().to_numpy()
    if complete_before is not None:
        cutoff = pd.Timestamp(complete_before)
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        keep &= (event < cutoff).to_numpy()
    y = label[keep].to_numpy(dtype=np.float64)
    if kind == "score":
        error = np.abs(y - scored["score"][keep].to_numpy(dtype=np.float64))
    else:
        error = (scored["decision"][keep].to_numpy(dtype=np.float64) != y).astype(np.float64)
    stream = pd.Series(error, index=pd.DatetimeIndex(event[keep], name="event_timestamp"), name=f"{kind}_error")
    return stream.sort_index(kind="stable")


def design_effect(values: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray) -> float:
    """Kish's design effect of the mean of `values` grouped by `clusters`: the cluster-robust variance of
    the mean over the variance it would have if every value were independent, floored at 1.

    Why: the transactions of one card are not independent draws. A compromised card is used several times
    before it is blocked, and a model that misses it misses all of them; a legitimate card the model
    dislikes is flagged again and again. On the demo's plain 60-day history the 7-day window held 81
    frauds on 32 cards (design effect 1.5), the matured decision errors had a design effect of about 2.3
    and the residuals label - score one of about 3. Tests that count transactions as independent then see noise as
    signal: that history raised three false alarms, one from each of the recall test, Page-Hinkley and
    the calibration bound. Dividing counts (or multiplying variances) by this factor restores their
    stated confidence. The variance is statsmodels' cluster-robust one (with its small-sample
    correction); with one cluster, or a constant value, nothing can be estimated and 1 is returned.
    """
    y = np.asarray(values, dtype=np.float64).ravel()
    # A missing cluster id is a cluster of its own (one unknown card), not an error.
    groups = pd.factorize(pd.Series(np.asarray(clusters, dtype=object).ravel()), use_na_sentinel=False)[0]
    if len(y) != len(groups):
        raise ValueError(f"values and clusters differ in length: {len(y)} vs {len(groups)}")
    if np.isnan(y).any():
        raise ValueError(f"values hold {int(np.isnan(y).sum())} NaN: pass labelled rows only")
    if len(y) < 3 or np.unique(groups).size < 2 or np.ptp(y) == 0:
        return 1.0
    import statsmodels.api as sm

    ones = np.ones((len(y), 1))
    independent = sm.OLS(y, ones).fit().bse[0] ** 2
    clustered = sm.OLS(y, ones).fit(cov_type="cluster", cov_kwds={"groups": groups}).bse[0] ** 2
    return float(max(1.0, clustered / independent))


class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a stream (an error stream here).

    After each x the detector updates the running mean x̄ and the cumulative deviation
    m = alpha * m + (x - x̄ - delta), and alarms when m - min(m) > threshold, once at least
    min_instances values were seen; it then starts afresh. Only increases alarm: a model whose
    errors fall is not a problem.

    Choosing the parameters. On a stationary stream with variance s² the statistic is a random
    walk with drift -delta reflected at its minimum, whose excursions pass `threshold` with
    probability about exp(-2 * delta * threshold / s²) each (Wald's approximation for CUSUM);
    a shift of the mean by d > delta is caught after about threshold / (d - delta) values.
    So delta is half the smallest increase in error worth an alarm, and threshold sets the
    false-alarm rate. The defaults target 0/1 decision errors or |label - score| of a fraud
    model, whose mean is a few percent (s² up to about 0.05): with delta = 0.005 and
    threshold = 50 an excursion alarms with probability about exp(-10), and doubling a 5% error
    rate is caught after about 1,100 labelled transactions (measured in
    tests/test_monitoring/test_performance.py). Errors that cluster by card have the variance of
    design_effect * s² per value (see `design_effect`), so the same false-alarm rate needs the
    threshold times the design effect: the concept_drift asset scales it by the one it measures.
    alpha slightly below 1 makes old deviations
    fade (memory of about 1 / (1 - alpha) values) so a long quiet past does not mask a change;
    min_instances keeps the first values, where x̄ is still noisy, from alarming.
    """

    def __init__(
        self, delta: float = 0.005, threshold: float = 50.0, alpha: float = 1 - 1e-4, min_instances: int = 30
    ) -> None:
        if delta < 0 or threshold <= 0 or not 0 < alpha <= 1 or min_instances < 1:
            raise ValueError("need delta >= 0, threshold > 0, 0 < alpha <= 1 and min_instances >= 1")
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self.min_instances = min_instances
        self.reset()

    def reset(self) -> None:
        """Forget everything seen, as after an alarm."""
        self.n_ = 0
        self.mean_ = 0.0
        self.sum_ = 0.0
        self.min_sum_ = float("inf")

    def update(self, x: float) -> bool:
        """Take the next value; True when it raises an alarm (the detector then resets)."""
        x = float(x)
        if np.isnan(x):
            raise ValueError("the stream holds NaN")
        self.n_ += 1
        self.mean_ += (x - self.mean_) / self.n_
        self.sum_ = self.alpha * self.sum_ + (x - self.mean_ - self.delta)
        self.min_sum_ = min(self.min_sum_, self.sum_)
        alarm = self.n_ >= self.min_instances and self.sum_ - self.min_sum_ > self.threshold
        if alarm:
            self.reset()
        return alarm

    def statistic(self, series: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
        """m - min(m) after each value of a fresh detector, without resets (vectorized)."""
        x = np.asarray(series, dtype=np.float64).ravel()
        if np.isnan(x).any():
            raise ValueError("the stream holds NaN")
        if len(x) == 0:
            return x
        from scipy.signal import lfilter

        mean = np.cumsum(x) / np.arange(1, len(x) + 1)
        deviation = x - mean - self.delta
        cumulative = np.cumsum(deviation) if self.alpha == 1 else lfilter([1.0], [1.0, -self.alpha], deviation)
        return cumulative - np.minimum.accumulate(cumulative)

    def detect(self, series: Sequence[float] | np.ndarray | pd.Series) -> object | None:
        """Where a fresh detector first alarms on `series`, or None; the streaming state is untouched.

        The position for an array, the index label for a pandas Series (e.g. the event time of
        an `error_stream`). Same answer as calling update on each value in turn.
        """
        stat = self.statistic(series)
        alarms = np.flatnonzero((np.arange(1, len(stat) + 1) >= self.min_instances) & (stat > self.threshold))
        if len(alarms) == 0:
            return None
        first = int(alarms[0])
        return series.index[first] if isinstance(series, pd.Series) else first


def calibration_drift(
    y: np.ndarray,
    p: np.ndarray,
    reference_ece: float,
    n_bins: int = CALIBRATION_BINS,
    confidence: float = 0.99,
    n_simulations: int = 2000,
    seed: int = 0,
    design_effect: float = 1.0,
) -> dict[str, float | bool]:
    """Has the calibration of a window of labelled scores moved away from the reference?

    The window's ECE (metrics.expected_calibration_error, same bins) is compared with
    bound = reference_ece + q, where q is the `confidence` quantile of the ECE that sampling
    noise alone gives on this window: labels drawn as Binomial(bin count, bin mean score) per
    bin, `n_simulations` times. Per bin |labels - scores| <= |labels - E labels| + |E labels -
    scores|, so a window as miscalibrated as the reference stays under the bound with about
    that confidence; a small window gets a wide bound rather than a false alarm.

    The simulated labels are independent; the real ones cluster by card. Pass the `design_effect` of the
    residuals label - score by card (about 3 on the demo's plain history; the labels alone, 4.4, would
    overstate it: part of their clustering is risk the score already knows). It widens every bin's noise
    by its square root, and so the quantile (ECE is a sum of absolute deviations, which scale with the
    standard deviation).

    Also returned: mean score / realized fraud rate (1 when calibrated on average; 0.5 when
    fraud doubled; NaN without fraud). Both need complete labels: an immature window is
    enriched in fraud and looks under-confident.
    """
    y, p = _as_arrays(y, p)
    ece = expected_calibration_error(y, p, n_bins)
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    score_sums = np.bincount(bins, weights=p, minlength=n_bins)
    bin_means = np.divide(score_sums, counts, out=np.zeros(n_bins), where=counts > 0)
    rng = np.random.default_rng(seed)
    simulated = rng.binomial(counts, np.clip(bin_means, 0.0, 1.0), size=(n_simulations, n_bins))
    noise_ece = np.abs(simulated - score_sums).sum(axis=1) / len(y)
    if not design_effect >= 1:
        raise ValueError(f"design_effect must be >= 1, got {design_effect}")
    noise_quantile = float(np.quantile(noise_ece, confidence)) * float(np.sqrt(design_effect))
    bound = float(reference_ece) + noise_quantile
    mean_score, fraud_rate = float(p.mean()), float(y.mean())
    return {
        "ece": ece,
        "reference_ece": float(reference_ece),
        "noise_quantile": noise_quantile,
        "design_effect": float(design_effect),
        "bound": bound,
        "drift": bool(ece > bound),
        "mean_score": mean_score,
        "fraud_rate": fraud_rate,
        "score_to_rate_ratio": _ratio(mean_score, fraud_rate),
        "n": float(len(y)),
        "positives": float(y.sum()),
    }


def recall_drop(
    caught: int,
    frauds: int,
    reference_recall: float,
    confidence: float = 0.99,
    min_frauds: int = 5,
    reference_frauds: int | None = None,
    design_effect: float = 1.0,
) -> dict[str, float | bool | str]:
    """Is the recall on recently confirmed frauds significantly below the recall the model was promoted with?

    The reference recall was measured on the test split's `reference_frauds` frauds: an estimate, with its own
    sampling error. Given that count, the test is two-sample (Fisher's exact, one-sided: the recent recall is
    lower than the reference's). A one-sample binomial test that took the estimate as exact raised false alarms
    on a plain history: recall 0.65 on 81 recent frauds against 0.79 measured on 174 gave p = 0.004 one-sample,
    0.017 two-sample. Without the count (a model registered before it was logged) the binomial test is used.

    Frauds come in bursts per card, so both samples count `design_effect` (see `design_effect`, measured on the
    recent window's cards) times fewer independent frauds than transactions: the test runs on the counts
    divided by it, rounded. The reference split's frauds are taken to cluster as the recent ones do (the same
    fraud process makes both). On the plain history's day 27 that turned p = 0.0036 (81 frauds) into 0.021 (81
    frauds on 32 cards, design effect 1.48); the drift's first alarms stayed on the same day (p 5e-4 to 7e-3).

    Recall needs only the frauds, which are confirmed within days, so it is the first quality figure to react
    to a new fraud pattern; precision has to wait for legitimate labels to mature.
    """
    from scipy.stats import binom, fisher_exact

    if frauds < 0 or not 0 <= caught <= frauds:
        raise ValueError(f"need 0 <= caught <= frauds, got caught={caught}, frauds={frauds}")
    if not 0 <= reference_recall <= 1:
        raise ValueError(f"reference_recall must be in [0, 1], got {reference_recall}")
    if reference_frauds is not None and reference_frauds < 0:
        raise ValueError(f"reference_frauds must be >= 0, got {reference_frauds}")
    if not design_effect >= 1:
        raise ValueError(f"design_effect must be >= 1, got {design_effect}")
    recall = caught / frauds if frauds else float("nan")
    two_sample = bool(reference_frauds)
    # Independent frauds: at least one per sample that has any, so a tiny window still gets a (weak) test.
    effective = max(1, round(frauds / design_effect)) if frauds else 0
    effective_caught = min(effective, round(caught / design_effect))
    if not frauds:
        p_value = 1.0
    elif two_sample:
        effective_reference = max(1, round(reference_frauds / design_effect))
        reference_caught = round(reference_recall * effective_reference)
        table = [
            [effective_caught, effective - effective_caught],
            [reference_caught, effective_reference - reference_caught],
        ]
        p_value = float(fisher_exact(table, alternative="less").pvalue)
    else:
        p_value = float(binom.cdf(effective_caught, effective, reference_recall))
    return {
        "recall": recall,
        "reference_recall": float(reference_recall),
        "frauds": int(frauds),
        "reference_frauds": int(reference_frauds) if reference_frauds else 0,
        "design_effect": float(design_effect),
        "effective_frauds": int(effective),
        "test": "fisher_two_sample" if two_sample else "binomial_one_sample",
        "p_value": p_value,
        "drop": bool(frauds >= min_frauds and p_value < 1 - confidence),
    }
