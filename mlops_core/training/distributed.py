"""Train XGBoost on a Dask cluster (`xgboost.dask`): the training rows spread over workers, on one machine
(a LocalCluster, the embedded default) or on many (a Dask cluster on Kubernetes, reached at its scheduler
address: MLOPS_DASK_SCHEDULER, docs/production.md).

The driver never holds the training rows either: it streams them from DuckDB in batches (`in_batches`), in
the training order, and writes each encoded batch to a staging folder the workers can read (on Kubernetes,
the shared state volume). Each batch is one partition of the Dask arrays; `DaskQuantileDMatrix` quantizes
them on the workers and XGBoost trains with its collective (allreduce) across them. The model comes back as
one XGBClassifier, so the ONNX export, the threshold and the gates are the same as for every fit.

The same data, parameters and worker count give the same trees (each batch is pinned to a worker by position;
tested with two workers); another worker count gives another sketch and row sampling, so slightly different
trees (benchmarks/training_dask.py measures 1, 2 and 4 workers).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from mlops_core.training import in_batches

if TYPE_CHECKING:
    import xgboost
    from distributed import Client

    from mlops_core.training.models import XGBoostParams


@contextmanager
def dask_client(workers: int = 2, scheduler: str | None = None) -> Iterator[Client]:
    """A client of the cluster at `scheduler` (tcp://host:8786), or of a LocalCluster of `workers` processes with
    one thread each (XGBoost's own threads per worker stay 1: more change the summation order), on loopback,
    stopped when the block ends."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,  # logging.ERROR: a worker's start and stop are not news
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _load(path: str) -> np.ndarray:
    return np.load(path)


def _staged_arrays(client: Client, con, table: str, splits: Sequence[str], folder: Path, batch_rows: int):
    """Dask arrays (X, y) of the rows of `splits`, one partition per batch staged as .npy files in `folder`.

    Batch i is loaded on the i-th worker (by address, round robin), not wherever the scheduler finds room:
    which rows a worker holds decides its share of the quantile sketch and the histogram sums, so a free
    placement gave another model on every run with the same data and worker count."""
    import dask.array as da

    workers = sorted(client.scheduler_info()["workers"])
    xs, ys = [], []
    for index, (X, y) in enumerate(in_batches.encoded_batches(con, table, splits, batch_rows)):
        x_path, y_path = folder / f"x{index:05d}.npy", folder / f"y{index:05d}.npy"
        np.save(x_path, X)
        np.save(y_path, y)
        worker = [workers[index % len(workers)]]
        x_part = client.submit(_load, str(x_path), workers=worker, allow_other_workers=False, pure=False)
        y_part = client.submit(_load, str(y_path), workers=worker, allow_other_workers=False, pure=False)
        xs.append(da.from_delayed(x_part, shape=X.shape, dtype=X.dtype))
        ys.append(da.from_delayed(y_part, shape=y.shape, dtype=y.dtype))
    return da.concatenate(xs), da.concatenate(ys)


def train_xgboost_dask(
    client: Client,
    con: duckdb.DuckDBPyConnection,
    table: str,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    params: XGBoostParams,
    splits: Sequence[str] = ("train",),
    batch_rows: int = in_batches.BATCH_ROWS,
    staging_dir: str | Path | None = None,
) -> xgboost.XGBClassifier:
    """`in_batches.train_xgboost_in_batches` on the cluster of `client`: early stopping on the validation set
    when one is given, else exactly `params.n_estimators` trees. The staged batches are removed afterwards."""
    import dask.array as da
    import xgboost
    import xgboost.dask

    booster_params = in_batches.booster_params_for(con, table, splits, params, X_val, y_val)
    early_stopping = X_val is not None
    folder = Path(tempfile.mkdtemp(prefix="dask_training_", dir=staging_dir))
    try:
        X, y = _staged_arrays(client, con, table, splits, folder, batch_rows)
        train = xgboost.dask.DaskQuantileDMatrix(client, X, y, max_bin=256)
        evals = []
        if early_stopping:
            chunk = max(1, min(len(X_val), batch_rows))
            evals = [
                (
                    xgboost.dask.DaskQuantileDMatrix(
                        client, da.from_array(X_val, chunks=(chunk, -1)), da.from_array(y_val, chunks=chunk), ref=train
                    ),
                    "validation",
                )
            ]
        output = xgboost.dask.train(
            client,
            booster_params,
            train,
            num_boost_round=params.n_estimators,
            evals=evals,
            early_stopping_rounds=params.early_stopping_rounds if early_stopping else None,
            verbose_eval=False,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    model = xgboost.XGBClassifier(n_jobs=params.n_jobs)
    model.load_model(bytearray(output["booster"].save_raw("json")))
    return model
