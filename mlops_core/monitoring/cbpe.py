"""Confidence-based performance estimation (CBPE), calibrated: the champion's quality before labels arrive.

If a score is a calibrated probability, a row scored p is fraud with probability p. Then the confusion
matrix at any threshold has an expected value, and so do precision, recall, ROC AUC and AUC-PR. Model
scores are rarely calibrated where it matters (a boosted model trained with class weights, or on a
different fraud rate, is not), so the estimator first learns a calibration map on a labelled reference,
the champion's own test split (isotonic regression, monotone so the ranking is kept, as NannyML does), and
applies it to the served scores before estimating. Without that step the estimates were 1.4 to 7 times
further from the realized values than NannyML's on uncalibrated scores.

Each estimate comes with a reliability bound: the 2.5th and 97.5th percentiles of the metric over label
sets drawn from the calibrated probabilities (Monte Carlo, seeded). It is the sampling error of a window
of that size, so a day with few expected frauds gets a wide interval instead of a precise-looking number.

What CBPE cannot see: concept drift. When the meaning of a score changes (a new fraud pattern the model
scores low) the calibrated probabilities stay where they were, and so do the estimates; only labels show
it (concept_drift's recall test). CBPE catches covariate shift: traffic moving into regions where the
model is less sure. Pure: no dagster, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METRICS = ("roc_auc", "auc_pr", "precision", "recall")


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def _run_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Positions closing each run of tied scores (sorted descending): only there is a threshold."""
    return np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])


def expected_curves(p: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expected TP, expected FP, flagged count) of "flag score >= t" at every distinct threshold t,
    highest first: rows ranked by the model's `scores` (default: p), each fraud with probability p."""
    scores = p if scores is None else np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    ends = _run_ends(scores[order])
    tp = np.cumsum(p[order])[ends]
    flagged = ends + 1.0
    return tp, flagged - tp, flagged


def expected_roc_auc(p: np.ndarray, scores: np.ndarray | None = None) -> float:
    """The area under the expected ROC curve: TPR = E[TP] / sum(p), FPR = E[FP] / sum(1 - p)."""
    positives, negatives = p.sum(), (1 - p).sum()
    if positives <= 0 or negatives <= 0:
        return math.nan
    tp, fp, _ = expected_curves(p, scores)
    return float(np.trapezoid(np.r_[0.0, tp / positives], np.r_[0.0, fp / negatives]))


def expected_average_precision(p: np.ndarray, scores: np.ndarray | None = None) -> float:
    """Average precision of the expected confusion matrix at every distinct threshold of the scores."""
    positives = p.sum()
    if positives <= 0:
        return math.nan
    tp, _, flagged = expected_curves(p, scores)
    return float(np.sum(np.diff(np.r_[0.0, tp / positives]) * (tp / flagged)))


def expected_precision_recall(p: np.ndarray, threshold_mask: np.ndarray) -> tuple[float, float]:
    tp = float(p[threshold_mask].sum())
    flagged = float(threshold_mask.sum())
    total = float(p.sum())
    return (tp / flagged if flagged else math.nan), (tp / total if total else math.nan)


def realized(y: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """The four metrics on real labels (NaN where undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=bool)
    both = y.any() and not y.all()
    tp = float((y & flagged).sum())
    return {
        "roc_auc": float(roc_auc_score(y, scores)) if both else math.nan,
        "auc_pr": float(average_precision_score(y, scores)) if both else math.nan,
        "precision": float(tp / flagged.sum()) if flagged.any() else math.nan,
        "recall": float(tp / y.sum()) if y.any() else math.nan,
    }


class CalibratedCBPE:
    """fit() on a labelled reference, then estimate() any window of scores at a decision threshold.

    `calibrate`: True always maps the scores through isotonic regression fitted on the reference; False
    never does; "auto" (the default) does when that lowers the Brier score of the reference out of fold
    (5 folds). Isotonic regression on scores that are calibrated already only adds steps (33 distinct
    probabilities, the top one 1.0, on a 20,000-row reference), which biased the estimated ROC AUC by +0.012
    in a test where the raw scores gave +0.003.

    NannyML decides by the expected calibration error instead (10 equal-count bins over held-out rows). That
    rule calibrated those same calibrated scores, and the ROC AUC bias returned (+0.012). On the fraud
    model's own references (the simulations of 2026-12-05) the two rules part ways where the scores are
    calibrated to within sampling error: a likelihood-ratio test against a fitted beta calibration gave
    p = 0.24 and 0.44 (benchmarks/cbpe_vs_nannyml.py records it per data set)."""

    def __init__(self, calibrate: bool | str = "auto", draws: int = 200, seed: int = 0) -> None:
        if calibrate not in (True, False, "auto"):
            raise ValueError(f"calibrate must be True, False or 'auto', got {calibrate!r}")
        self.calibrate = calibrate
        self.draws = draws
        self.seed = seed
        self._calibrator = None
        self.reference_size = 0
        self.calibrated = False

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> CalibratedCBPE:
        from sklearn.isotonic import IsotonicRegression

        scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
        if len(scores) != len(labels):
            raise ValueError(f"reference: {len(scores)} scores but {len(labels)} labels")
        if len(np.unique(labels)) < 2:
            raise ValueError("reference: needs both fraud and legitimate rows to learn a calibration")
        self.reference_size = len(scores)
        self.calibrated = self.calibrate is True or (self.calibrate == "auto" and _calibration_helps(scores, labels))
        if self.calibrated:
            self._calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
        return self

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=float)
        if self.calibrate is not False and not self.reference_size:
            raise RuntimeError("fit the estimator on a labelled reference first")
        if not self.calibrated:
            return np.clip(scores, 0.0, 1.0)
        return np.clip(self._calibrator.predict(scores), 0.0, 1.0)

    def estimate(self, scores: np.ndarray, threshold: float) -> dict[str, Estimate]:
        """Each metric's estimate for the decisions "flag when score >= threshold", with its 95% bound."""
        scores = np.asarray(scores, dtype=float)
        if len(scores) == 0:
            raise ValueError("no scores to estimate from")
        p = self.probabilities(scores)
        flagged = scores >= threshold
        precision, recall = expected_precision_recall(p, flagged)
        point = {
            "roc_auc": expected_roc_auc(p, scores),
            "auc_pr": expected_average_precision(p, scores),
            "precision": precision,
            "recall": recall,
        }
        rng = np.random.default_rng(self.seed)
        drawn = {m: [] for m in METRICS}
        for _ in range(self.draws):
            y = rng.random(len(p)) < p
            for metric, value in realized(y, scores, flagged).items():
                if not math.isnan(value):
                    drawn[metric].append(value)
        return {
            m: Estimate(
                point[m],
                float(np.percentile(drawn[m], 2.5)) if drawn[m] else math.nan,
                float(np.percentile(drawn[m], 97.5)) if drawn[m] else math.nan,
            )
            for m in METRICS
        }


def _calibration_helps(scores: np.ndarray, labels: np.ndarray, folds: int = 5) -> bool:
    """Whether isotonic calibration lowers the reference's Brier score out of fold (folds by position, seeded)."""
    from sklearn.isotonic import IsotonicRegression

    fold = np.random.default_rng(0).permutation(len(scores)) % folds
    calibrated = np.empty(len(scores))
    for k in range(folds):
        train, test = fold != k, fold == k
        if len(np.unique(labels[train])) < 2:
            return False
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores[train], labels[train])
        calibrated[test] = model.predict(scores[test])
    raw = np.mean((np.clip(scores, 0, 1) - labels) ** 2)
    return bool(np.mean((calibrated - labels) ** 2) < raw)
