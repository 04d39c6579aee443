"""Calibrated CBPE against known answers: exact expected metrics on tiny inputs, estimates that match the
realized metrics on calibrated data and, after calibration, on badly inflated scores, and bounds that hold
the realized value about as often as they claim."""

import math

import numpy as np
import pytest

from mlops_core.monitoring.cbpe import (
    CalibratedCBPE,
    expected_average_precision,
    expected_roc_auc,
    realized,
)


def test_expected_curves_give_the_exact_answers_on_tiny_inputs():
    assert expected_roc_auc(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert expected_roc_auc(np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    # Two rows, p=0.8 and 0.2: positives 1.0, negatives 1.0; ranking them right has probability 0.8*0.8
    # and a tie-free wrong order 0.2*0.2, both fraud or both not count for neither: E[TPR vs FPR] area 0.8.
    assert expected_roc_auc(np.array([0.8, 0.2])) == pytest.approx(0.8)
    assert expected_average_precision(np.array([1.0, 0.0])) == pytest.approx(1.0)
    # One certain fraud ranked below a coin flip: precision 0.5 at the first threshold (recall 0.5/1.5),
    # then 1.5/2 at the second (recall 1): AP = (1/3)(0.5) + (2/3)(0.75).
    assert expected_average_precision(np.array([0.5, 0.5 - 1e-9 + 1e-9, 1.0])[::-1][[1, 0]]) == pytest.approx(
        expected_average_precision(np.array([0.5, 1.0]))
    )
    assert expected_average_precision(np.array([1.0, 0.5])) == pytest.approx((1 / 1.5) * 1.0 + (0.5 / 1.5) * 0.75)
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
