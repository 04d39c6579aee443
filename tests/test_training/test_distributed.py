"""Training on a Dask cluster (`distributed`, `fit_from_warehouse(dask=...)`), on LocalClusters bound to loopback.

One worker sees every batch in order, as the in-process fit does, so it must give the same trees; two workers
split the rows, so their model may differ slightly, but it must learn the same signal, be the same model for
the same worker count, and carry the same bookkeeping (trained_through, refit)."""

import numpy as np
import pytest
from synthetic_training_set import make_training_frame, warehouse_of

from mlops_core.training import matrix, metrics
from mlops_core.training.candidates import DaskEngine, fit_from_warehouse
from mlops_core.training.models import XGBoostParams

pytestmark = pytest.mark.slow

TABLE = "features.training_set"
PARAMS = XGBoostParams(n_estimators=60, scale_pos_weight=None)


@pytest.fixture(scope="module")
def frame():
    frame = make_training_frame(n_rows=4000, seed=8)
    return frame.sort_values(["event_timestamp", "transaction_id"], ignore_index=True)


@pytest.fixture()
def con(frame):
    con = warehouse_of(frame, TABLE, seed=4)
    yield con
    con.close()


def test_one_dask_worker_gives_the_in_process_model_and_two_workers_learn_the_same_signal(frame, con, tmp_path):
    X_test = matrix.encode(frame[frame["split"] == "test"])
    y_test = matrix.labels(frame[frame["split"] == "test"])
    local, _ = fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS, refit=True, batch_rows=700)
    one, _ = fit_from_warehouse(
        con, TABLE, "v1", xgboost_params=PARAMS, refit=True, batch_rows=700, dask=DaskEngine(1, None, str(tmp_path))
    )
    np.testing.assert_allclose(one.scorer().predict(X_test), local.scorer().predict(X_test), rtol=0, atol=1e-6)
    assert one.best_iteration == local.best_iteration and one.threshold == local.threshold

    two_engine = DaskEngine(2, None, str(tmp_path))
    two, _ = fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS, refit=True, batch_rows=700, dask=two_engine)
    again, _ = fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS, refit=True, batch_rows=700, dask=two_engine)
    np.testing.assert_array_equal(two.scorer().predict(X_test), again.scorer().predict(X_test))
    auc_local = metrics.classification_metrics(y_test, local.evaluated_scorer().predict(X_test), 0.5)["auc_pr"]
    auc_two = metrics.classification_metrics(y_test, two.evaluated_scorer().predict(X_test), 0.5)["auc_pr"]
    # Learnt the signal (several times the fraud rate, as the in-process model) and lost little against it.
    assert auc_two > 4 * y_test.mean() and abs(auc_two - auc_local) < 0.05, (auc_two, auc_local, y_test.mean())
    assert two.trained_through == local.trained_through and two.refit and two.params["dask_workers"] == 2
    assert two.onnx_max_difference < 1e-5
    assert not list(tmp_path.iterdir()), "staged batches left behind"


def test_training_on_a_cluster_reached_by_its_scheduler_address(frame, con, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        trained, _ = fit_from_warehouse(
            con,
            TABLE,
            "v1",
            xgboost_params=PARAMS,
            dask=DaskEngine(scheduler=cluster.scheduler_address, staging_dir=str(tmp_path)),
        )
    local, _ = fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS)
    X_test = matrix.encode(frame[frame["split"] == "test"])
    np.testing.assert_allclose(trained.scorer().predict(X_test), local.scorer().predict(X_test), rtol=0, atol=1e-6)


def test_a_dask_fit_with_one_class_names_the_split(con, tmp_path):
    con.execute(f"update {TABLE} set is_fraud = false where split = 'train'")
    with pytest.raises(ValueError, match=r"train: needs both fraud and non-fraud rows, got only \[0\]"):
        fit_from_warehouse(con, TABLE, "v1", xgboost_params=PARAMS, dask=DaskEngine(1, None, str(tmp_path)))
