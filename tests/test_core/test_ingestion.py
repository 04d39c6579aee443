"""Gated ingestion into DuckDB: statuses, quarantine, replacement, volume, continuity."""

import json
from datetime import date, timedelta

import pandas as pd
import pytest

import landing_factory as lf
from mlops_core.contracts import ACCOUNTS, LABELS, TRANSACTIONS
from mlops_core.ingestion import (
    CHECK_LANDING_UNCHANGED,
    CHECK_PARTITION_CONTINUITY,
    CHECK_VOLUME,
    IngestionThresholds,
    gate_checks,
    ingest_partitions,
)
from mlops_core.landing import CHECK_FILES_READABLE
from mlops_core.validation import CHECK_REFERENCES, CHECK_UNIQUE_IDS, CHECK_VALUES

NOW = pd.Timestamp("2026-06-01", tz="UTC")
DAY = "2026-01-05"


def days(first: str, n: int) -> list[date]:
    start = date.fromisoformat(first)
    return [start + timedelta(days=i) for i in range(n)]


def load_accounts(con, landing, day=DAY):
    lf.write(landing, "accounts", day, lf.accounts())
    return ingest_partitions(con, landing, ACCOUNTS, [date.fromisoformat(day)], now=NOW)


def quarantined(con, source):
    return con.execute(
        "SELECT partition_date, source_file, row_number, check_name, reason, record FROM quarantine.rejected_rows "
        "WHERE source = ? ORDER BY source_file, row_number",
        [source],
    ).df()


def test_clean_day_is_accepted_and_logged(con, landing):
    load_accounts(con, landing)
    lf.write(landing, "transactions", DAY, lf.transactions(DAY, n=20))
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), run_id="r1", now=NOW)
    assert (report.n_landed, report.n_accepted, report.n_rejected) == (20, 20, 0)
    assert report.held_partitions == []
    assert all(report.summary(c).passed for c in gate_checks(TRANSACTIONS))
    assert con.execute("SELECT count(*), min(_batch_status), max(_batch_status) FROM raw.transactions").fetchone() == (20, "accepted", "accepted")
    log = con.execute("SELECT status, n_landed, n_accepted, failed_checks, run_id FROM raw.load_log WHERE source='transactions'").fetchall()
    assert log == [("accepted", 20, 20, "[]", "r1")]


def test_rematerializing_a_day_replaces_it(con, landing):
    load_accounts(con, landing)
    lf.write(landing, "transactions", DAY, lf.transactions(DAY, n=20).assign(amount=lambda f: f.amount.where(f.index > 0, -1.0)))
    for _ in range(3):
        ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert con.execute("SELECT count(*) FROM raw.transactions").fetchone() == (19,)
    assert len(quarantined(con, "transactions")) == 1
    assert con.execute("SELECT count(*) FROM raw.load_log WHERE source='transactions'").fetchone() == (1,)


def test_rejections_under_threshold_pass_and_over_threshold_hold(con, landing):
    load_accounts(con, landing)
    frame = lf.transactions(DAY, n=100)
    frame.loc[[3, 7], "channel"] = "mobile"
    lf.write(landing, "transactions", DAY, frame)
    loose = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.05), now=NOW)
    assert loose.summary(CHECK_VALUES).passed and loose.held_partitions == []
    assert "2 row(s) quarantined" in loose.summary(CHECK_VALUES).description
    strict = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.01), now=NOW)
    summary = strict.summary(CHECK_VALUES)
    assert not summary.passed
    assert summary.failing_partitions == [DAY]
    assert "2 of 100 rows (2.0%) rejected, above the 1.0% threshold" in summary.description
    assert "channel: failed isin(('in_store', 'online')), found 'mobile'" in summary.description
    assert con.execute("SELECT DISTINCT _batch_status FROM raw.transactions").fetchall() == [("held",)]
    rows = quarantined(con, "transactions")
    assert rows["row_number"].tolist() == [3, 7]
    assert set(rows["check_name"]) == {CHECK_VALUES}
    assert json.loads(rows["record"][0])["channel"] == "mobile"


def test_unknown_references_are_quarantined(con, landing):
    load_accounts(con, landing)
    frame = lf.transactions(DAY, n=100)
    frame.loc[4, "account_id"] = "ghost"
    lf.write(landing, "transactions", DAY, frame)
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.005), now=NOW)
    assert not report.summary(CHECK_REFERENCES).passed
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert report.summary(CHECK_REFERENCES).passed and report.n_accepted == 99
    (reason,) = quarantined(con, "transactions")["reason"]
    assert reason == "account_id: 'ghost' not found in accepted accounts"
    lf.write(landing, "labels", DAY, lf.labels([frame.transaction_id[0], "never-seen"], DAY))
    labels = ingest_partitions(con, landing, LABELS, days(DAY, 1), now=NOW)
    assert "transaction_id: 'never-seen' not found in accepted transactions" in labels.summary(CHECK_REFERENCES).description


def test_held_references_do_not_count_as_known(con, landing):
    lf.write(landing, "accounts", DAY, lf.accounts().assign(age_band="unknown"))
    assert ingest_partitions(con, landing, ACCOUNTS, days(DAY, 1), now=NOW).held_partitions == [DAY]
    lf.write(landing, "transactions", DAY, lf.transactions(DAY, n=5))
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert report.n_accepted == 0 and report.rejected_by_check[CHECK_REFERENCES] == 5


def test_ids_already_loaded_on_another_day_are_duplicates(con, landing):
    load_accounts(con, landing, "2026-01-04")
    lf.write(landing, "transactions", "2026-01-04", lf.transactions("2026-01-04", n=5, prefix="dup"))
    ingest_partitions(con, landing, TRANSACTIONS, days("2026-01-04", 1), now=NOW)
    lf.write(landing, "transactions", DAY, lf.transactions(DAY, n=5, prefix="dup"))
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert not report.summary(CHECK_UNIQUE_IDS).passed
    assert quarantined(con, "transactions")["reason"][0] == "transaction_id: 'dup0' already loaded from partition 2026-01-04"


def test_missing_partition_is_held_with_its_path(con, landing):
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    summary = report.summary(CHECK_FILES_READABLE)
    assert not summary.passed
    assert f"no files in {landing / 'transactions' / ('date=' + DAY)} (missing partition)" in summary.description


def _steady_days(con, landing, n_days: int, rows: int) -> list[date]:
    load_accounts(con, landing, "2026-01-01")
    run = days("2026-01-01", n_days)
    for day in run:
        lf.write(landing, "transactions", day, lf.transactions(day.isoformat(), n=rows))
    return run


@pytest.mark.parametrize("rows, passes", [(100, True), (40, False), (260, False), (55, True)])
def test_volume_against_trailing_median(con, landing, rows, passes):
    history = _steady_days(con, landing, 5, 100)
    ingest_partitions(con, landing, TRANSACTIONS, history, now=NOW)
    day = history[-1] + timedelta(days=1)
    lf.write(landing, "transactions", day, lf.transactions(day.isoformat(), n=rows))
    summary = ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW).summary(CHECK_VOLUME)
    assert summary.passed is passes
    if not passes:
        assert f"{rows} rows landed, {rows / 100:.2f}x the median of the 5 trailing days (100)" in summary.description


def test_volume_gate_waits_for_history(con, landing):
    run = _steady_days(con, landing, 2, 100)
    lf.write(landing, "transactions", run[1], lf.transactions(run[1].isoformat(), n=5))
    assert ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW).summary(CHECK_VOLUME).passed


def test_gap_in_loaded_days_fails_continuity(con, landing):
    run = _steady_days(con, landing, 4, 10)
    ingest_partitions(con, landing, TRANSACTIONS, run[:1], now=NOW)
    summary = ingest_partitions(con, landing, TRANSACTIONS, run[3:], now=NOW).summary(CHECK_PARTITION_CONTINUITY)
    assert not summary.passed
    assert "2 earlier day(s) never loaded: 2026-01-02, 2026-01-03 (last loaded day 2026-01-01)" in summary.description
    assert ingest_partitions(con, landing, TRANSACTIONS, run[1:3], now=NOW).summary(CHECK_PARTITION_CONTINUITY).passed


def test_relanded_files_are_reported_stale(con, landing):
    run = _steady_days(con, landing, 2, 10)
    ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW)
    lf.write(landing, "transactions", run[0], lf.transactions(run[0].isoformat(), n=12))
    report = ingest_partitions(con, landing, TRANSACTIONS, run[1:], now=NOW)
    assert [day for day, _ in report.changed_since_load] == [run[0].isoformat()]
    assert CHECK_LANDING_UNCHANGED not in gate_checks(TRANSACTIONS)


def test_chunking_does_not_change_the_outcome(landing):
    import duckdb

    run = days("2026-01-01", 6)
    lf.write(landing, "accounts", run[0], lf.accounts())
    for i, day in enumerate(run):
        frame = lf.transactions(day.isoformat(), n=30)
        frame.loc[i, "amount"] = -1.0
        lf.write(landing, "transactions", day, frame)
    results = []
    for chunk_rows in (1, 45, 10_000):
        con = duckdb.connect()
        ingest_partitions(con, landing, ACCOUNTS, run[:1], now=NOW)
        report = ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW, chunk_rows=chunk_rows)
        results.append(
            (
                [(o.partition_date, o.n_accepted, o.status) for o in report.outcomes],
                con.execute("SELECT count(*) FROM quarantine.rejected_rows").fetchone(),
                con.execute("SELECT sum(amount) FROM raw.transactions").fetchone(),
            )
        )
    assert results[0] == results[1] == results[2]
    assert results[0][1] == (6,)


def test_ids_repeated_across_chunks_of_one_run_are_caught(con, landing):
    run = days("2026-01-01", 3)
    lf.write(landing, "accounts", run[0], lf.accounts())
    for day in run:
        lf.write(landing, "transactions", day, lf.transactions(day.isoformat(), n=60))
    repeat = lf.transactions(run[2].isoformat(), n=60)
    repeat.loc[0, "transaction_id"] = "t20260101_7"
    lf.write(landing, "transactions", run[2], repeat)
    ingest_partitions(con, landing, ACCOUNTS, run[:1], now=NOW)
    report = ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW, chunk_rows=50)
    assert report.rejected_by_check[CHECK_UNIQUE_IDS] == 1
    assert quarantined(con, "transactions")["reason"].tolist() == [
        "transaction_id: 't20260101_7' already loaded from partition 2026-01-01"
    ]
    # Re-materializing the same run must not flag a day's ids against its own earlier load.
    again = ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW, chunk_rows=50)
    assert again.rejected_by_check[CHECK_UNIQUE_IDS] == 1
