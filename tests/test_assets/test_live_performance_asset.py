"""live_performance over a hand-made warehouse with known answers."""

import datetime as dt
import json

import dagster as dg
import duckdb
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from mlops_assets.monitoring.performance import PERFORMANCE_TABLE, live_performance_asset

DAY = dt.date(2026, 3, 10)


def _features(category: str) -> str:
    return json.dumps({"merchant_category": category, "age_band": "25-34"})


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "w.duckdb"
    ts = [dt.datetime(2026, 3, 10, h) for h in range(6)] + [dt.datetime(2026, 3, 11, 1)]
    transactions = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(7)],
            "channel": ["online", "online", "online", "in_store", "in_store", "in_store", "online"],
            "country": ["US"] * 7,
            "event_timestamp": ts,
            "event_date": [t.date() for t in ts],
        }
    )
    # t0..t5 on the day (t6 is the next day). Decisions: t0, t1, t3 flagged.
    log = pd.DataFrame(
        {
            "id": range(1, 9),
            "transaction_id": ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t0"],  # t0 replayed: counted once
            "score": [0.9, 0.8, 0.3, 0.7, 0.1, 0.05, 0.9, 0.9],
            "decision": [1, 1, 0, 1, 0, 0, 1, 1],
            "model_version": ["1"] * 8,
            "variant": ["champion"] * 8,
            "served": [1] * 8,
            "status": ["ok"] * 8,
            "features": [_features("jewelry")] * 3 + [_features("grocery")] * 5,
        }
    )
    # Fraud: t0, t2 (missed), and t3 first labelled legit then revised to fraud. t1 legit. t4, t5 unlabelled.
    labels = pd.DataFrame(
        {
            "transaction_id": ["t0", "t1", "t2", "t3", "t3"],
            "is_fraud": [True, False, True, False, True],
            "labeled_at": [dt.datetime(2026, 3, 12)] * 4 + [dt.datetime(2026, 3, 20)],
        }
    )
    with duckdb.connect(str(path)) as con:
        for name, frame in {"transactions": transactions, "log": log, "labels": labels}.items():
            con.register(name, frame)
        con.execute("create schema marts; create schema serving")
        con.execute("create table marts.transactions_enriched as select * from transactions")
        con.execute("create table serving.prediction_log as select * from log")
        con.execute("create table marts.label_events as select * from labels")
    return path


def test_live_performance_of_a_day(warehouse):
    result = dg.materialize(
        [live_performance_asset],
        partition_key=DAY.isoformat(),
        resources={"warehouse": DuckDBResource(database=str(warehouse))},
    )
    meta = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert meta["scored"] == 6 and meta["labelled"] == 4
    # Labelled: t0 (fraud, flagged), t1 (legit, flagged), t2 (fraud, missed), t3 (fraud after revision, flagged).
    assert meta["precision"] == pytest.approx(2 / 3) and meta["recall"] == pytest.approx(2 / 3)
    assert meta["flag_rate"] == pytest.approx(3 / 6)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute(
            f"select segment, value, n_scored, recall from {PERFORMANCE_TABLE} where day = ?", [DAY]
        ).df()
    online = rows[(rows.segment == "channel") & (rows.value == "online")].iloc[0]
    assert online.n_scored == 3 and online.recall == pytest.approx(1 / 2)  # t0 caught, t2 missed
    jewelry = rows[(rows.segment == "merchant_category") & (rows.value == "jewelry")].iloc[0]
    assert jewelry.n_scored == 3
    # Re-materializing replaces the day.
    dg.materialize(
        [live_performance_asset],
        partition_key=DAY.isoformat(),
        resources={"warehouse": DuckDBResource(database=str(warehouse))},
    )
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute(f"select count(*) from {PERFORMANCE_TABLE}").fetchall()[0][0] == len(rows)


def test_a_day_without_predictions_says_so(warehouse):
    result = dg.materialize(
        [live_performance_asset],
        partition_key="2026-03-01",
        resources={"warehouse": DuckDBResource(database=str(warehouse))},
    )
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["scored"].value == 0 and "no logged predictions" in meta["note"].value
