"""Gated ingestion into DuckDB: statuses, quarantine, replacement, volume, continuity."""

import json
import math
from datetime import date, timedelta

import landing_factory as lf
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
from mlops_core.validation import CHECK_REFERENCES, CHECK_TIMESTAMPS, CHECK_UNIQUE_IDS, CHECK_VALUES

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
    assert con.execute("SELECT count(*), min(_batch_status), max(_batch_status) FROM raw.transactions").fetchone() == (
        20,
        "accepted",
        "accepted",
    )
    log = con.execute(
        "SELECT status, n_landed, n_accepted, failed_checks, run_id FROM raw.load_log WHERE source='transactions'"
    ).fetchall()
    assert log == [("accepted", 20, 20, "[]", "r1")]


def test_rematerializing_a_day_replaces_it(con, landing):
    load_accounts(con, landing)
    lf.write(
        landing,
        "transactions",
        DAY,
        lf.transactions(DAY, n=20).assign(amount=lambda f: f.amount.where(f.index > 0, -1.0)),
    )
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
    loose = ingest_partitions(
        con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.05), now=NOW
    )
    assert loose.summary(CHECK_VALUES).passed and loose.held_partitions == []
    assert "2 row(s) quarantined" in loose.summary(CHECK_VALUES).description
    strict = ingest_partitions(
        con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.01), now=NOW
    )
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
    report = ingest_partitions(
        con, landing, TRANSACTIONS, days(DAY, 1), IngestionThresholds(max_reject_rate=0.005), now=NOW
    )
    assert not report.summary(CHECK_REFERENCES).passed
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert report.summary(CHECK_REFERENCES).passed and report.n_accepted == 99
    (reason,) = quarantined(con, "transactions")["reason"]
    assert reason == "account_id: 'ghost' not found in accepted accounts"
    lf.write(landing, "labels", DAY, lf.labels([frame.transaction_id[0], "never-seen"], DAY))
    labels = ingest_partitions(con, landing, LABELS, days(DAY, 1), now=NOW)
    assert (
        "transaction_id: 'never-seen' not found in accepted or held transactions"
        in labels.summary(CHECK_REFERENCES).description
    )


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
    assert (
        quarantined(con, "transactions")["reason"][0]
        == "transaction_id: 'dup0' already loaded from partition 2026-01-04"
    )


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


def test_csv_cast_failures_are_quarantined_as_landed(con, landing):
    load_accounts(con, landing)
    frame = lf.transactions(DAY, n=60).astype({"amount": object, "event_timestamp": object})
    frame.loc[3, "amount"] = "12.50 USD"
    frame.loc[5, "event_timestamp"] = "yesterday"
    lf.write(landing, "transactions", DAY, frame, "part-0.csv")
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert (report.n_landed, report.n_accepted, report.n_rejected) == (60, 58, 2)
    rows = quarantined(con, "transactions")
    assert rows["row_number"].tolist() == [3, 5]
    assert rows["reason"].tolist() == [
        "amount: expected a number, found '12.50 USD'",
        "event_timestamp: expected an ISO 8601 timestamp, found 'yesterday'",
    ]
    assert set(rows["check_name"]) == {CHECK_VALUES}
    # The record is the CSV text as landed, every column a string.
    assert json.loads(rows["record"][0])["amount"] == "12.50 USD"
    assert json.loads(rows["record"][1])["event_timestamp"] == "yesterday"
    assert con.execute("SELECT count(*) FROM raw.transactions").fetchone() == (58,)


def test_non_finite_numbers_are_quarantined_exactly_as_landed(con, landing):
    load_accounts(con, landing)
    frame = lf.transactions(DAY, n=200)
    path = lf.write(landing, "transactions", DAY, frame)
    # pandas would write NaN as a null: the landed file gets NaN, inf, -inf and a null from arrow.
    amounts = frame["amount"].tolist()
    amounts[1:5] = [float("nan"), float("inf"), float("-inf"), None]
    table = pq.read_table(path)
    pq.write_table(
        table.set_column(table.column_names.index("amount"), "amount", pa.array(amounts, pa.float64())), path
    )
    ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    rows = quarantined(con, "transactions").set_index("row_number")
    landed = {n: json.loads(rows.loc[n, "record"])["amount"] for n in (1, 2, 3, 4)}
    assert math.isnan(landed[1]) and landed[2] == math.inf and landed[3] == -math.inf and landed[4] is None
    assert rows.loc[1, "reason"] == "amount: expected a finite number, found nan"
    assert rows.loc[2, "reason"] == "amount: expected a finite number, found inf"
    assert rows.loc[3, "reason"] == "amount: expected a finite number, found -inf"
    assert rows.loc[4, "reason"] == "amount: null not allowed"
    # Every other field of the record is as landed too.
    record = json.loads(rows.loc[2, "record"])
    assert record["transaction_id"] == frame.transaction_id[2]
    assert record["event_timestamp"] == frame.event_timestamp[2].isoformat()


@pytest.mark.parametrize(
    "column, character",
    [
        ("transaction_id", "\x00"),
        ("account_id", "\x01"),
        ("merchant_id", "\x1f"),
        ("transaction_id", "\x7f"),
        ("merchant_id", "\x9b"),
    ],
)
def test_ids_with_control_characters_are_rejected_naming_column_and_row(con, landing, column, character):
    load_accounts(con, landing)
    frame = lf.transactions(DAY, n=100)
    frame.loc[7, column] = frame.loc[7, column] + character + "x"
    lf.write(landing, "transactions", DAY, frame)
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert report.n_accepted == 99
    (row,) = quarantined(con, "transactions").itertuples()
    assert row.row_number == 7 and row.check_name == CHECK_VALUES
    assert row.reason.startswith(f"{column}: control character {character!r} at position ")
    assert " in row 7 " in row.reason
    assert json.loads(row.record)[column].endswith(character + "x")
    assert con.execute(
        f"SELECT count(*) FROM raw.transactions WHERE regexp_matches({column}, '[\\x00-\\x1f\\x7f-\\x9f]')"
    ).fetchone() == (0,)


def test_label_and_account_ids_reject_control_characters_too(con, landing):
    ids = [f"a{i}" for i in range(60)]
    ids[1] = "a\x002"
    lf.write(landing, "accounts", DAY, lf.accounts(ids=ids))
    assert ingest_partitions(con, landing, ACCOUNTS, days(DAY, 1), now=NOW).n_accepted == 59
    assert quarantined(con, "accounts")["reason"].tolist() == [
        "account_id: control character '\\x00' at position 1 in row 1 not allowed in an id, found 'a\\x002'"
    ]
    lf.write(landing, "transactions", DAY, lf.transactions(DAY, n=60, accounts_=("a0",)))
    ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    labelled = [f"t20260105_{i}" for i in range(60)]
    labelled[5] = "t20260105_\x7f"
    lf.write(landing, "labels", DAY, lf.labels(labelled, DAY).assign(labeled_at=pd.Timestamp(f"{DAY}T23:59:00Z")))
    assert ingest_partitions(con, landing, LABELS, days(DAY, 1), now=NOW).n_accepted == 59
    (reason,) = quarantined(con, "labels")["reason"]
    assert reason.startswith("transaction_id: control character '\\x7f' at position 10 in row 5 ")


def _stable_history(con, landing, n_days=4, rows=100) -> date:
    run = _steady_days(con, landing, n_days, rows)
    ingest_partitions(con, landing, TRANSACTIONS, run, now=NOW)
    return run[-1] + timedelta(days=1)


def test_unreadable_csv_lines_are_counted_and_quarantined_without_a_volume_verdict(con, landing):
    day = _stable_history(con, landing)
    text = lf.transactions(day.isoformat(), n=100).to_csv(index=False).encode()
    path = landing / "transactions" / f"date={day}" / "part-0.csv"
    path.parent.mkdir(parents=True)
    # Cut off after a row in the middle, then binary junk: no CSV parser reads it.
    path.write_bytes(text[: text.index(b"\n", len(text) // 2) + 1] + b"t_cut,\x00\x9c\xff\xfe\x00garbage\x00\n")
    lines = path.read_bytes().count(b"\n") - 1
    report = ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW)
    outcome = report.outcomes[0]
    assert (outcome.status, outcome.n_landed, outcome.n_accepted, outcome.n_rejected) == ("held", lines, 0, lines)
    assert set(outcome.failures) == {CHECK_FILES_READABLE}
    assert report.summary(CHECK_VOLUME).passed
    assert f"Not judged for {day}" in report.summary(CHECK_VOLUME).description
    rows = quarantined(con, "transactions")
    assert rows["row_number"].tolist() == list(range(lines))
    assert set(rows["check_name"]) == {CHECK_FILES_READABLE}
    assert all(r.startswith(f"{path}: unreadable CSV file (") for r in rows["reason"])
    assert f"its {lines} data line(s) are kept in quarantine" in rows["reason"][0]
    assert json.loads(rows["record"].iloc[-1])["line"].startswith("t_cut,\x00\\x9c")
    (reasons,) = con.execute("SELECT reasons FROM raw.load_log WHERE partition_date = ?", [day]).fetchone()
    assert str(path) in json.loads(reasons)[CHECK_FILES_READABLE][0]


def test_corrupt_parquet_is_recorded_in_quarantine_and_not_judged_on_volume(con, landing):
    day = _stable_history(con, landing)
    path = lf.write(landing, "transactions", day, lf.transactions(day.isoformat(), n=100))
    path.write_bytes(path.read_bytes()[:300])
    report = ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW)
    assert set(report.outcomes[0].failures) == {CHECK_FILES_READABLE}
    rows = con.execute("SELECT source_file, row_number, record, reason FROM quarantine.rejected_rows").fetchall()
    ((file, row_number, record, reason),) = rows
    assert (file, row_number, record) == (str(path), None, None)
    assert reason.startswith(f"{path}: unreadable parquet file") and "no row can be read or counted" in reason
    # Neither the unknown count nor this day joins the volume baseline of the next one.
    next_day = day + timedelta(days=1)
    lf.write(landing, "transactions", next_day, lf.transactions(next_day.isoformat(), n=100))
    assert ingest_partitions(con, landing, TRANSACTIONS, [next_day], now=NOW).summary(CHECK_VOLUME).passed


def test_a_held_day_counts_for_continuity_and_keeps_its_reasons(con, landing):
    run = _steady_days(con, landing, 3, 20)
    lf.write(landing, "transactions", run[1], lf.transactions(run[1].isoformat(), n=20).assign(channel="mobile"))
    ingest_partitions(con, landing, TRANSACTIONS, run[:2], now=NOW)
    status, failed, reasons = con.execute(
        "SELECT status, failed_checks, reasons FROM raw.load_log WHERE partition_date = ?", [run[1]]
    ).fetchone()
    assert (status, json.loads(failed)) == ("held", [CHECK_VALUES])
    assert "20 of 20 rows (100.0%) rejected" in json.loads(reasons)[CHECK_VALUES][0]
    assert ingest_partitions(con, landing, TRANSACTIONS, run[2:], now=NOW).summary(CHECK_PARTITION_CONTINUITY).passed


def test_labels_about_a_held_transactions_day_load_and_wait_for_it(con, landing):
    (day,) = _steady_days(con, landing, 1, 50)
    frame = lf.transactions(day.isoformat(), n=50)
    lf.write(landing, "transactions", day, frame.drop(columns=["merchant_category"]))
    assert ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW).held_partitions == [day.isoformat()]
    # Verdicts about the unreadable file's transactions wait; one about a transaction that never landed does not.
    ids = frame.transaction_id.tolist() + ["never-landed"]
    lf.write(
        landing, "labels", day, lf.labels(ids, day.isoformat()).assign(labeled_at=pd.Timestamp(f"{day}T23:59:00Z"))
    )
    labels = ingest_partitions(con, landing, LABELS, [day], now=NOW)
    assert (labels.held_partitions, labels.n_accepted, labels.rejected_by_check[CHECK_REFERENCES]) == ([], 50, 1)
    assert quarantined(con, "labels")["reason"].tolist() == [
        "transaction_id: 'never-landed' not found in accepted or held transactions"
    ]
    # The fixed file: the transactions are accepted and every waiting verdict has its transaction.
    lf.write(landing, "transactions", day, frame)
    assert ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW).held_partitions == []
    assert con.execute(
        "SELECT count(*) FROM raw.labels l JOIN raw.transactions t USING (transaction_id) WHERE t._batch_status = 'accepted'"
    ).fetchone() == (50,)


def test_a_held_transaction_landing_after_its_accepted_verdict_is_rejected(con, landing):
    (day,) = _steady_days(con, landing, 1, 50)
    frame = lf.transactions(day.isoformat(), n=50)
    frame.loc[:4, "amount"] = -1.0  # 5 of 50 rejected: the day is held, 45 rows wait in raw
    lf.write(landing, "transactions", day, frame)
    ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW)
    verdicts = lf.labels(frame.transaction_id, day.isoformat()).assign(labeled_at=pd.Timestamp(f"{day}T23:59:00Z"))
    verdicts.loc[0, "labeled_at"] = pd.Timestamp(f"{day}T00:30:00Z")  # about a quarantined row
    lf.write(landing, "labels", day, verdicts)
    assert ingest_partitions(con, landing, LABELS, [day], now=NOW).n_accepted == 50
    # The re-delivered file places transaction 0 at 10:00, after the verdict about it.
    frame["amount"] = 10.0
    frame.loc[0, "event_timestamp"] = pd.Timestamp(f"{day}T10:00:00Z")
    lf.write(landing, "transactions", day, frame)
    report = ingest_partitions(con, landing, TRANSACTIONS, [day], now=NOW)
    assert (report.held_partitions, report.n_accepted) == ([], 49)
    assert quarantined(con, "transactions")["reason"].tolist() == [
        f"event_timestamp: {day}T10:00:00+00:00 is after labeled_at {day}T00:30:00+00:00 of labels "
        f"{frame.transaction_id[0]!r} (already accepted)"
    ]


def test_transactions_out_of_order_with_their_account_are_rejected_from_either_side(con, landing):
    lf.write(
        landing,
        "accounts",
        DAY,
        lf.accounts(ids=("a1", "late"), created=f"{DAY}T00:00:00Z").assign(
            created_at=pd.to_datetime([f"{DAY}T00:00:00Z", f"{DAY}T12:00:00Z"], utc=True)
        ),
    )
    ingest_partitions(con, landing, ACCOUNTS, days(DAY, 1), now=NOW)
    frame = lf.transactions(DAY, n=100, accounts_=("a1",))
    frame.loc[10, "account_id"] = "late"
    lf.write(landing, "transactions", DAY, frame)
    report = ingest_partitions(con, landing, TRANSACTIONS, days(DAY, 1), now=NOW)
    assert report.n_accepted == 99 and report.rejected_by_check[CHECK_TIMESTAMPS] == 1
    assert quarantined(con, "transactions")["reason"].tolist() == [
        f"event_timestamp: {frame.event_timestamp[10].isoformat()} is before created_at {DAY}T12:00:00+00:00 of accounts 'late'"
    ]
    # A later snapshot moving a1's opening after its accepted transactions is rejected in turn.
    later = "2026-01-06"
    lf.write(landing, "accounts", later, lf.accounts(ids=("a1",), created=f"{DAY}T08:00:00Z"))
    ingest_partitions(con, landing, ACCOUNTS, days(later, 1), now=NOW)
    (reason,) = quarantined(con, "accounts")["reason"]
    assert reason == (
        f"created_at: {DAY}T08:00:00+00:00 is after event_timestamp {frame.event_timestamp[0].isoformat()} "
        f"of transactions {frame.transaction_id[0]!r} (already accepted)"
    )
