"""Batch scoring of one day on a small warehouse built here: the right rows, the same scores as the
online path and as one-row-at-a-time scoring, and an idempotent, atomic write with its audit."""

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pytest

from mlops_core import scoring
from mlops_core.contracts import AGE_BANDS, CHANNELS, COUNTRIES, MERCHANT_CATEGORIES
from mlops_core.features import offline
from mlops_core.features.audits import warehouse_events, warehouse_snapshots
from mlops_core.features.online import OnlineFeatureService
from mlops_core.features.spec import MAX_WINDOW_SECONDS, REQUEST_FIELDS
from mlops_core.features.stores import SqliteOnlineStore
from mlops_core.serving.models import LoadedModel
from mlops_core.training import matrix
from mlops_core.training.models import XGBoostParams, train_xgboost
from mlops_core.training.onnx_export import to_onnx

DAY = dt.date(2026, 3, 10)
DAY_START = dt.datetime.combine(DAY, dt.time())
US = dt.timedelta(microseconds=1)
WINDOW = dt.timedelta(seconds=MAX_WINDOW_SECONDS)
# The events of account "edge", placed on the edges of the day and of its 30-day history.
EDGE_EVENTS = {
    "edge-too-old": DAY_START - WINDOW - US,
    "edge-oldest-in-window": DAY_START - WINDOW,
    "edge-previous-day": DAY_START - US,
    "edge-first-instant": DAY_START,
    "edge-tie-a": DAY_START + dt.timedelta(hours=5),
    "edge-tie-b": DAY_START + dt.timedelta(hours=5),
    "edge-last-instant": DAY_START + dt.timedelta(days=1) - US,
    "edge-next-day": DAY_START + dt.timedelta(days=1),
}


def _events(rng: np.random.Generator) -> pd.DataFrame:
    n = 3000
    first = DAY_START - dt.timedelta(days=40)
    offsets = rng.integers(0, 42 * 86_400 * 1_000_000, n)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in range(n)],
            # "ghost" has no snapshot: an account the warehouse does not know yet.
            "account_id": [f"a{i:02d}" if i < 40 else "ghost" for i in rng.integers(0, 41, n)],
            "event_timestamp": [first + dt.timedelta(microseconds=int(o)) for o in offsets],
            "amount_usd": np.round(rng.lognormal(3.5, 1.2, n), 2),
            "merchant_id": [f"m{i}" for i in rng.integers(0, 60, n)],
            "merchant_category": rng.choice(MERCHANT_CATEGORIES, n),
            "channel": rng.choice(CHANNELS, n),
            "country": rng.choice(COUNTRIES[:4], n),
        }
    )
    edge = pd.DataFrame(
        {
            "transaction_id": list(EDGE_EVENTS),
            "account_id": "edge",
            "event_timestamp": list(EDGE_EVENTS.values()),
            "amount_usd": 25.0,
            "merchant_id": "m-edge",
            "merchant_category": "grocery",
            "channel": "in_store",
            "country": "US",
        }
    )
    return pd.concat([frame, edge], ignore_index=True)


def _snapshots(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(40):
        account = f"a{i:02d}"
        created = DAY_START - dt.timedelta(days=int(rng.integers(20, 400)))
        rows.append((account, created, str(rng.choice(COUNTRIES[:4])), str(rng.choice(AGE_BANDS)), created))
        if i % 3 == 0:  # a changed snapshot landing in the middle of the history
            rows.append(
                (
                    account,
                    created,
                    rows[-1][2],
                    str(rng.choice(AGE_BANDS)),
                    DAY_START - dt.timedelta(days=int(rng.integers(1, 20))),
                )
            )
    rows.append(("edge", DAY_START - dt.timedelta(days=90), "US", "35-44", DAY_START - dt.timedelta(days=90)))
    return pd.DataFrame(rows, columns=["account_id", "created_at", "home_country", "age_band", "valid_from"])


def _train_model(con: duckdb.DuckDBPyConnection, rng: np.random.Generator) -> LoadedModel:
    """A small XGBoost on synthetic labels driven by windowed and request features, exported to ONNX."""
    features = con.execute(offline.point_in_time_features_sql()).df()
    logit = (
        -3.0
        + 1.5 * features["is_online"]
        + 1.0 * np.log(features["amount_to_mean_30d"].clip(lower=1e-3))
        + 0.4 * features["txn_count_24h"]
        + 1.0 * features["merchant_category"].isin(["jewelry", "gambling", "digital_goods"])
    )
    y = (rng.random(len(features)) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    X = matrix.encode(features)
    half = len(X) // 2
    model = train_xgboost(
        X[:half],
        y[:half],
        X[half:],
        y[half:],
        XGBoostParams(n_estimators=40, early_stopping_rounds=10, scale_pos_weight=1.0),
    )
    onnx_bytes = to_onnx(model, len(matrix.FEATURE_COLUMNS))
    threshold = float(np.quantile(model.predict_proba(X)[:, 1], 0.8))
    return LoadedModel.from_bytes("7", onnx_bytes, threshold)


@pytest.fixture(scope="module")
def warehouse():
    rng = np.random.default_rng(5)
    con = duckdb.connect()
    con.execute("create schema marts")
    events, snapshots = _events(rng), _snapshots(rng)
    con.register("events_frame", events)
    con.register("snapshots_frame", snapshots)
    con.execute(
        "create table marts.transactions_enriched as select *, cast(event_timestamp as date) as event_date from events_frame"
    )
    con.execute("create table marts.account_history as select * from snapshots_frame")
    con.unregister("events_frame")
    con.unregister("snapshots_frame")
    yield con, _train_model(con, rng)
    con.close()


@pytest.fixture
def db(warehouse):
    connection, _ = warehouse
    connection.execute("drop schema if exists scoring cascade")
    return connection


@pytest.fixture
def model(warehouse) -> LoadedModel:
    return warehouse[1]


class CountingModel:
    """The model, recording the rows of each scoring call."""

    def __init__(self, model: LoadedModel):
        self.model, self.version, self.threshold, self.calls = model, model.version, model.threshold, []

    def score(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        return self.model.score(X)


def day_ids(con, day: dt.date) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "select transaction_id from marts.transactions_enriched where event_date = ?", [day]
        ).fetchall()
    }


def test_score_day_gives_one_row_per_transaction_of_the_day(db, model):
    scores = scoring.score_day(db, DAY, model, scored_at=dt.datetime(2026, 3, 11, 2, 0, tzinfo=dt.UTC))
    assert list(scores.columns) == list(scoring.SCORE_COLUMNS)
    assert len(scores) == len(day_ids(db, DAY)) > 50
    assert set(scores["transaction_id"]) == day_ids(db, DAY)
    assert {"edge-first-instant", "edge-tie-a", "edge-tie-b", "edge-last-instant"} <= set(scores["transaction_id"])
    assert not {"edge-previous-day", "edge-next-day"} & set(scores["transaction_id"])
    assert set(scores["event_date"]) == {DAY}
    assert (scores["model_version"] == "7").all()
    assert (scores["scored_at"] == pd.Timestamp("2026-03-11 02:00:00")).all()
    assert ((scores["fraud_probability"] >= 0) & (scores["fraud_probability"] <= 1)).all()
    assert (scores["is_fraud"] == (scores["fraud_probability"] >= model.threshold)).all()
    assert 0 < scores["is_fraud"].sum() < len(scores), "the threshold should flag some rows, not all"
    assert "ghost" in set(scores["account_id"])


def test_the_restricted_history_gives_the_features_of_the_whole_warehouse(db, model):
    restricted = offline.day_features(db, DAY).set_index("transaction_id")
    whole = (
        db.execute(
            f"select * from ({offline.point_in_time_features_sql()}) where cast(event_timestamp as date) = ?", [DAY]
        )
        .df()
        .set_index("transaction_id")
        .loc[restricted.index]
    )
    # Counts and categories exactly; float sums to 1e-9 relative, since DuckDB's window frames may
    # add in a different order over a different set of rows.
    pd.testing.assert_frame_equal(restricted, whole, check_exact=False, rtol=1e-9, atol=0)
    # The first instant of the day sees the event exactly 30 days before and the one just before
    # midnight, not the one a microsecond older than the window.
    assert restricted.loc["edge-first-instant", "txn_count_30d"] == 2
    assert restricted.loc["edge-first-instant", "seconds_since_last_txn"] == pytest.approx(1e-6)


def test_scores_equal_the_online_path(db, model):
    store = SqliteOnlineStore(":memory:")
    try:
        store.rebuild([], warehouse_snapshots(db), offline_watermark_us=0)
        store.record_events(list(warehouse_events(db)))  # the whole history: the service picks its windows
        requests = (
            db.execute(
                f"select {', '.join(REQUEST_FIELDS)} from marts.transactions_enriched where event_date = ? order by transaction_id",
                [DAY],
            )
            .df()
            .to_dict("records")
        )
        online = OnlineFeatureService(store).get_online_features(requests)
    finally:
        store.close()
    online_p = pd.Series(model.score(matrix.encode_rows(online)), index=[r["transaction_id"] for r in requests])
    batch = scoring.score_day(db, DAY, model).set_index("transaction_id")["fraud_probability"]
    assert set(batch.index) == set(online_p.index)
    np.testing.assert_allclose(batch.loc[online_p.index].to_numpy(), online_p.to_numpy(), rtol=0, atol=1e-7)


def test_vectorized_scoring_equals_one_row_at_a_time(db, model):
    X = matrix.encode(offline.day_features(db, DAY))
    one_call = scoring.score_matrix(model, X)
    per_row = np.array([model.score(X[i])[0] for i in range(len(X))])
    np.testing.assert_allclose(one_call, per_row, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(scoring.score_matrix(model, X, chunk_rows=7), one_call)
    counting = CountingModel(model)
    scoring.score_day(db, DAY, counting)
    assert counting.calls == [len(X)], "a day is scored in one onnxruntime call"


def test_write_replaces_the_day_and_leaves_other_days(db, model):
    previous = DAY - dt.timedelta(days=1)
    scoring.write_scores(db, previous, scoring.score_day(db, previous, model))
    first = scoring.score_day(db, DAY, model, scored_at=dt.datetime(2026, 3, 11, 1, 0))
    assert scoring.write_scores(db, DAY, first) == len(first)
    newer = LoadedModel("8", model.scorer, model.threshold)
    second = scoring.score_day(db, DAY, newer, scored_at=dt.datetime(2026, 3, 11, 3, 0))
    scoring.write_scores(db, DAY, second)
    by_day = dict(db.execute("select event_date, count(*) from scoring.batch_scores group by 1").fetchall())
    assert by_day == {previous: len(day_ids(db, previous)), DAY: len(first)}
    versions = db.execute(
        "select distinct model_version, scored_at from scoring.batch_scores where event_date = ?", [DAY]
    ).fetchall()
    assert versions == [("8", dt.datetime(2026, 3, 11, 3, 0))]
    stored = db.execute(
        "select transaction_id, fraud_probability, is_fraud from scoring.batch_scores where event_date = ?", [DAY]
    ).df()
    merged = stored.merge(second, on="transaction_id", suffixes=("_stored", ""))
    assert len(merged) == len(second)
    assert (merged["fraud_probability_stored"] == merged["fraud_probability"]).all()
    assert (merged["is_fraud_stored"] == merged["is_fraud"]).all()
    assert scoring.audit_scores(db, DAY).passed and scoring.audit_scores(db, previous).passed


def test_a_failed_write_keeps_the_previous_scores(db, model):
    good = scoring.score_day(db, DAY, model)
    scoring.write_scores(db, DAY, good)
    broken = good.copy()
    broken.loc[3, "account_id"] = None  # violates NOT NULL after the day's rows were deleted
    with pytest.raises(duckdb.ConstraintException):
        scoring.write_scores(db, DAY, broken)
    assert db.execute("select count(*) from scoring.batch_scores where event_date = ?", [DAY]).fetchone()[0] == len(
        good
    )
    with pytest.raises(ValueError, match="other days"):
        scoring.write_scores(db, DAY + dt.timedelta(days=1), good)


def test_an_empty_day_scores_nothing_and_clears_stale_scores(db, model):
    empty_day = DAY + dt.timedelta(days=30)
    empty = scoring.score_day(db, empty_day, model)
    assert empty.empty and list(empty.columns) == list(scoring.SCORE_COLUMNS)
    assert scoring.write_scores(db, empty_day, empty) == 0
    audit = scoring.audit_scores(db, empty_day)
    assert audit.passed and audit.transactions == audit.scored_rows == 0
    assert scoring.summarize(empty) == {"rows": 0, "flagged_rows": 0, "flagged_share": 0.0, "mean_probability": 0.0}
    scoring.write_scores(db, DAY, scoring.score_day(db, DAY, model))
    scoring.write_scores(db, DAY, empty.iloc[0:0])
    assert db.execute("select count(*) from scoring.batch_scores").fetchone()[0] == 0


def test_the_audit_counts_each_kind_of_defect(db, model):
    scoring.write_scores(db, DAY, scoring.score_day(db, DAY, model))
    assert scoring.audit_scores(db, DAY).passed
    db.execute("delete from scoring.batch_scores where transaction_id = 'edge-tie-a'")
    db.execute(
        "insert into scoring.batch_scores select * from scoring.batch_scores where transaction_id = 'edge-tie-b'"
    )
    db.execute("update scoring.batch_scores set fraud_probability = 1.5 where transaction_id = 'edge-last-instant'")
    db.execute(
        "insert into scoring.batch_scores select 'edge-next-day', account_id, event_timestamp, event_date, 0.1, false, "
        "model_version, scored_at from scoring.batch_scores where transaction_id = 'edge-first-instant'"
    )
    audit = scoring.audit_scores(db, DAY)
    assert not audit.passed
    assert (audit.missing, audit.duplicated, audit.unexpected, audit.out_of_range, audit.null_values) == (1, 1, 1, 1, 0)
    assert audit.describe().startswith("Incomplete: ")
    db.execute("alter table scoring.batch_scores alter column account_id drop not null")
    db.execute("update scoring.batch_scores set account_id = null where transaction_id = 'edge-first-instant'")
    assert scoring.audit_scores(db, DAY).null_values == 1
