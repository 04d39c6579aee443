"""Training with the early frauds (split 'early': confirmed before their transactions matured).

The early-stopped model the gates judge learns them with the train split, so a pattern that so far exists
only in the newest days reaches it; the test rows are still ones it never saw. What it learnt from is
recorded in two parts, the newest mature event and the newest early verdict, and a champion is compared
only on the test rows outside both, in memory and from the warehouse alike."""

import numpy as np
import pandas as pd
import pytest
from synthetic_training_set import make_training_frame, warehouse_of

from mlops_core.training import matrix, metrics
from mlops_core.training.candidates import fit, fit_from_warehouse, split, unseen_by
from mlops_core.training.models import XGBoostParams

PARAMS = XGBoostParams(scale_pos_weight=1.0)
TABLE = "features.training_set"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Grocery card testing appears only in the test split and in 150 early frauds newer than every mature row."""
    frame = make_training_frame(n_rows=5000, seed=11)
    is_test = frame["split"] == "test"
    grocery = frame["merchant_category"] == "grocery"
    frame.loc[~is_test & grocery, "merchant_category"] = "electronics"
    pattern = is_test & grocery
    frame.loc[pattern, "is_fraud"] = np.random.default_rng(1).random(int(pattern.sum())) < 0.7
    early = make_training_frame(n_rows=150, seed=12)
    early["merchant_category"] = "grocery"
    early["is_fraud"] = True
    newest = frame["event_timestamp"].max()
    early["event_timestamp"] = newest + pd.to_timedelta(np.arange(1, 151) * 600, unit="s")
    early["labeled_at"] = early["event_timestamp"] + pd.to_timedelta(np.arange(150) % 7 * 3600 + 1800, unit="s")
    early["transaction_id"] = [f"e{i:04d}" for i in range(150)]
    early["split"] = "early"
    return pd.concat([frame, early], ignore_index=True)


@pytest.fixture(scope="module")
def with_early(frame):
    return fit(frame, "xgboost", "v", xgboost_params=PARAMS, refit=True)


@pytest.fixture(scope="module")
def without_early(frame):
    return fit(frame[frame["split"] != "early"], "xgboost", "v", xgboost_params=PARAMS, refit=True)


def test_the_evaluated_model_learns_the_early_frauds_and_is_judged_on_rows_it_never_saw(
    frame, with_early, without_early
):
    test = split(frame, "test")
    X, y = matrix.encode(test), matrix.labels(test)
    learnt = metrics.classification_metrics(y, with_early.evaluated_scorer().predict(X), with_early.threshold)
    blind = metrics.classification_metrics(y, without_early.evaluated_scorer().predict(X), without_early.threshold)
    # The pattern is a third of the test split's frauds: learnt from the early frauds, it is caught.
    assert learnt["auc_pr"] > blind["auc_pr"] + 0.1, (learnt["auc_pr"], blind["auc_pr"])
    assert not set(test["transaction_id"]) & set(frame.loc[frame["split"] == "early", "transaction_id"])


def test_what_it_learnt_from_is_the_newest_mature_event_and_the_newest_early_verdict(frame, with_early, without_early):
    mature = frame[frame["split"] != "early"]
    early = frame[frame["split"] == "early"]
    assert with_early.trained_through == pd.Timestamp(mature["event_timestamp"].max()).isoformat()
    assert with_early.trained_through < pd.Timestamp(early["event_timestamp"].min()).isoformat()
    assert with_early.early_frauds_through == pd.Timestamp(early["labeled_at"].max()).isoformat()
    assert without_early.early_frauds_through is None
    plain = fit(frame, "xgboost", "v", xgboost_params=PARAMS)
    assert plain.trained_through == pd.Timestamp(split(frame, "train")["event_timestamp"].max()).isoformat()
    assert plain.early_frauds_through == with_early.early_frauds_through


def test_the_warehouse_path_learns_and_records_the_same(frame, with_early):
    con = warehouse_of(frame, TABLE)
    try:
        batched, _ = fit_from_warehouse(con, TABLE, "v", xgboost_params=PARAMS, refit=True, batch_rows=700)
    finally:
        con.close()
    assert batched.trained_through == with_early.trained_through
    assert batched.early_frauds_through == with_early.early_frauds_through
    grocery = matrix.encode(frame[frame["merchant_category"] == "grocery"].head(300))
    # Same rows, same order, same parameters: the in-memory and batched fits agree.
    np.testing.assert_allclose(
        batched.evaluated_scorer().predict(grocery), with_early.evaluated_scorer().predict(grocery), atol=1e-5
    )


def test_unseen_by_leaves_out_the_frauds_a_champion_learnt_early():
    bound, early_through = "2024-03-01T12:00:00", "2024-03-05T08:00:00"
    test = pd.DataFrame(
        {
            "event_timestamp": pd.to_datetime(
                ["2024-03-01 11:00", "2024-03-02 00:00", "2024-03-02 01:00", "2024-03-02 02:00", "2024-03-02 03:00"]
            ),
            "is_fraud": [True, True, True, False, True],
            "labeled_at": pd.to_datetime(
                [
                    "2024-03-02 00:00:00.000000",  # before the bound: seen as a mature row anyway
                    "2024-03-05 08:00:00.000000",  # at the early bound: learnt
                    "2024-03-05 08:00:00.000001",  # a microsecond later: not learnt
                    "2024-03-03 00:00:00.000000",  # a legitimate verdict: never an early row
                    "2024-03-02 05:00:00.000000",  # well before the early bound: learnt
                ]
            ),
        }
    )
    assert unseen_by(test, bound).tolist() == [False, True, True, True, True]
    assert unseen_by(test, bound, early_through).tolist() == [False, False, True, True, False]
    assert unseen_by(test, bound, early_through + "+00:00").tolist() == [False, False, True, True, False]
    assert unseen_by(test, None, early_through).tolist() == [True] * 5
