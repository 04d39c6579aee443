"""Training from the warehouse in batches (`in_batches`, `candidates.fit_from_warehouse`).

The promise: the same rows, in the same order, reach XGBoost as in the in-memory `fit`, whatever the batch
size, so on data whose quantile sketch is exact the trees, threshold, refit and bookkeeping are the same.
The table is written shuffled, with ties in event_timestamp, so an unordered read or a batch boundary that
drops or repeats a row changes the model."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from synthetic_training_set import make_training_frame, warehouse_of

from mlops_core.training import in_batches, matrix
from mlops_core.training.candidates import fit, fit_from_warehouse
from mlops_core.training.models import XGBoostParams

TABLE = "features.training_set"
PARAMS = XGBoostParams(n_estimators=60, scale_pos_weight=None)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    frame = make_training_frame(n_rows=4000, seed=5)
    # Ties: pairs of rows share an instant, so only transaction_id orders them.
    frame["event_timestamp"] = frame["event_timestamp"].dt.floor("2h")
    return frame.sort_values(["event_timestamp", "transaction_id"], ignore_index=True)


@pytest.fixture()
def con(frame):
    con = warehouse_of(frame, TABLE, seed=3)
    yield con
    con.close()


def test_batches_hold_every_row_once_in_the_training_order_at_any_batch_size(frame, con):
    train = frame[frame["split"] == "train"]
    assert train["event_timestamp"].duplicated().sum() > 100, "the history must have ties for the order to matter"
    for batch_rows in (1_000_000, 997, 64, 1):
        batches = list(in_batches.encoded_batches(con, TABLE, ["train"], batch_rows=batch_rows))
        assert max(len(X) for X, _ in batches) <= batch_rows
        np.testing.assert_array_equal(np.vstack([X for X, _ in batches]), matrix.encode(train))
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), matrix.labels(train))
    assert in_batches.split_counts(con, TABLE, ["train", "validation"]) == (
        int(frame["split"].isin(["train", "validation"]).sum()),
        int(frame.loc[frame["split"].isin(["train", "validation"]), "is_fraud"].sum()),
    )


@pytest.mark.parametrize("refit", [False, True])
def test_training_in_batches_gives_the_in_memory_model(frame, con, refit):
    expected = fit(frame, "xgboost", "v1", xgboost_params=PARAMS, refit=refit)
    X_test = matrix.encode(frame[frame["split"] == "test"])
    for batch_rows in (100_000, 333):
        trained, validation = fit_from_warehouse(
            con, TABLE, "v1", xgboost_params=PARAMS, refit=refit, batch_rows=batch_rows
        )
        assert trained.best_iteration == expected.best_iteration
        assert trained.threshold == expected.threshold
        assert trained.trained_through == expected.trained_through
        assert trained.refit == refit
        assert trained.validation_metrics == expected.validation_metrics
        np.testing.assert_array_equal(trained.scorer().predict(X_test), expected.scorer().predict(X_test))
        np.testing.assert_array_equal(
            trained.evaluated_scorer().predict(X_test), expected.evaluated_scorer().predict(X_test)
        )
        assert trained.onnx_max_difference < 1e-5
        assert list(trained.feature_importance) == list(expected.feature_importance)
        assert (validation["split"] == "validation").all() and len(validation) == (frame["split"] == "validation").sum()
    if refit:
        # The refit learnt from the test rows: its scores there differ from the early-stopped model's.
        assert not np.array_equal(trained.scorer().predict(X_test), trained.evaluated_scorer().predict(X_test))
        assert trained.trained_through == frame["event_timestamp"].max().isoformat()


def test_one_row_lost_at_a_batch_boundary_changes_the_model(frame, con, monkeypatch):
    """The comparison above can fail: dropping the first row of every other batch gives other trees."""
    expected = fit(frame, "xgboost", "v1", xgboost_params=PARAMS)
    original = in_batches.encoded_batches

    def lossy(*args, **kwargs):
        for i, (X, y) in enumerate(original(*args, **kwargs)):
            yield (X[1:], y[1:]) if i % 2 else (X, y)

    monkeypatch.setattr(in_batches, "encoded_batches", lossy)
    trained, _ = fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS, batch_rows=500)
    X_test = matrix.encode(frame[frame["split"] == "test"])
    assert not np.array_equal(trained.scorer().predict(X_test), expected.scorer().predict(X_test))


def test_bad_inputs_are_named(con):
    with pytest.raises(ValueError, match=r"splits must be some of train, validation, test, early; got \['trian'\]"):
        in_batches.split_counts(con, TABLE, ["trian"])
    with pytest.raises(ValueError, match="batch_rows must be >= 1, got 0"):
        next(in_batches.encoded_batches(con, TABLE, ["train"], batch_rows=0))
    con.execute(f"update {TABLE} set is_fraud = false where split = 'train'")
    with pytest.raises(ValueError, match=r"train: needs both fraud and non-fraud rows, got only \[0\]"):
        fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS)
    con.execute(f"delete from {TABLE} where split = 'test'")
    with pytest.raises(ValueError, match="no rows in split 'test'"):
        fit_from_warehouse(con, TABLE, "v1", xgboost_params=dataclasses.replace(PARAMS))


def test_split_windows_counted_by_duckdb_are_the_frames(frame, con):
    """The evaluation's model card takes its split windows from DuckDB; they must read as the frame's did."""
    from mlops_core.training.model_card import split_windows

    assert in_batches.split_windows_in(con, TABLE) == split_windows(frame)
    con.execute(f"update {TABLE} set is_fraud = true where transaction_id = (select max(transaction_id) from {TABLE})")
    changed = frame.copy()
    changed.loc[changed["transaction_id"].idxmax(), "is_fraud"] = True
    assert in_batches.split_windows_in(con, TABLE) == split_windows(changed) != split_windows(frame)
