"""The per-day summary the CLI prints: accepted, quarantined and held rows, and why a day is held."""

from datetime import date

import duckdb
import landing_factory as lf
import pandas as pd

from mlops_core.contracts import ACCOUNTS, LABELS, TRANSACTIONS
from mlops_core.ingestion import ingest_partitions
from mlops_core.ingestion_summary import day_summaries, format_day_summary, held_lines

NOW = pd.Timestamp("2026-06-01", tz="UTC")
DAYS = [date(2026, 1, 5), date(2026, 1, 6)]


def _two_days(con, landing) -> None:
    """Day 1 accepted with one quarantined row; day 2's transactions held (a third of them mobile)."""
    lf.write(landing, "accounts", DAYS[0], lf.accounts())
    lf.write(landing, "accounts", DAYS[1], lf.accounts(ids=("a4",)))
    good = lf.transactions(DAYS[0].isoformat(), n=100)
    good.loc[0, "amount"] = -5.0
    lf.write(landing, "transactions", DAYS[0], good)
    bad = lf.transactions(DAYS[1].isoformat(), n=30)
    bad.loc[:9, "channel"] = "mobile"
    lf.write(landing, "transactions", DAYS[1], bad)
    for day in DAYS:
        lf.write(landing, "labels", day, lf.labels([], day.isoformat()))
    for contract in (ACCOUNTS, TRANSACTIONS, LABELS):
        ingest_partitions(con, landing, contract, DAYS, now=NOW)


def test_held_rows_are_not_counted_as_loaded(con, landing):
    _two_days(con, landing)
    first, second = day_summaries(con, DAYS[0], DAYS[1])
    assert (first.n_accepted, first.n_quarantined, first.n_held, first.held) == (3 + 99, 1, 0, ())
    assert (second.n_accepted, second.n_quarantined, second.n_held) == (1, 10, 20)
    (held,) = second.held
    assert (held.source, held.status, held.n_kept, held.n_accepted) == ("transactions", "held", 20, 0)
    assert list(held.reasons) == ["check_values"]
    assert held_lines([first, second]) == [
        "2026-01-06 transactions held by check_values: 10 of 30 rows (33.3%) rejected, above the 2.0% threshold; "
        "e.g. channel: failed isin(('in_store', 'online')), found 'mobile'"
    ]


def test_summary_text_names_each_held_day_its_check_and_reason(con, landing):
    _two_days(con, landing)
    text = format_day_summary(con, DAYS[0], DAYS[1])
    lines = text.splitlines()
    assert lines[2].split() == ["2026-01-05", "102", "1", "0", "accepted"]
    assert lines[3].split() == ["2026-01-06", "1", "10", "20", "held:", "transactions"]
    assert (
        "Rows loaded: 103 accepted; 11 quarantined (quarantine.rejected_rows); 20 held in raw, not loaded. 1 of 2 day(s) held."
        in text
    )
    assert "  2026-01-06 transactions held by check_values: 10 of 30 rows (33.3%) rejected" in text
    # One day of the range only.
    assert "2026-01-06" not in format_day_summary(con, DAYS[0], DAYS[0])


def test_summary_from_a_warehouse_path(tmp_path, landing):
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        _two_days(con, landing)
    assert "1 of 2 day(s) held" in format_day_summary(path, DAYS[0], DAYS[1])
    assert (
        format_day_summary(tmp_path / "missing.duckdb", DAYS[0], DAYS[1])
        == "Data layer 2026-01-05..2026-01-06: no day loaded."
    )


def test_a_source_never_loaded_for_a_day_is_named(con, landing):
    lf.write(landing, "accounts", DAYS[0], lf.accounts())
    ingest_partitions(con, landing, ACCOUNTS, DAYS[:1], now=NOW)
    (summary,) = day_summaries(con, DAYS[0], DAYS[1])
    assert summary.not_loaded == ("transactions", "labels")
    assert "(not loaded: transactions, labels)" in format_day_summary(con, DAYS[0], DAYS[1])


def test_a_load_log_from_before_reasons_were_kept_still_names_the_check(con):
    con.execute("CREATE SCHEMA raw")
    con.execute(
        "CREATE TABLE raw.load_log (source VARCHAR, partition_date DATE, status VARCHAR, n_landed BIGINT, n_accepted BIGINT, "
        "n_rejected BIGINT, failed_checks VARCHAR, fingerprint VARCHAR, run_id VARCHAR, loaded_at TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO raw.load_log VALUES ('labels', '2026-01-05', 'held', 5, 5, 0, '[\"check_volume\"]', 'f', 'r', now())"
    )
    assert held_lines(day_summaries(con, DAYS[0], DAYS[0])) == ["2026-01-05 labels held by check_volume"]
