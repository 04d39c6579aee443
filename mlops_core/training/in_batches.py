"""Train XGBoost from the warehouse in batches, so the training rows never exist as one pandas frame.

The in-memory path reads the whole training set into pandas, encodes each split to a float32 matrix and hands
it to XGBoost, which builds its own quantized copy: at 8.77M rows that peaked at 15 GB. Here DuckDB streams
the rows of the wanted splits in the training order (event_timestamp, transaction_id), a batch at a time;
each batch is encoded and handed to XGBoost's `DataIter`, which builds a `QuantileDMatrix` from them: one byte
per value instead of a frame, a matrix and a copy. Peak memory then follows the batch size and XGBoost's
quantized matrix (rows x columns bytes), not the frame.

The same rows in the same order with the same parameters give the same trees as the in-memory path when
XGBoost's quantile sketch is exact; on large data the sketch is merged per batch and its cut points may move
by a bin, so the trees can differ slightly (measured in benchmarks/training_memory.py, tested on small data).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pandas as pd

from mlops_core.splits import ALL_SPLITS
from mlops_core.training import matrix
from mlops_core.warehouse import checked_identifier

if TYPE_CHECKING:
    import xgboost

    from mlops_core.training.models import XGBoostParams

# Rows DuckDB hands over at a time: about 50 MB of encoded matrix (49 float32 columns) per batch.
BATCH_ROWS = 250_000
# Training rows above which the candidate trains in batches by default (the asset's `in_batches`).
IN_BATCHES_ABOVE_ROWS = 2_000_000
# DuckDB's memory limit while the batches are read. The training order is a sort of every row read, which DuckDB
# spills to disk past its limit: at 8.77M rows the quantized matrix's build peaked at 3.46 GB with 2GB and
# 2.10 GB with 512MB, 10% slower (benchmarks/training_memory.py, RESULTS.md).
READ_MEMORY = "512MB"
_COLUMNS = (*matrix.INPUT_FEATURES, matrix.LABEL_COLUMN)


def _splits(splits: Sequence[str]) -> dict[str, list[str]]:
    """The bound parameter `$splits` of a query that keeps `split` in it (`list_contains($splits, split)`)."""
    unknown = sorted(set(splits) - set(ALL_SPLITS))
    if unknown or not splits:
        raise ValueError(f"splits must be some of {', '.join(ALL_SPLITS)}; got {list(splits)}")
    return {"splits": list(splits)}


def split_counts(con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str]) -> tuple[int, int]:
    """(rows, fraud rows) of `splits` in `table`."""
    table = checked_identifier(table)
    rows, frauds = con.execute(
        f"select count(*), coalesce(sum(cast({matrix.LABEL_COLUMN} as integer)), 0) from {table} "
        "where list_contains($splits, split)",
        _splits(splits),
    ).fetchone()
    return int(rows), int(frauds)


# What a model reads of a row, and what places it: the columns fit_from_warehouse reads of the validation and
# test splits (the evaluation reads every column of the test split, for its segments).
MODEL_COLUMNS = (*_COLUMNS, "event_timestamp", "transaction_id", "split")


def read_splits(
    con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of `splits`, in the training order: every column, or only `columns` (ids, keys and the raw
    fields cost more as pandas objects than the features do)."""
    table = checked_identifier(table)
    selected = ", ".join(checked_identifier(c) for c in columns) if columns else "*"
    return con.execute(
        f"select {selected} from {table} where list_contains($splits, split) order by event_timestamp, transaction_id",
        _splits(splits),
    ).df()


def _newest(con: duckdb.DuckDBPyConnection, table: str, column: str, splits: Sequence[str]) -> str | None:
    """The largest `column` (ISO) among the rows of `splits`, None when they have none."""
    table, column = checked_identifier(table), checked_identifier(column)
    newest = con.execute(
        f"select max({column}) from {table} where list_contains($splits, split)", _splits(splits)
    ).fetchone()[0]
    return None if newest is None else pd.Timestamp(newest).isoformat()


def newest_event(con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str]) -> str | None:
    """The newest event_timestamp (ISO) of `splits`: what a model trained on them learnt through."""
    return _newest(con, table, "event_timestamp", splits)


def newest_label(con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str]) -> str | None:
    """The newest labeled_at (ISO) of `splits`, None when they have no rows."""
    return _newest(con, table, "labeled_at", splits)


def split_windows_in(con: duckdb.DuckDBPyConnection, table: str):
    """`model_card.split_windows` of the table, counted by DuckDB instead of over a frame of every row."""
    from mlops_core.training.model_card import SplitWindow

    table = checked_identifier(table)
    found = {
        name: (rows, frauds, first, last)
        for name, rows, frauds, first, last in con.execute(
            f"select split, count(*), sum(cast({matrix.LABEL_COLUMN} as integer)), min(event_timestamp), "
            f"max(event_timestamp) from {table} group by split"
        ).fetchall()
    }
    return tuple(
        SplitWindow(name, int(rows), int(frauds), str(pd.Timestamp(first)), str(pd.Timestamp(last)))
        for name in ALL_SPLITS
        if name in found
        for rows, frauds, first, last in [found[name]]
    )


def encoded_batches(
    con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str], batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(matrix, labels) of the rows of `splits`, `batch_rows` at a time, in the training order.

    Only the feature and label columns are read. A fresh cursor per call, so XGBoost can read the rows again
    (it reads them twice: once to sketch the quantiles, once to fill the matrix)."""
    table = checked_identifier(table)
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    params = _splits(splits)
    cursor = con.cursor()
    try:
        # A relation's reader streams; the same reader on an executed cursor copies every row first.
        reader = cursor.sql(
            f"select {', '.join(_COLUMNS)} from {table} where list_contains($splits, split) "
            "order by event_timestamp, transaction_id",
            params=params,
        ).to_arrow_reader(batch_rows)
        for batch in reader:
            frame = batch.to_pandas()
            yield matrix.encode(frame), matrix.labels(frame)
    finally:
        cursor.close()


def quantile_matrix(
    con: duckdb.DuckDBPyConnection, table: str, splits: Sequence[str], batch_rows: int = BATCH_ROWS
) -> xgboost.QuantileDMatrix:
    """XGBoost's quantized matrix of the rows of `splits`, built batch by batch."""
    import xgboost

    class _Batches(xgboost.DataIter):
        def __init__(self) -> None:
            self._batches: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
            super().__init__()

        def next(self, input_data) -> bool:
            if self._batches is None:
                self._batches = encoded_batches(con, table, splits, batch_rows)
            batch = next(self._batches, None)
            if batch is None:
                return False
            input_data(data=batch[0], label=batch[1])
            return True

        def reset(self) -> None:
            if self._batches is not None:
                self._batches.close()
            self._batches = None

    return xgboost.QuantileDMatrix(_Batches(), max_bin=256)


def booster_params_for(
    con: duckdb.DuckDBPyConnection,
    table: str,
    splits: Sequence[str],
    params: XGBoostParams,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
) -> dict[str, object]:
    """XGBoost's parameters for a fit on the rows of `splits`, taken from the XGBClassifier the in-memory path
    builds (the balancing weight from the rows' counts; early stopping's metric when a validation set is
    given), after checking that the rows and the validation set hold both classes."""
    from mlops_core.training.models import check_both_classes, check_training_data, positive_weight, xgboost_classifier

    rows, frauds = split_counts(con, table, splits)
    check_both_classes(rows, frauds, "+".join(splits))
    if X_val is not None:
        check_training_data(X_val, y_val, "validation")
    template = xgboost_classifier(
        params,
        positive_weight(params, rows, frauds),
        **(
            {"early_stopping_rounds": params.early_stopping_rounds, "eval_metric": "aucpr"} if X_val is not None else {}
        ),
    )
    return {k: v for k, v in template.get_xgb_params().items() if v is not None}


def train_xgboost_in_batches(
    con: duckdb.DuckDBPyConnection,
    table: str,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    params: XGBoostParams,
    splits: Sequence[str] = ("train",),
    batch_rows: int = BATCH_ROWS,
) -> xgboost.XGBClassifier:
    """`models.train_xgboost` (with a validation set: early stopping on it) or `models.train_xgboost_fixed`
    (without: exactly `params.n_estimators` trees) on the rows of `splits`, read from `table` in batches.

    The parameters reach XGBoost through the same XGBClassifier the in-memory path builds, and the trees come
    back as one, so the ONNX export, the importances and `best_iteration` work the same."""
    import xgboost

    booster_params = booster_params_for(con, table, splits, params, X_val, y_val)
    early_stopping = X_val is not None
    train = quantile_matrix(con, table, splits, batch_rows)
    evals = [(xgboost.QuantileDMatrix(X_val, label=y_val, ref=train), "validation")] if early_stopping else []
    booster = xgboost.train(
        booster_params,
        train,
        num_boost_round=params.n_estimators,
        evals=evals,
        early_stopping_rounds=params.early_stopping_rounds if early_stopping else None,
        verbose_eval=False,
    )
    model = xgboost.XGBClassifier(n_jobs=params.n_jobs)
    model.load_model(bytearray(booster.save_raw("json")))
    return model
