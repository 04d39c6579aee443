"""The warehouse reads the assets call, each on a tiny DuckDB file in tmp_path with answers checkable by hand:
the prediction log's copy (mlops_core.serving.prediction_log), monitoring's reads of served decisions and
labels (mlops_core.monitoring.reads), drift's two sides (mlops_core.monitoring.features) and the offline
store's small reads (mlops_core.features.offline)."""

import datetime as dt
import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from mlops_core.features import offline
from mlops_core.features.spec import MAX_WINDOW_SECONDS
from mlops_core.monitoring import features as monitoring_features
from mlops_core.monitoring import reads
from mlops_core.serving.prediction_log import (
    WAREHOUSE_TABLE,
    PredictionLog,
    PredictionRecord,
    copy_to_warehouse,
    warehouse_log_exists,
)

DAY = dt.date(2026, 3, 10)
START = dt.datetime.combine(DAY, dt.time())

# transaction id -> (account, event_timestamp); t2..t4 happen on DAY.
TRANSACTIONS = {
    "t1": ("a", START - dt.timedelta(hours=3)),
    "t2": ("a", START + dt.timedelta(hours=1)),
    "t3": ("a", START + dt.timedelta(hours=2)),
    "t4": ("b", START + dt.timedelta(hours=4)),
    "t5": ("a", START + dt.timedelta(days=1, hours=1)),
}
# transaction id, is_fraud, labeled_at, landed_date: t2 is first called legitimate, then fraud a day later.
LABELS = [
    ("t2", False, START + dt.timedelta(hours=10), DAY),
    ("t2", True, START + dt.timedelta(days=1, hours=10), DAY + dt.timedelta(days=1)),
    ("t3", True, START + dt.timedelta(hours=12), DAY),
    ("t4", False, START + dt.timedelta(days=2), DAY + dt.timedelta(days=2)),
]


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    connection.execute("create schema marts")
    transactions = pd.DataFrame(
        [
            (tid, account, ts, 10.0 * (i + 1), "m1", "grocery", "online", "US")
            for i, (tid, (account, ts)) in enumerate(TRANSACTIONS.items())
        ],
        columns=[
            "transaction_id",
            "account_id",
            "event_timestamp",
            "amount_usd",
            "merchant_id",
            "merchant_category",
            "channel",
            "country",
        ],
    )
    connection.register("transactions_frame", transactions)
    connection.execute(
        "create table marts.transactions_enriched as select *, cast(event_timestamp as date) as event_date, "
        "cast(event_timestamp as date) + 1 as landed_date from transactions_frame"
    )
    connection.unregister("transactions_frame")
    connection.execute(
        "create table marts.account_history (account_id varchar, created_at timestamp, home_country varchar, "
        "age_band varchar, valid_from timestamp)"
    )
    connection.execute(
        "insert into marts.account_history values ('a', '2025-01-01', 'US', '35-44', '2025-01-01'), "
        "('b', '2025-01-01', 'US', '25-34', '2025-01-01')"
    )
    connection.execute(
        "create table marts.label_events (transaction_id varchar, is_fraud boolean, labeled_at timestamp, "
        "landed_date date)"
    )
    connection.executemany("insert into marts.label_events values (?, ?, ?, ?)", LABELS)
    yield connection
    connection.close()


def _record(transaction_id: str, version: str, variant: str, served: int, score: float, status: str = "ok"):
    account, ts = TRANSACTIONS[transaction_id]
    return PredictionRecord(
        logged_at=0.0,
        request_id=f"r-{transaction_id}-{variant}",
        transaction_id=transaction_id,
        account_id=account,
        event_timestamp=ts.isoformat(),
        model_version=version,
        variant=variant,
        served=served,
        status=status,
        score=score if status == "ok" else None,
        decision=int(score >= 0.5) if status == "ok" else None,
        latency_ms=1.0,
        features="{}",
    )


def _log(path, records) -> None:
    log = PredictionLog(path)
    try:
        log.append(records)
        log.flush()
    finally:
        log.close()


@pytest.fixture
def logged(con, tmp_path):
    """serving.prediction_log with: version 1 serving t1..t4 (t2 twice: a replay), version 2 shadowing t2,
    and an error on t4."""
    _log(
        tmp_path / "predictions.sqlite",
        [
            _record("t1", "1", "champion", 1, 0.1),
            _record("t2", "1", "champion", 1, 0.9),
            _record("t2", "2", "shadow", 0, 0.4),
            _record("t3", "1", "champion", 1, 0.7),
            _record("t2", "1", "champion", 1, 0.8),  # a replay: the first answer counts
            _record("t4", "1", "champion", 1, 0.0, status="error"),
        ],
    )
    copy_to_warehouse(con, tmp_path / "predictions.sqlite")
    return con


# --- the prediction log's copy in the warehouse


def test_the_log_is_absent_until_the_first_copy_then_copied_once(con, tmp_path):
    source = tmp_path / "predictions.sqlite"
    assert not warehouse_log_exists(con)
    _log(source, [_record("t1", "1", "champion", 1, 0.1), _record("t1", "2", "shadow", 0, 0.2)])

    first = copy_to_warehouse(con, source)
    assert warehouse_log_exists(con)
    assert (first.new_rows, first.total_rows) == (2, 2)
    assert json.loads(first.rows_by_variant) == {"champion": 1, "shadow": 1}

    assert copy_to_warehouse(con, source).new_rows == 0
    _log(source, [_record("t2", "1", "champion", 1, 0.9)])
    third = copy_to_warehouse(con, source)
    assert (third.new_rows, third.total_rows) == (1, 3)
    assert json.loads(third.rows_by_variant) == {"champion": 2, "shadow": 1}
    assert con.execute(f"select list(id order by id) from {WAREHOUSE_TABLE}").fetchone()[0] == [1, 2, 3]


def test_a_first_copy_of_an_empty_log_creates_the_table(con, tmp_path):
    copy = copy_to_warehouse(con, tmp_path / "never-written.sqlite")
    assert (copy.new_rows, copy.total_rows) == (0, 0)
    assert warehouse_log_exists(con)


# --- monitoring's reads


def test_served_decisions_are_a_versions_first_ok_answers_in_the_window(logged):
    served = reads.served_decisions(logged, "1", DAY, DAY).sort_values("transaction_id")
    # t1 is the day before, t4's answer failed, t2's replay and version 2's shadow score do not count.
    assert list(served["transaction_id"]) == ["t2", "t3"]
    assert list(served["score"]) == [0.9, 0.7]
    assert list(served["event_date"].dt.date) == [DAY, DAY]
    everything = reads.served_decisions(logged, "1", DAY - dt.timedelta(days=1), DAY)
    assert set(everything["transaction_id"]) == {"t1", "t2", "t3"}
    assert reads.served_decisions(logged, "2", DAY, DAY).empty


def test_first_served_day_is_the_earliest_event_day_a_version_answered(logged):
    assert reads.first_served_day(logged, "1") == DAY - dt.timedelta(days=1)
    assert reads.first_served_day(logged, "2") is None  # a shadow never served
    assert reads.first_served_day(logged, "9") is None


def test_day_predictions_keep_shadow_scores_once_per_version_and_variant(logged):
    day = reads.day_predictions(logged, DAY).sort_values(["transaction_id", "variant"])
    assert list(zip(day["transaction_id"], day["variant"], day["score"], strict=True)) == [
        ("t2", "champion", 0.9),
        ("t2", "shadow", 0.4),
        ("t3", "champion", 0.7),
    ]
    assert set(day["channel"]) == {"online"}
    assert reads.day_predictions(logged, DAY + dt.timedelta(days=5)).empty


def test_latest_labels_take_the_newest_verdict_landed_by_a_day(logged):
    served = reads.served_decisions(logged, "1", DAY - dt.timedelta(days=1), DAY)

    def verdicts(frame):
        return dict(zip(frame["transaction_id"], frame["is_fraud"], strict=True))

    # By the end of DAY: t2's first (legitimate) label and t3's; t1 has none.
    assert verdicts(reads.latest_labels(logged, served, landed_by=DAY)) == {"t2": False, "t3": True}
    # A day later t2's revision has landed and wins.
    assert verdicts(reads.latest_labels(logged, served, landed_by=DAY + dt.timedelta(days=1))) == {
        "t2": True,
        "t3": True,
    }
    # Without a day: every label known now, and only on the transactions asked about.
    assert verdicts(reads.latest_labels(logged, served)) == {"t2": True, "t3": True}
    assert verdicts(reads.latest_labels(logged, pd.DataFrame({"transaction_id": ["t4"]}))) == {"t4": False}


def test_label_counts_by_landing_day_and_by_label_time(con):
    assert reads.label_counts_landed_on(con, DAY) == reads.LabelCounts(labels=2, frauds=1)
    assert reads.label_counts_landed_on(con, DAY + dt.timedelta(days=3)) == reads.LabelCounts(0, 0)
    # Strictly between: the label at exactly START + 10 h is left out.
    since, until = START + dt.timedelta(hours=10), START + dt.timedelta(days=2)
    assert reads.label_counts_between(con, since, until) == reads.LabelCounts(labels=2, frauds=2)
    assert reads.label_counts_between(con, dt.datetime.min, dt.datetime.max) == reads.LabelCounts(4, 2)


# --- drift's two sides and the offline store's reads


def test_current_features_are_the_days_transactions_as_of_their_own_time(con):
    current = monitoring_features.current_features(con, DAY)
    assert list(current["transaction_id"]) == ["t2", "t3", "t4"]
    # t3 sees t1 (3 h before the day) and t2 in its previous 24 hours; t2 sees t1; t4's account nothing.
    assert list(current["txn_count_24h"]) == [1, 2, 0]
    pd.testing.assert_frame_equal(current, offline.day_features(con, DAY))
    assert monitoring_features.current_features(con, DAY + dt.timedelta(days=9)).empty


def _training_set(con, stamps: list[dt.datetime]) -> None:
    con.execute("create schema if not exists features")
    frame = pd.DataFrame(
        {
            "transaction_id": [f"x{i}" for i in range(len(stamps))],
            "event_timestamp": stamps,
            "amount_usd": [float(i) for i in range(len(stamps))],
        }
    )
    con.register("training_frame", frame)
    con.execute(f"create or replace table {offline.TRAINING_SET_TABLE} as select * from training_frame")
    con.unregister("training_frame")


def test_the_reference_is_the_warm_training_rows_or_every_row_when_too_few_are_warm(con):
    first = TRANSACTIONS["t1"][1]
    warm = first + dt.timedelta(seconds=MAX_WINDOW_SECONDS)
    assert monitoring_features.warm_from(con) == warm
    # Two rows before the warm-up ends, three from it on (the boundary row included).
    _training_set(con, [first, warm - dt.timedelta(seconds=1), warm, warm + dt.timedelta(days=1), warm])

    reference, note = monitoring_features.reference_features(con, ["amount_usd"], rows=100, min_warm_rows=3)
    assert list(reference.columns) == ["amount_usd"]
    assert sorted(reference["amount_usd"]) == [2.0, 3.0, 4.0]
    assert note == f"training-set rows from {warm:%Y-%m-%d %H:%M} on (windowed features warm)"

    reference, note = monitoring_features.reference_features(con, ["amount_usd"], rows=100, min_warm_rows=4)
    assert sorted(reference["amount_usd"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert note == f"every training-set row: only 3 are past the {MAX_WINDOW_SECONDS // 86400}-day warm-up"

    # Exactly `rows` of the warm rows (the filter comes first), the same ones every time.
    sampled, _ = monitoring_features.reference_features(con, ["amount_usd"], rows=2, min_warm_rows=0)
    again, _ = monitoring_features.reference_features(con, ["amount_usd"], rows=2, min_warm_rows=0)
    assert len(sampled) == 2 and set(sampled["amount_usd"]) <= {2.0, 3.0, 4.0}
    assert list(sampled["amount_usd"]) == list(again["amount_usd"])


def test_the_reference_is_the_same_rows_on_any_thread_count(con):
    """A busy machine drew another reservoir sample with REPEATABLE under several threads, and the same demo day
    told a different drift share. 300,000 warm rows, 20,000 chosen: identical with 1 and 4 threads, twice."""
    first = TRANSACTIONS["t1"][1] + dt.timedelta(seconds=MAX_WINDOW_SECONDS)
    _training_set(con, [first + dt.timedelta(seconds=i) for i in range(300_000)])
    drawn = []
    for threads in (1, 4, 1, 4):
        con.execute(f"SET threads = {threads}")
        reference, _ = monitoring_features.reference_features(con, ["amount_usd"], rows=20_000, min_warm_rows=1)
        drawn.append(reference["amount_usd"].to_numpy())
    assert len(drawn[0]) == 20_000 and len(set(drawn[0])) == 20_000
    assert all(np.array_equal(drawn[0], d) for d in drawn[1:])
    # A sample across the whole table, not its first rows.
    assert drawn[0].min() < 10_000 and drawn[0].max() > 290_000
    with pytest.raises(ValueError, match="not a plain"):
        monitoring_features.reference_features(con, ["amount_usd; drop table x"], rows=2, min_warm_rows=1)


def test_the_training_set_is_read_in_time_then_id_order(con):
    late, early = START + dt.timedelta(hours=5), START
    _training_set(con, [late, early, late, early])
    frame = offline.read_training_set(con)
    assert list(frame["transaction_id"]) == ["x1", "x3", "x0", "x2"]


def test_newest_landed_day_and_newest_event(con):
    assert offline.newest_landed_day(con) == DAY + dt.timedelta(days=2)  # t5, landed the day after
    newest = TRANSACTIONS["t5"][1]
    assert offline.newest_event_us(con) == int(newest.replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
    con.execute("delete from marts.transactions_enriched")
    assert offline.newest_landed_day(con) is None
    assert offline.newest_event_us(con) is None
