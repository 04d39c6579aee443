import math

import numpy as np
import pandas as pd
import pytest

from mlops_core.training import matrix, metrics
from mlops_core.training.onnx_export import native_predict

TINY_Y = np.array([0, 0, 1, 0, 1, 1])
TINY_P = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])


def test_threshold_minimises_cost_on_a_hand_computed_example():
    # Costs with FP=1, FN=20: t=0.1 -> 3 FP = 3; t=0.2 -> 2; t=0.3 -> 1 FP (0.4) = 1;
    # t=0.4 -> 1 FN (0.3) = 20; t=0.8 -> 20; t=0.9 -> 40; nothing -> 60.
    assert metrics.choose_threshold(TINY_Y, TINY_P, 1.0, 20.0) == 0.3
    # A cheap miss (FN=0.5): t=0.3 -> 1; t=0.4 -> 0.5 + 1 = 1.5; t=0.8 misses 0.3 -> 0.5;
    # t=0.9 -> 1.0; nothing -> 1.5. Best is 0.8.
    assert metrics.choose_threshold(TINY_Y, TINY_P, 1.0, 0.5) == 0.8


def test_threshold_breaks_ties_towards_fewer_alerts_and_can_flag_nothing():
    # FN=1: t=0.3 costs 1 (one FP) and t=0.8 costs 1 (one FN): the higher threshold wins.
    assert metrics.choose_threshold(TINY_Y, TINY_P, 1.0, 1.0) == 0.8
    no_fraud = metrics.choose_threshold(np.zeros(4), np.array([0.2, 0.5, 0.5, 0.9]))
    assert no_fraud > 0.9


def test_threshold_does_not_depend_on_row_order():
    order = np.random.default_rng(0).permutation(len(TINY_Y))
    for fn_cost in (0.5, 1.0, 20.0):
        assert metrics.choose_threshold(TINY_Y[order], TINY_P[order], 1.0, fn_cost) == metrics.choose_threshold(
            TINY_Y, TINY_P, 1.0, fn_cost
        )


def test_classification_metrics_on_a_hand_computed_example():
    result = metrics.classification_metrics(TINY_Y, TINY_P, 0.35)
    # Flagged: 0.4 (FP), 0.8 and 0.9 (TP); missed: 0.3.
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["false_positive_rate"] == pytest.approx(1 / 3)
    assert result["positive_rate"] == pytest.approx(0.5)
    assert result["auc_roc"] == pytest.approx(8 / 9)
    assert result["brier"] == pytest.approx(np.mean((TINY_P - TINY_Y) ** 2))
    assert (result["n"], result["positives"]) == (6.0, 3.0)


def test_single_class_split_gives_nan_instead_of_crashing():
    result = metrics.classification_metrics(np.zeros(5), np.linspace(0.1, 0.5, 5), 0.3)
    assert math.isnan(result["auc_roc"]) and math.isnan(result["auc_pr"]) and math.isnan(result["recall"])
    assert result["false_positive_rate"] == pytest.approx(0.6)
    assert math.isfinite(result["log_loss"])


def test_calibration_error_is_small_for_calibrated_scores_and_large_for_inflated_ones():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    calibrated = metrics.classification_metrics(y, p, 0.5)["expected_calibration_error"]
    inflated = metrics.classification_metrics(y, np.minimum(p + 0.3, 1.0), 0.5)["expected_calibration_error"]
    assert calibrated < 0.02
    assert inflated > 0.2


def test_segment_metrics_partition_every_segment(training_frame, splits, xgboost_model):
    X_test, y_test = splits["test"]
    p = native_predict(xgboost_model, X_test)
    segments = training_frame.loc[training_frame["split"] == "test", ["age_band", "merchant_category"]]
    table = metrics.segment_metrics(y_test, p, 0.5, segments)
    assert list(table.columns) == [
        "segment",
        "value",
        "n",
        "positives",
        "recall",
        "false_positive_rate",
        "precision",
        "auc_pr",
    ]
    for column in segments.columns:
        part = table[table["segment"] == column]
        assert set(part["value"]) == set(segments[column])
        assert part["n"].sum() == len(y_test) and part["positives"].sum() == y_test.sum()
    travel = table[(table["segment"] == "merchant_category") & (table["value"] == "travel")].iloc[0]
    member = segments["merchant_category"].to_numpy() == "travel"
    expected = metrics.classification_metrics(y_test[member], p[member], 0.5)
    assert travel["n"] == member.sum()
    np.testing.assert_equal(travel["false_positive_rate"], expected["false_positive_rate"])
    np.testing.assert_equal(travel["recall"], expected["recall"])


def test_fairness_gap_is_large_for_a_biased_predictor_and_zero_for_a_fair_one():
    groups = pd.Series(["a"] * 100 + ["b"] * 100 + ["c"] * 10)
    y = np.zeros(210, dtype=int)
    y[[0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 105, 200]] = 1
    fair = metrics.fairness_gaps(y, y.astype(float), 0.5, groups)
    assert fair["recall_gap"] == 0.0 and fair["false_positive_rate_gap"] == 0.0
    # Biased: catches every fraud in group a, none in b, and flags 20 innocent b rows.
    biased_scores = np.where(groups == "a", y, 0).astype(float)
    biased_scores[110:130] = 1.0
    biased = metrics.fairness_gaps(y, biased_scores, 0.5, groups)
    assert biased["recall_gap"] == pytest.approx(1.0)
    assert biased["false_positive_rate_gap"] == pytest.approx(20 / 94)
    assert set(biased["groups"]) == {"a", "b"} and biased["excluded_groups"] == ["c"]


def test_latency_percentiles_time_single_row_calls():
    shapes = []
    result = metrics.latency_percentiles(
        lambda X: shapes.append(X.shape) or np.zeros(len(X)), np.zeros((7, 3)), n_calls=100
    )
    assert set(shapes) == {(1, 3)} and len(shapes) == 100 + 50
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_decision_flip_rate_is_zero_without_noise_and_grows_with_it(splits, xgboost_model):
    X_test = splits["test"][0]
    predict = lambda X: native_predict(xgboost_model, X)  # noqa: E731
    assert metrics.decision_flip_rate(predict, X_test, 0.5, relative_noise=0.0) == 0.0
    assert metrics.decision_flip_rate(predict, X_test, 0.5, relative_noise=0.5) > 0.0


def test_decision_flip_rate_leaves_one_hot_columns_alone():
    seen = []
    X = np.ones((4, len(matrix.FEATURE_COLUMNS)), dtype=np.float32)
    metrics.decision_flip_rate(lambda X: seen.append(X.copy()) or np.zeros(len(X)), X, 0.5, relative_noise=0.1)
    one_hot = slice(len(matrix.NUMERIC_COLUMN_INDEXES), None)
    np.testing.assert_array_equal(seen[1][:, one_hot], 1.0)
    assert not np.array_equal(
        seen[1][:, : len(matrix.NUMERIC_COLUMN_INDEXES)], X[:, : len(matrix.NUMERIC_COLUMN_INDEXES)]
    )
