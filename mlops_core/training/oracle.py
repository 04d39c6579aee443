"""The simulation's oracle: the best the platform could do with the labels it had.

Every day it is retrained on every label known that day (a fraud reported yesterday included, with no
maturity wait and no lookback), with the same features, model family and hyperparameters as the
platform's training and no gates. Like the platform it stops early on its newest rows and then refits on
all of them. Nothing it learns from is newer than the day it scores: the simulation scores day d with the
model fitted at the end of day d - 1. Pure: no dagster, no warehouse; the caller hands it feature rows and
labels.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_core.training import matrix, metrics
from mlops_core.training.models import XGBoostParams, train_xgboost, train_xgboost_fixed

LABEL_COLUMNS = ("transaction_id", "is_fraud", "labeled_at")


@dataclass(frozen=True)
class OracleFit:
    """What one refit learnt from."""

    cutoff: dt.datetime
    rows: int
    frauds: int
    trees: int
    threshold: float


class Oracle:
    def __init__(
        self,
        params: XGBoostParams = XGBoostParams(),
        validation_share: float = 0.1,
        false_negative_cost: float = 20.0,
    ) -> None:
        if not 0 < validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {validation_share}")
        self.params = params
        self.validation_share = validation_share
        self.false_negative_cost = false_negative_cost
        self._events: list[pd.DataFrame] = []
        self._labels: list[pd.DataFrame] = []
        self._model = None
        self.fits: list[OracleFit] = []

    # -- what it knows ------------------------------------------------------------------------
    def add_events(self, frame: pd.DataFrame) -> None:
        """Feature rows as of each transaction's own time: transaction_id, event_timestamp and the model's
        input features. A transaction seen twice keeps its first row (replays do not count twice)."""
        missing = [c for c in ("transaction_id", "event_timestamp", *matrix.INPUT_FEATURES) if c not in frame]
        if missing:
            raise ValueError(f"oracle events are missing columns: {missing}")
        rows = frame[["transaction_id", "event_timestamp", *matrix.INPUT_FEATURES]].copy()
        rows["event_timestamp"] = _naive_utc(rows["event_timestamp"])
        self._events.append(rows)

    def add_labels(self, frame: pd.DataFrame) -> None:
        """Verdicts as they land: transaction_id, is_fraud, labeled_at (a verdict may be revised later)."""
        missing = [c for c in LABEL_COLUMNS if c not in frame]
        if missing:
            raise ValueError(f"oracle labels are missing columns: {missing}")
        rows = frame[list(LABEL_COLUMNS)].copy()
        rows["labeled_at"] = _naive_utc(rows["labeled_at"])
        rows["is_fraud"] = rows["is_fraud"].astype(bool)
        self._labels.append(rows)

    def training_rows(self, cutoff: dt.datetime) -> pd.DataFrame:
        """One row per transaction with a verdict known at `cutoff`, its newest verdict (fraud wins a tie,
        as in the warehouse's labels_known_at_cutoff_sql), in (event_timestamp, transaction_id) order."""
        if not self._events or not self._labels:
            return pd.DataFrame(columns=["transaction_id", "event_timestamp", *matrix.INPUT_FEATURES, "is_fraud"])
        bound = _naive_utc(pd.Series([pd.Timestamp(cutoff)])).iloc[0]
        labels = pd.concat(self._labels, ignore_index=True)
        known = labels[labels["labeled_at"] <= bound].sort_values(["transaction_id", "labeled_at", "is_fraud"])
        verdict = known.drop_duplicates("transaction_id", keep="last")[["transaction_id", "is_fraud"]]
        events = pd.concat(self._events, ignore_index=True).drop_duplicates("transaction_id", keep="first")
        events = events[events["event_timestamp"] < bound]
        rows = events.merge(verdict, on="transaction_id", how="inner", validate="one_to_one")
        return rows.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)

    # -- learning and scoring -----------------------------------------------------------------
    def refit(self, cutoff: dt.datetime) -> OracleFit | None:
        """Learn from every label known at `cutoff`; None (the previous model stays) while one class is missing
        from the rows or from their newest share."""
        rows = self.training_rows(cutoff)
        y = matrix.labels(rows) if len(rows) else np.zeros(0, dtype=np.int64)
        cut = int(len(rows) * (1 - self.validation_share))
        if len(rows) < 20 or len(np.unique(y[:cut])) < 2 or len(np.unique(y[cut:])) < 2:
            return None
        X = matrix.encode(rows)
        stopped = train_xgboost(X[:cut], y[:cut], X[cut:], y[cut:], self.params)
        threshold = metrics.choose_threshold(
            y[cut:], stopped.predict_proba(X[cut:])[:, 1], false_negative_cost=self.false_negative_cost
        )
        trees = int(stopped.best_iteration) + 1
        self._model = train_xgboost_fixed(X, y, dataclasses.replace(self.params, n_estimators=trees))
        fitted = OracleFit(cutoff=cutoff, rows=len(rows), frauds=int(y.sum()), trees=trees, threshold=float(threshold))
        self.fits.append(fitted)
        return fitted

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def threshold(self) -> float:
        if not self.fits:
            raise RuntimeError("the oracle has not been fitted yet")
        return self.fits[-1].threshold

    def score(self, X: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("the oracle has not been fitted yet")
        return self._model.predict_proba(X)[:, 1].astype(float)


def _naive_utc(values: pd.Series) -> pd.Series:
    times = pd.to_datetime(values)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times.astype("datetime64[us]")
