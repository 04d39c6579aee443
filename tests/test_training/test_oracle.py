"""The simulation's oracle: what it learns from on a given day (bookkeeping), and that it learns the newest
labels at once."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from synthetic_training_set import make_training_frame

from mlops_core.training import matrix
from mlops_core.training.models import XGBoostParams, train_xgboost
from mlops_core.training.oracle import Oracle

START = pd.Timestamp("2024-01-01")


def _events(n: int, seed: int = 0) -> pd.DataFrame:
    frame = make_training_frame(n_rows=n, seed=seed)
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def _labels(ids, is_fraud, labeled_at) -> pd.DataFrame:
    return pd.DataFrame({"transaction_id": list(ids), "is_fraud": list(is_fraud), "labeled_at": list(labeled_at)})


def test_training_rows_hold_exactly_the_labels_known_at_the_cutoff_newest_verdict_first():
    events = _events(300)
    oracle = Oracle()
    oracle.add_events(events)
    # A replayed batch of the same transactions must not count twice.
    oracle.add_events(events.iloc[:50])
    cutoff = dt.datetime(2024, 2, 15, tzinfo=dt.UTC)
    ids = events["transaction_id"].tolist()
    known = pd.Timestamp("2024-02-15") - pd.Timedelta(microseconds=1)
    late = pd.Timestamp("2024-02-15") + pd.Timedelta(microseconds=1)
    oracle.add_labels(_labels(ids[:100], [False] * 100, [known] * 100))
    # Revised: t3 turns out fraud, later than its first verdict; t4's revision lands a microsecond too late.
    oracle.add_labels(_labels([ids[3], ids[4]], [True, True], [known + pd.Timedelta(microseconds=1)] * 1 + [late]))
    # A tie at the same instant: fraud wins, as in the warehouse.
    oracle.add_labels(_labels([ids[5]], [True], [known]))
    # Labelled after the cutoff: unknown that day.
    oracle.add_labels(_labels(ids[100:110], [True] * 10, [late] * 10))
    rows = oracle.training_rows(cutoff)
    expected = [
        i for i in ids[:100] if events.set_index("transaction_id").at[i, "event_timestamp"] < pd.Timestamp("2024-02-15")
    ]
    assert rows["transaction_id"].tolist() == sorted(
        expected, key=lambda i: (events.set_index("transaction_id").at[i, "event_timestamp"], i)
    )
    assert rows["transaction_id"].is_unique
    verdict = rows.set_index("transaction_id")["is_fraud"]
    assert verdict[ids[3]] and verdict[ids[5]]
    assert not verdict[ids[4]]
    assert int(verdict.sum()) == 2


def test_events_after_the_cutoff_are_not_learnt_even_when_labelled():
    events = _events(200)
    oracle = Oracle()
    oracle.add_events(events)
    oracle.add_labels(_labels(events["transaction_id"], events["is_fraud"], [pd.Timestamp("2023-12-31")] * 200))
    cutoff = events["event_timestamp"].iloc[120]
    rows = oracle.training_rows(cutoff.to_pydatetime().replace(tzinfo=dt.UTC))
    assert len(rows) == int((events["event_timestamp"] < cutoff).sum())
    assert rows["event_timestamp"].max() < cutoff


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="labeled_at"):
        Oracle().add_labels(pd.DataFrame({"transaction_id": ["t"], "is_fraud": [True]}))
    with pytest.raises(ValueError, match="event_timestamp"):
        Oracle().add_events(_events(10).drop(columns=["event_timestamp"]))


def _with_new_pattern(n: int = 6000, newest_share: float = 0.08) -> pd.DataFrame:
    """Grocery purchases appear only in the newest rows, and most of them are fraud: a new pattern."""
    frame = _events(n, seed=4)
    newest = frame.index >= int(n * (1 - newest_share))
    other = frame["merchant_category"] != "grocery"
    frame.loc[~newest & ~other, "merchant_category"] = "electronics"
    pattern = newest & ~other
    frame.loc[pattern, "is_fraud"] = np.random.default_rng(0).random(int(pattern.sum())) < 0.6
    return frame


def test_the_oracle_learns_a_pattern_that_only_its_newest_labels_show():
    """Early stopping keeps the newest rows aside; the refit must still learn from them: the early-stopped
    model, which never saw a grocery purchase, scores them like any other."""
    frame = _with_new_pattern()
    params = XGBoostParams(scale_pos_weight=1.0)
    oracle = Oracle(params, validation_share=0.1)
    oracle.add_events(frame)
    oracle.add_labels(_labels(frame["transaction_id"], frame["is_fraud"], frame["event_timestamp"]))
    fitted = oracle.refit(dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    assert fitted is not None and fitted.rows == len(frame) and fitted.frauds == int(frame["is_fraud"].sum())
    grocery = matrix.encode(frame[frame["merchant_category"] == "grocery"])
    X, y = matrix.encode(frame), matrix.labels(frame)
    cut = int(len(frame) * 0.9)
    stopped = train_xgboost(X[:cut], y[:cut], X[cut:], y[cut:], params)
    learnt, missed = oracle.score(grocery).mean(), stopped.predict_proba(grocery)[:, 1].mean()
    assert learnt > 0.3 and learnt > 3 * missed, (learnt, missed)
    assert 0 < oracle.threshold < 1


def test_no_refit_while_a_class_is_missing_and_the_last_model_stays():
    frame = _events(400)
    oracle = Oracle()
    oracle.add_events(frame)
    oracle.add_labels(_labels(frame["transaction_id"], [False] * 400, frame["event_timestamp"]))
    assert oracle.refit(dt.datetime(2024, 6, 1, tzinfo=dt.UTC)) is None
    assert not oracle.ready
    with pytest.raises(RuntimeError, match="not been fitted"):
        oracle.score(matrix.encode(frame))
