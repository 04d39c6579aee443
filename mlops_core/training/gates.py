"""Quality gates a candidate model must pass before it may become challenger.

Each gate is a pure function of numbers measured on the frozen test set (and, for the
regression gate, the current champion's numbers on the same set). It returns a
GateOutcome whose detail states the measured value and the bound, so a failed gate
explains itself. The Dagster checks in mlops_assets/training/ only wrap these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlops_core.training.report import GateOutcome

GATE_MINIMUMS = "gate_minimum_quality"
GATE_NO_REGRESSION = "gate_no_regression_vs_champion"
GATE_FAIRNESS = "gate_fairness_age_band"
GATE_LATENCY = "gate_latency_slo"
GATE_ROBUSTNESS = "gate_robustness"
GATE_BEHAVIOUR = "gate_behavioural_expectations"
GATE_ONNX_PARITY = "gate_onnx_parity"
GATE_CALIBRATION = "gate_calibration"
GATES = (
    GATE_MINIMUMS,
    GATE_NO_REGRESSION,
    GATE_FAIRNESS,
    GATE_LATENCY,
    GATE_ROBUSTNESS,
    GATE_BEHAVIOUR,
    GATE_ONNX_PARITY,
    GATE_CALIBRATION,
)
GATE_DESCRIPTIONS = {
    GATE_MINIMUMS: "AUC-PR and recall at the operating threshold reach their minimums.",
    GATE_NO_REGRESSION: "AUC-PR is not worse than the champion's on the same test set beyond the tolerance.",
    GATE_FAIRNESS: "Recall and false-positive-rate gaps across age bands stay within bounds.",
    GATE_LATENCY: "Single-row ONNX scoring p99 is within the latency SLO.",
    GATE_ROBUSTNESS: "1% noise on numeric inputs flips few decisions.",
    GATE_BEHAVIOUR: "Scores move in the directions fraud domain knowledge expects.",
    GATE_ONNX_PARITY: "The ONNX model's probabilities equal the native model's within 1e-5.",
    GATE_CALIBRATION: "Expected calibration error is within the bound.",
}


@dataclass(frozen=True)
class GateThresholds:
    min_auc_pr: float = 0.3
    min_recall: float = 0.3
    max_auc_pr_regression: float = 0.02
    max_recall_gap: float = 0.35
    # Recall of a band with few frauds is mostly noise: bands below this are not compared.
    fairness_min_positives: int = 10
    max_false_positive_rate_gap: float = 0.05
    max_p99_latency_ms: float = 5.0
    max_flip_rate: float = 0.02
    max_onnx_difference: float = 1e-5
    max_calibration_error: float = 0.02


def _nan(value: float) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def minimum_quality(metrics: dict[str, float], t: GateThresholds) -> GateOutcome:
    auc_pr, recall = metrics.get("auc_pr", float("nan")), metrics.get("recall", float("nan"))
    passed = not _nan(auc_pr) and not _nan(recall) and auc_pr >= t.min_auc_pr and recall >= t.min_recall
    return GateOutcome(
        GATE_MINIMUMS, passed, f"AUC-PR {auc_pr:.4f} (min {t.min_auc_pr}), recall {recall:.4f} (min {t.min_recall})"
    )


def no_regression(candidate: dict[str, float], champion: dict[str, float] | None, t: GateThresholds) -> GateOutcome:
    if champion is None:
        return GateOutcome(GATE_NO_REGRESSION, True, "No champion yet: nothing to regress against.")
    drop = champion["auc_pr"] - candidate["auc_pr"]
    return GateOutcome(
        GATE_NO_REGRESSION,
        drop <= t.max_auc_pr_regression,
        f"AUC-PR {candidate['auc_pr']:.4f} vs champion {champion['auc_pr']:.4f} on the same test set: "
        f"drop {drop:+.4f} (tolerance {t.max_auc_pr_regression})",
    )


def fairness(gaps: dict[str, object], t: GateThresholds) -> GateOutcome:
    recall_gap, fpr_gap = float(gaps["recall_gap"]), float(gaps["false_positive_rate_gap"])
    passed = not _nan(recall_gap) and not _nan(fpr_gap) and recall_gap <= t.max_recall_gap and fpr_gap <= t.max_false_positive_rate_gap
    return GateOutcome(
        GATE_FAIRNESS,
        passed,
        f"recall gap {recall_gap:.4f} (max {t.max_recall_gap}), false-positive-rate gap {fpr_gap:.4f} "
        f"(max {t.max_false_positive_rate_gap}) across age bands with >= {t.fairness_min_positives} frauds",
    )


def latency(percentiles: dict[str, float], t: GateThresholds) -> GateOutcome:
    p99 = percentiles["p99_ms"]
    return GateOutcome(GATE_LATENCY, p99 <= t.max_p99_latency_ms, f"single-row p99 {p99:.3f} ms (SLO {t.max_p99_latency_ms} ms)")


def robustness(flip_rate: float, t: GateThresholds) -> GateOutcome:
    return GateOutcome(
        GATE_ROBUSTNESS, flip_rate <= t.max_flip_rate, f"{flip_rate:.2%} of decisions flip under 1% input noise (max {t.max_flip_rate:.0%})"
    )


def onnx_parity(max_difference: float, t: GateThresholds) -> GateOutcome:
    passed = not _nan(max_difference) and max_difference <= t.max_onnx_difference
    return GateOutcome(GATE_ONNX_PARITY, passed, f"max |ONNX - native| = {max_difference:.2e} (max {t.max_onnx_difference:.0e})")


def calibration(metrics: dict[str, float], t: GateThresholds) -> GateOutcome:
    ece = metrics.get("expected_calibration_error", float("nan"))
    return GateOutcome(
        GATE_CALIBRATION, not _nan(ece) and ece <= t.max_calibration_error, f"expected calibration error {ece:.4f} (max {t.max_calibration_error})"
    )


@dataclass(frozen=True)
class Expectation:
    """A directional test: moving `feature` by `change` should not lower the mean score."""

    description: str
    feature: str
    change: Callable[[np.ndarray], np.ndarray]


# What fraud looks like in card data (and in the demo generator): bursts of
# transactions, foreign merchants, card-not-present payments.
EXPECTATIONS = (
    Expectation("a burst: 3 more transactions in the last hour", "txn_count_1h", lambda v: v + 3),
    Expectation("a foreign merchant instead of a domestic one", "is_foreign", lambda v: np.ones_like(v)),
    Expectation("an online payment instead of in store", "is_online", lambda v: np.ones_like(v)),
)


def behavioural(results: list[tuple[str, float, float]]) -> GateOutcome:
    """`results`: (description, mean score before, mean score after) per expectation."""
    failed = [f"{d}: mean score {before:.4f} -> {after:.4f}" for d, before, after in results if after < before]
    detail = "; ".join(failed) if failed else "; ".join(f"{d}: {before:.4f} -> {after:.4f}" for d, before, after in results)
    return GateOutcome(GATE_BEHAVIOUR, not failed, ("moved the wrong way: " if failed else "") + detail)
