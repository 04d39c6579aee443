"""Training on the newest labels: the refit after early stopping, and how the gates judge it.

The registered model learns from every split; the test metrics, and so the quality gates, stay those of the
early-stopped model that never saw the test rows; latency, robustness, behaviour and ONNX parity are
judged on the model that is registered; a champion is compared only on rows it did not learn from."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from synthetic_training_set import make_training_frame

from mlops_core.training import gates as g
from mlops_core.training import matrix
from mlops_core.training.candidates import evaluate, fit, split, unseen_by
from mlops_core.training.models import XGBoostParams

PARAMS = XGBoostParams(scale_pos_weight=1.0)
OPEN = g.GateThresholds(
    min_auc_pr=0.0, min_recall=0.0, max_recall_gap=1.0, max_false_positive_rate_gap=1.0, max_calibration_error=1.0
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Grocery purchases exist only in the test split (the newest rows) and most are fraud."""
    frame = make_training_frame(n_rows=5000, seed=11)
    # The raw fields the evaluation segments by, as the warehouse's training set carries them.
    rng = np.random.default_rng(2)
    frame["channel"] = rng.choice(["online", "in_store"], len(frame))
    frame["country"] = rng.choice(["US", "GB"], len(frame))
    is_test = frame["split"] == "test"
    grocery = frame["merchant_category"] == "grocery"
    frame.loc[~is_test & grocery, "merchant_category"] = "electronics"
    pattern = is_test & grocery
    frame.loc[pattern, "is_fraud"] = np.random.default_rng(1).random(int(pattern.sum())) < 0.7
    return frame


@pytest.fixture(scope="module")
def refit(frame):
    return fit(frame, "xgboost", "v", xgboost_params=PARAMS, refit=True)


@pytest.fixture(scope="module")
def plain(frame):
    return fit(frame, "xgboost", "v", xgboost_params=PARAMS)


def test_the_registered_model_learns_the_newest_rows_and_the_evaluated_one_is_the_plain_fit(frame, refit, plain):
    grocery = matrix.encode(frame[frame["merchant_category"] == "grocery"])
    assert refit.refit and not plain.refit
    served, evaluated = refit.scorer().predict(grocery).mean(), refit.evaluated_scorer().predict(grocery).mean()
    assert served > 0.3 and served > 3 * evaluated, (served, evaluated)
    # The evaluated model is exactly the plain early-stopped fit: same threshold, same scores.
    X = matrix.encode(frame)
    np.testing.assert_array_equal(refit.evaluated_scorer().predict(X), plain.scorer().predict(X))
    assert refit.threshold == plain.threshold and refit.best_iteration == plain.best_iteration
    assert refit.trained_through == pd.Timestamp(frame["event_timestamp"].max()).isoformat()
    assert plain.trained_through == pd.Timestamp(split(frame, "train")["event_timestamp"].max()).isoformat()


def test_quality_is_judged_on_the_evaluated_model_and_parity_on_the_registered_one(frame, refit, plain):
    test = split(frame, "test")
    judged = evaluate(refit, test, OPEN, latency_calls=50)
    baseline = evaluate(plain, test, OPEN, latency_calls=50)
    # Had the refit model been scored on rows it learnt, its AUC-PR on the new pattern would be far higher.
    assert judged.test_metrics == baseline.test_metrics
    on_seen = evaluate(dataclasses.replace(plain, onnx=refit.onnx), test, OPEN, latency_calls=50)
    assert on_seen.test_metrics["auc_pr"] > judged.test_metrics["auc_pr"] + 0.05
    # Parity was measured on the registered (refit) graph against its own native model.
    assert judged.outcomes[g.GATE_ONNX_PARITY].passed and refit.onnx_max_difference < 1e-4


def test_unseen_by_keeps_only_rows_after_the_bound():
    test = pd.DataFrame(
        {"event_timestamp": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 12:00", "2024-03-02 00:00"])}
    )
    assert unseen_by(test, None).tolist() == [True, True, True]
    assert unseen_by(test, "2024-03-01T12:00:00").tolist() == [False, False, True]
    assert unseen_by(test, "2024-03-01T11:59:59.999999+00:00").tolist() == [False, True, True]


def test_the_champion_is_compared_only_on_rows_it_did_not_learn(frame, refit, plain):
    """The refit champion learnt every test row: compared there it would win by memory. On the newest half
    it is compared on that half only; with nothing after its data the gate says so and fails."""
    test = split(frame, "test")
    champion = ("champion (version 1)", refit.scorer(), refit.threshold)
    middle = pd.Timestamp(test["event_timestamp"].iloc[len(test) // 2]).isoformat()
    half = evaluate(plain, test, OPEN, champion=champion, latency_calls=50, champion_trained_through=middle)
    compared = half.report.others[0]
    assert len(compared.y) == int(unseen_by(test, middle).sum()) < len(test)
    assert "test rows after its training data" in compared.name
    none_left = evaluate(
        plain, test, OPEN, champion=champion, latency_calls=50, champion_trained_through=refit.trained_through
    )
    outcome = none_left.outcomes[g.GATE_NO_REGRESSION]
    assert not outcome.passed and "neither learnt from" in outcome.detail
    # Retrained on the champion's own data (other parameters): compared with the champion's recorded test metrics.
    recorded = evaluate(
        plain,
        test,
        OPEN,
        champion=champion,
        latency_calls=50,
        champion_trained_through=refit.trained_through,
        champion_recorded={"auc_pr": none_left.test_metrics["auc_pr"] + 0.5},
    )
    outcome = recorded.outcomes[g.GATE_NO_REGRESSION]
    assert not outcome.passed and f"{none_left.test_metrics['auc_pr'] + 0.5:.4f}" in outcome.detail
    unknown = evaluate(plain, test, OPEN, champion=champion, latency_calls=50)
    assert len(unknown.report.others[0].y) == len(test)


def test_a_full_collection_precedes_the_refit_only_when_the_first_fit_leaves_enough_to_free(frame, monkeypatch):
    """At 8.77M rows the first fit's leftovers are the refit's peak and are collected first; on a small set a
    full collection (0.2-0.3 s beside Dagster and MLflow) costs more than the fit, so none is made."""
    import gc

    from mlops_core.training import candidates

    collections: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(1) or 0)
    rows = int((frame["split"].isin(["validation", "test"])).sum())
    monkeypatch.setattr(candidates, "COLLECT_BEFORE_REFIT_ROWS", rows + 1)
    fit(frame, "xgboost", "v", xgboost_params=PARAMS, refit=True)
    assert collections == []
    monkeypatch.setattr(candidates, "COLLECT_BEFORE_REFIT_ROWS", rows)
    fit(frame, "xgboost", "v", xgboost_params=PARAMS, refit=True)
    assert collections == [1]
    # A fit without a refit never collects, whatever its size.
    fit(frame, "xgboost", "v", xgboost_params=PARAMS)
    assert collections == [1]
