"""Evaluation of fraud scores: threshold choice, quality, calibration, segments, fairness,
latency and robustness.

Every function takes labels y (0/1) and scores p = P(fraud); a transaction is flagged when
p >= threshold. Undefined ratios (recall of a split without fraud, AUC of a single class)
are NaN rather than an error, because a small segment legitimately has them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from mlops_core.training.matrix import NUMERIC_COLUMN_INDEXES

# scikit-learn (over a second to import) is imported by the functions that use it: the code location
# imports this module and evaluates nothing.

CALIBRATION_BINS = 10
# Clip probabilities for log loss so a confident miss costs a large finite amount.
LOG_LOSS_EPSILON = 1e-15


def _as_arrays(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    return y, p


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def choose_threshold(
    y_val: np.ndarray,
    p_val: np.ndarray,
    false_positive_cost: float = 1.0,
    false_negative_cost: float = 20.0,
) -> float:
    """The decision threshold that minimises the expected cost on the validation split.

    Rule: cost(t) = false_positive_cost x FP(t) + false_negative_cost x FN(t), where a row
    is flagged when p >= t. The defaults say a missed fraud costs 20 false alarms. The
    candidates are every distinct validation score (flag it and everything above) plus the
    next float above the highest score (flag nothing). Among equal costs the highest
    threshold wins, i.e. the fewest alerts; the result depends only on the inputs.
    """
    y, p = _as_arrays(y_val, p_val)
    order = np.argsort(-p, kind="stable")
    sorted_scores, sorted_labels = p[order], y[order]
    true_positives = np.cumsum(sorted_labels)
    false_positives = np.cumsum(1 - sorted_labels)
    # The last position of each run of equal scores: flagging at that score flags the whole run.
    run_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    positives = int(y.sum())
    candidates = np.r_[np.nextafter(sorted_scores[0], np.inf), sorted_scores[run_ends]]
    costs = np.r_[
        false_negative_cost * positives,
        false_positive_cost * false_positives[run_ends] + false_negative_cost * (positives - true_positives[run_ends]),
    ]
    # Candidates are in decreasing order, so argmin's first minimum is the highest threshold.
    return float(candidates[int(np.argmin(costs))])


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> float:
    """Count-weighted mean |observed fraud rate - mean score| over equal-width score bins."""
    y, p = _as_arrays(y, p)
    # Bin i holds [i/n, (i+1)/n); a score of exactly 1 goes into the last bin.
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    label_sums = np.bincount(bins, weights=y, minlength=n_bins)
    score_sums = np.bincount(bins, weights=p, minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(label_sums[filled] - score_sums[filled]) / counts[filled]
    return float(np.sum(gaps * counts[filled]) / len(y))


def _decision_counts(y: np.ndarray, flagged: np.ndarray) -> tuple[int, int, int, int]:
    true_positives = int(np.sum(flagged & (y == 1)))
    false_positives = int(np.sum(flagged & (y == 0)))
    false_negatives = int(np.sum(~flagged & (y == 1)))
    true_negatives = int(np.sum(~flagged & (y == 0)))
    return true_positives, false_positives, false_negatives, true_negatives


def _auc_roc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _auc_pr(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Ranking, decision and calibration quality of scores p at the given threshold."""
    y, p = _as_arrays(y, p)
    flagged = p >= threshold
    tp, fp, fn, tn = _decision_counts(y, flagged)
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if np.isnan(precision) or np.isnan(recall):
        f1 = float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    clipped = np.clip(p, LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON)
    return {
        "auc_roc": _auc_roc(y, p),
        "auc_pr": _auc_pr(y, p),
        "precision": precision,
        "recall": recall,
        "f1": float(f1),
        "false_positive_rate": _ratio(fp, fp + tn),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
        "brier": float(np.mean((p - y) ** 2)),
        "expected_calibration_error": expected_calibration_error(y, p),
        "positive_rate": float(np.mean(flagged)),
        "n": float(len(y)),
        "positives": float(y.sum()),
    }


def segment_metrics(y: np.ndarray, p: np.ndarray, threshold: float, segments: pd.DataFrame) -> pd.DataFrame:
    """One row per (segment column, value) with n, positives, recall, false_positive_rate,
    precision and auc_pr; `segments` is aligned with y and p by position."""
    y, p = _as_arrays(y, p)
    if len(segments) != len(y):
        raise ValueError(f"segments have {len(segments)} rows but there are {len(y)} labels")
    rows = []
    for column in segments.columns:
        values = segments[column].to_numpy()
        for value in pd.unique(values):
            member = values == value if not pd.isna(value) else pd.isna(values)
            tp, fp, fn, tn = _decision_counts(y[member], p[member] >= threshold)
            rows.append(
                {
                    "segment": column,
                    "value": value,
                    "n": int(member.sum()),
                    "positives": tp + fn,
                    "recall": _ratio(tp, tp + fn),
                    "false_positive_rate": _ratio(fp, fp + tn),
                    "precision": _ratio(tp, tp + fp),
                    "auc_pr": _auc_pr(y[member], p[member]),
                }
            )
    table = pd.DataFrame(
        rows, columns=["segment", "value", "n", "positives", "recall", "false_positive_rate", "precision", "auc_pr"]
    )
    # Sort by the value's text so the order is stable whatever order rows arrived in.
    order = table["value"].astype(str)
    return (
        table.assign(_order=order)
        .sort_values(["segment", "_order"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def fairness_gaps(
    y: np.ndarray, p: np.ndarray, threshold: float, groups: pd.Series, min_positives: int = 5
) -> dict[str, object]:
    """Max minus min recall and false-positive rate across groups with >= min_positives frauds.

    Groups with fewer frauds are listed under `excluded_groups`: their recall is too noisy
    to compare. With fewer than two eligible groups the gaps are NaN.
    """
    y, p = _as_arrays(y, p)
    group_values = np.asarray(groups)
    if len(group_values) != len(y):
        raise ValueError(f"groups have {len(group_values)} rows but there are {len(y)} labels")
    per_group: dict[str, dict[str, float]] = {}
    excluded: list[str] = []
    for value in sorted(pd.unique(group_values), key=str):
        member = group_values == value
        tp, fp, fn, tn = _decision_counts(y[member], p[member] >= threshold)
        if tp + fn < min_positives:
            excluded.append(str(value))
            continue
        per_group[str(value)] = {
            "n": float(member.sum()),
            "positives": float(tp + fn),
            "recall": _ratio(tp, tp + fn),
            "false_positive_rate": _ratio(fp, fp + tn),
        }

    def gap(metric: str) -> float:
        values = [g[metric] for g in per_group.values() if not np.isnan(g[metric])]
        return float(max(values) - min(values)) if len(values) >= 2 else float("nan")

    return {
        "recall_gap": gap("recall"),
        "false_positive_rate_gap": gap("false_positive_rate"),
        "groups": per_group,
        "excluded_groups": excluded,
        "min_positives": min_positives,
    }


def latency_percentiles(
    predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, n_calls: int = 1000, warmup_calls: int = 50
) -> dict[str, float]:
    """Median and 99th-percentile milliseconds of single-row `predict` calls, in the calling thread's CPU
    time.

    The gate judges the model, not the machine: wall-clock time also counts the moments the thread waits
    for a core, so on a busy laptop its p99 measures the other processes. onnxruntime with one intra-op
    thread computes in the calling thread, so the thread's CPU time is the model's own cost. Rows cycle
    through X; the warm-up calls are not timed, so lazy initialisation and cold caches do not count.
    """
    X = np.asarray(X, dtype=np.float32)
    single_rows = [X[i : i + 1] for i in range(len(X))]
    for i in range(warmup_calls):
        predict(single_rows[i % len(single_rows)])
    durations = np.empty(n_calls, dtype=np.float64)
    for i in range(n_calls):
        row = single_rows[i % len(single_rows)]
        start = time.thread_time_ns()
        predict(row)
        durations[i] = time.thread_time_ns() - start
    return {"p50_ms": float(np.percentile(durations, 50) / 1e6), "p99_ms": float(np.percentile(durations, 99) / 1e6)}


def decision_flip_rate(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    threshold: float,
    relative_noise: float = 0.01,
    seed: int = 0,
    numeric_columns: Sequence[int] = NUMERIC_COLUMN_INDEXES,
) -> float:
    """Share of decisions that change when numeric features get relative Gaussian noise.

    Each numeric (non one-hot) value is multiplied by 1 + N(0, relative_noise); one-hot
    columns are left alone so every row stays a valid encoding.
    """
    X = np.asarray(X, dtype=np.float32)
    columns = list(numeric_columns)
    noisy = X.copy()
    rng = np.random.default_rng(seed)
    factors = 1.0 + rng.normal(0.0, relative_noise, size=(len(X), len(columns)))
    noisy[:, columns] = (X[:, columns] * factors).astype(np.float32)
    before = np.asarray(predict(X)) >= threshold
    after = np.asarray(predict(noisy)) >= threshold
    return float(np.mean(before != after))
