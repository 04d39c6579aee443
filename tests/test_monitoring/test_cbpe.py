"""Calibrated CBPE against known answers: exact expected metrics on tiny inputs, estimates that match the
realized metrics on calibrated data and, after calibration, on badly inflated scores, and bounds that hold
the realized value about as often as they claim."""

import math

import numpy as np
import pytest

from mlops_core.monitoring.cbpe import (
    CalibratedCBPE,
    expected_average_precision,
    expected_precision_recall,
    expected_roc_auc,
    realized,
)


def test_expected_curves_give_the_exact_answers_on_tiny_inputs():
    assert expected_roc_auc(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert expected_roc_auc(np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    # Two rows, p=0.8 ranked above p=0.2: positives weigh 1.0, negatives 1.0; the expected ROC curve rises
    # to TPR 0.8 at FPR 0.2, then to (1, 1): area 0.8 * 0.2 / 2 + 0.8 * (0.9) = 0.8.
    assert expected_roc_auc(np.array([0.8, 0.2])) == pytest.approx(0.8)
    assert expected_average_precision(np.array([1.0, 0.0])) == pytest.approx(1.0)
    # A certain fraud ranked above a coin flip: precision 1 at recall 1/1.5, then 1.5/2 at recall 1.
    assert expected_average_precision(np.array([1.0, 0.5])) == pytest.approx((1 / 1.5) * 1.0 + (0.5 / 1.5) * 0.75)
    # Ranked by the model's scores, not by p: the same probabilities in the wrong order rank worse.
    assert expected_average_precision(np.array([1.0, 0.5]), scores=np.array([0.1, 0.9])) == pytest.approx(
        (0.5 / 1.5) * 0.5 + (1 / 1.5) * 0.75
    )
    assert math.isnan(expected_roc_auc(np.zeros(3)))


def _population(rng, n):
    """Calibrated probabilities with ~3% positives and a long tail, like a fraud model's."""
    p = rng.beta(0.3, 9.0, n)
    return p, rng.random(n) < p


def test_on_calibrated_scores_the_estimates_match_the_realized_metrics_and_the_bounds_cover_them():
    """Per metric over 25 windows: no bias beyond a quarter of the bound's half-width (2.7 standard errors
    of the mean), a typical error well inside the bound, and the bound holding the realized value about
    95% of the time."""
    rng = np.random.default_rng(0)
    reference_p, reference_y = _population(rng, 20_000)
    cbpe = CalibratedCBPE(draws=80).fit(reference_p, reference_y)
    assert not cbpe.calibrated  # calibrated scores: isotonic steps would only add noise
    signed = {m: [] for m in ("roc_auc", "auc_pr", "precision", "recall")}
    half_widths = {m: [] for m in signed}
    covered, judged = 0, 0
    for _ in range(25):
        p, y = _population(rng, 3000)
        estimates = cbpe.estimate(p, threshold=0.2)
        truth = realized(y, p, p >= 0.2)
        for metric, estimate in estimates.items():
            signed[metric].append(estimate.value - truth[metric])
            half_widths[metric].append((estimate.high - estimate.low) / 2)
            judged += 1
            covered += estimate.low <= truth[metric] <= estimate.high
    for metric, errors in signed.items():
        half = np.mean(half_widths[metric])
        assert abs(np.mean(errors)) < 0.25 * half, (metric, np.mean(errors), half)
        assert np.mean(np.abs(errors)) < 0.6 * half, (metric, np.mean(np.abs(errors)), half)
    assert 0.85 <= covered / judged <= 1.0, covered / judged


def test_inflated_scores_mislead_the_plain_estimate_and_calibration_on_the_reference_repairs_it():
    """The model's scores are sqrt(probability): ranking intact, probabilities far too high, as a model
    trained on balanced classes gives. Without calibration the estimated precision is far off."""
    rng = np.random.default_rng(1)
    reference_p, reference_y = _population(rng, 20_000)
    p, y = _population(rng, 5000)
    scores, threshold = np.sqrt(p), 0.45
    truth = realized(y, scores, scores >= threshold)
    plain = CalibratedCBPE(calibrate=False, draws=20).estimate(scores, threshold)
    cbpe = CalibratedCBPE(draws=20).fit(np.sqrt(reference_p), reference_y)
    assert cbpe.calibrated
    fitted = cbpe.estimate(scores, threshold)
    for metric in ("precision", "recall", "auc_pr"):
        plain_error = abs(plain[metric].value - truth[metric])
        fitted_error = abs(fitted[metric].value - truth[metric])
        assert fitted_error < 0.05 and fitted_error * 3 < plain_error, (metric, plain_error, fitted_error)
    # Calibration is monotone: the ranking, and so the realized ROC AUC, is the model's own.
    assert abs(fitted["roc_auc"].value - truth["roc_auc"]) < 0.03


def test_a_reference_without_both_classes_or_with_mismatched_lengths_is_refused():
    with pytest.raises(ValueError, match="both fraud and legitimate"):
        CalibratedCBPE().fit(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        CalibratedCBPE().fit(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="fit the estimator"):
        CalibratedCBPE().estimate(np.array([0.1]), 0.5)


def test_a_hand_computed_example():
    p = np.array([0.1, 0.2, 0.5, 0.8, 0.9])
    # Flagged 0.5, 0.8, 0.9: expected TP 2.2 of 3 flagged, of 2.5 expected frauds.
    assert expected_precision_recall(p, p >= 0.5) == (pytest.approx(2.2 / 3), pytest.approx(2.2 / 2.5))
    # Precision at each cut (0.9, 1.7/2, 2.2/3, 2.4/4, 2.5/5) times the recall step p / 2.5.
    assert expected_average_precision(p) == pytest.approx(
        0.9 * 0.36 + 0.85 * 0.32 + 2.2 / 3 * 0.2 + 0.6 * 0.08 + 0.5 * 0.04
    )
    # The same as sklearn's AP with each row once as fraud (weight p) and once as not (1 - p), ties included.
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.beta(0.3, 8, 500), 3)
    y, w = np.r_[np.ones(500), np.zeros(500)], np.r_[scores, 1 - scores]
    assert expected_average_precision(scores) == pytest.approx(
        average_precision_score(y, np.r_[scores, scores], sample_weight=w), rel=1e-9
    )
    assert expected_roc_auc(scores) == pytest.approx(roc_auc_score(y, np.r_[scores, scores], sample_weight=w), rel=1e-9)
