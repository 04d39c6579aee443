"""The data layer materialized into a temp DuckDB: the happy path, every bad-input class, held days, recovery."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import landing_factory as lf
import pandas as pd
import pytest

from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.ingestion.summary import held_day_lines
from mlops_assets.transform.assets import warehouse_assets
from mlops_assets.transform.project import DBT_PROJECT_DIR
from mlops_core.contracts import SOURCES
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.ingestion import ingest_partitions
from mlops_core.settings import Settings
from resources.environment import build_resources
from resources.warehouse import partial_parse_cache

START = date(2026, 3, 2)
DAYS = 6
BAD_DAY = START + timedelta(days=DAYS - 1)


@pytest.fixture(scope="module")
def home_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-layer") / "home"


@pytest.fixture
def settings(home_path: Path, monkeypatch) -> Settings:
    """An empty home, at the same path for every test of the module: dbt's saved parse state holds the warehouse
    path (resources/warehouse.py, partial_parse_cache), so a new path per test parsed the whole dbt project
    again (about 2 s of CPU). That state is all a test inherits: dbt checks every hash before using it."""
    cache = partial_parse_cache(home_path / "warehouse.duckdb")
    state = cache.read_bytes() if cache.is_file() else None
    shutil.rmtree(home_path, ignore_errors=True)
    home_path.mkdir(parents=True)
    if state is not None:
        cache.write_bytes(state)
    settings = Settings.from_env({"MLOPS_HOME": str(home_path)})
    assert settings.duckdb_path == home_path / "warehouse.duckdb" and not settings.duckdb_path.exists()
    # Registered with monkeypatch so build_resources' export is undone after the test.
    monkeypatch.setenv("MLOPS_HOME", str(settings.home))
    monkeypatch.setenv("MLOPS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MLOPS_DUCKDB_PATH", str(settings.duckdb_path))
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))
    return settings


def materialize(settings: Settings, first: date, last: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*raw_assets, *warehouse_assets],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=False,
    )


def query(settings: Settings, sql: str, params=None):
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def failed_checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], str]:
    evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return {
        (ev.asset_key.to_user_string(), ev.check_name): ev.description
        for ev in evaluations
        if not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.slow
def test_baseline_days_flow_into_the_marts(settings):
    # This test reads dbt's own log: at debug, as a user diagnosing dbt would ask. Its warehouse starts without
    # saved parse state, whichever test of the module used the path before.
    settings = dataclasses.replace(settings, dbt_file_log_level="debug")
    partial_parse_cache(settings.duckdb_path).unlink(missing_ok=True)
    summary = generate_landing(DemoSpec(start=START, days=DAYS, rows_per_day=400, seed=5), settings.landing_dir)
    result = materialize(settings, START, BAD_DAY)
    assert result.success
    assert failed_checks(result) == {}
    assert "marts/transactions_enriched" in materialized(result)
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched") == [(summary.rows["transactions"],)]
    assert query(settings, "SELECT count(*) FROM quarantine.rejected_rows") == [(0,)]
    # Re-materializing the same days replaces them: the marts do not grow.
    again = materialize(settings, START, BAD_DAY)
    assert again.success
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched") == [(summary.rows["transactions"],)]
    # dbt parsed the project in full once for this warehouse (its path is not the one `mlops prepare` parsed
    # for), then reused the state the warehouse kept: the second run says nothing about a full parse.
    assert partial_parse_cache(settings.duckdb_path).is_file()
    assert "Unable to do partial parsing" in dbt_log(result)
    assert "Unable to do partial parsing" not in dbt_log(again) and "Partial parsing enabled" in dbt_log(again)
    # The models and their data tests ran; dbt's unit tests (logic on fixed fixtures) are left to CI.
    ran = {r["unique_id"].split(".")[0] for r in dbt_run_results(again)}
    assert {"model", "test"} <= ran and "unit_test" not in ran, ran


def dbt_folder(result: dg.ExecuteInProcessResult) -> Path:
    """The target folder of the run's dbt invocation (dagster-dbt makes one per run)."""
    (folder,) = (DBT_PROJECT_DIR / "target").glob(f"warehouse_models-{result.run_id[:7]}-*")
    return folder


def dbt_log(result: dg.ExecuteInProcessResult) -> str:
    return (dbt_folder(result) / "dbt.log").read_text()


def dbt_run_results(result: dg.ExecuteInProcessResult) -> list[dict]:
    return json.loads((dbt_folder(result) / "run_results.json").read_text())["results"]


# scenario -> (asset, the exact set of blocking checks that fail, text in the check message,
#              text in each quarantined row's reason, or None when the batch is held without row rejections)
BAD_INPUTS = {
    "bad_missing_column": (
        "raw_transactions",
        {"check_schema"},
        "missing column(s) ['merchant_category']",
        "missing column(s) ['merchant_category']",
    ),
    "bad_renamed_column": (
        "raw_transactions",
        {"check_schema"},
        "(was 'amount' renamed to 'amt'?)",
        "unexpected column(s) ['amt']",
    ),
    "bad_extra_column": (
        "raw_transactions",
        {"check_schema"},
        "unexpected column(s) ['promo_code']",
        "unexpected column(s) ['promo_code']",
    ),
    "bad_wrong_type": (
        "raw_transactions",
        {"check_schema"},
        "column 'amount': expected number (float64), found string",
        "column 'amount': expected number",
    ),
    "bad_out_of_range": (
        "raw_transactions",
        {"check_values"},
        "above the 2.0% threshold; e.g. amount: failed",
        "amount: failed",
    ),
    "bad_allowed_values": ("raw_transactions", {"check_values"}, "failed isin", "failed isin"),
    "bad_nulls": ("raw_transactions", {"check_values"}, "null not allowed", "null not allowed"),
    "bad_duplicate_ids": (
        "raw_transactions",
        {"check_unique_ids"},
        "transaction_id: duplicate",
        "transaction_id: duplicate",
    ),
    "bad_unknown_accounts": (
        "raw_transactions",
        {"check_references"},
        "not found in accepted accounts",
        "not found in accepted accounts",
    ),
    "bad_unknown_transactions": (
        "raw_labels",
        {"check_references"},
        "not found in accepted or held transactions",
        "not found in accepted or held transactions",
    ),
    "bad_volume_drop": ("raw_transactions", {"check_volume"}, "x the median of the 5 trailing days", None),
    "bad_volume_spike": ("raw_transactions", {"check_volume"}, "x the median of the 5 trailing days", None),
    "bad_missing_partition": (
        "raw_transactions",
        {"check_files_readable", "check_volume"},
        "(missing partition)",
        None,
    ),
    "bad_timestamps": ("raw_transactions", {"check_timestamps"}, "event_timestamp:", "event_timestamp:"),
    "bad_empty_file": ("raw_transactions", {"check_files_readable", "check_volume"}, "empty file (0 bytes)", None),
    # Rows that cannot be read are not a volume: the file is kept in quarantine, the volume not judged.
    "bad_unreadable_file": (
        "raw_transactions",
        {"check_files_readable"},
        "unreadable parquet file",
        "unreadable parquet file",
    ),
}


def load_clean_history(settings: Settings) -> None:
    """Days before the bad one go in directly (fast); the bad day runs through Dagster."""
    settings.ensure_dirs()
    with duckdb.connect(str(settings.duckdb_path)) as con:
        for contract in SOURCES.values():
            ingest_partitions(con, settings.landing_dir, contract, [START + timedelta(days=i) for i in range(DAYS - 1)])


@pytest.mark.parametrize("scenario", sorted(BAD_INPUTS))
def test_bad_input_is_gated_quarantined_and_held_without_stopping_the_other_sources(settings, scenario):
    asset, expected_failures, message, reason = BAD_INPUTS[scenario]
    generate_landing(
        DemoSpec(start=START, days=DAYS, rows_per_day=1500, seed=5, scenario=scenario, drift_day=DAYS - 1),
        settings.landing_dir,
    )
    load_clean_history(settings)
    # The raw assets only: dbt's part is the held-day test below.
    result = dg.materialize(
        raw_assets,
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=BAD_DAY.isoformat(),
        raise_on_error=False,
    )

    failures = failed_checks(result)
    assert {check for (key, check) in failures if key == asset} == expected_failures
    assert all(key == asset for key, _ in failures), failures
    primary = (
        sorted(expected_failures - {"check_volume"})[0] if len(expected_failures) > 1 else next(iter(expected_failures))
    )
    assert message in failures[(asset, primary)]
    assert BAD_DAY.isoformat() in failures[(asset, primary)]
    # A held day stops no other step: every source of the day was loaded and judged.
    assert materialized(result) == {"raw_accounts", "raw_transactions", "raw_labels"}
    statuses = dict(query(settings, "SELECT source, status FROM raw.load_log WHERE partition_date = ?", [BAD_DAY]))
    source = asset.removeprefix("raw_")
    assert statuses == {s: "held" if s == source else "accepted" for s in SOURCES}
    assert query(
        settings,
        f"SELECT count(*) FROM raw.{source} WHERE _partition_date = ? AND _batch_status = 'accepted'",
        [BAD_DAY],
    ) == [(0,)]
    (held_line,) = held_day_lines(result)
    assert held_line.startswith(f"{BAD_DAY} {source} held by ") and primary in held_line and message in held_line
    (reasons,) = query(
        settings, "SELECT reasons FROM raw.load_log WHERE source = ? AND partition_date = ?", [source, BAD_DAY]
    )[0]
    assert message in json.loads(reasons)[primary][0]
    rows = query(
        settings,
        "SELECT check_name, reason FROM quarantine.rejected_rows WHERE source = ? AND partition_date = ?",
        [source, BAD_DAY],
    )
    if reason is None:
        assert rows == []
    else:
        assert rows, "rejected rows must be kept in quarantine"
        assert {check for check, _ in rows} <= expected_failures
        assert all(reason in text for check, text in rows if check == primary)
        assert any(check == primary for check, _ in rows)


def _stray_file(settings: Settings, source: str, day: date) -> Path:
    """A file of a type the landing zone does not take: the day is held, its rows wait in raw."""
    path = settings.landing_dir / source / f"date={day}" / "part-1.xlsx"
    path.write_bytes(b"PK\x03\x04 not a parquet file")
    return path


@pytest.mark.slow
def test_a_held_day_blocks_no_later_day_and_is_released_once_fixed(settings):
    """Issue 14: one held transactions day in a multi-day run used to stop raw_labels for it
    and dbt for every day; later runs then failed check_partition_continuity."""
    last = START + timedelta(days=DAYS - 1)
    held = START + timedelta(days=2)
    generate_landing(DemoSpec(start=START, days=DAYS, rows_per_day=400, seed=5), settings.landing_dir)
    stray = _stray_file(settings, "transactions", held)

    result = materialize(settings, START, last)

    assert not result.success
    failures = failed_checks(result)
    assert set(failures) == {("raw_transactions", "check_files_readable"), ("daily_load_summary", "check_no_held_days")}
    failed_steps = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed_steps == {"daily_load_summary"}, "only the summary's gate fails; raw and dbt ran"
    assert {"raw_labels", "marts/transactions_enriched", "marts/transaction_labels"} <= materialized(result)
    (line,) = held_day_lines(result)
    assert line.startswith(f"{held} transactions held by check_files_readable: ") and "part-1.xlsx" in line
    assert "unsupported file type '.xlsx'" in failures[("daily_load_summary", "check_no_held_days")]
    # Every other day and source is in; the held day's rows wait in raw, none in the marts.
    loads = query(settings, "SELECT source, partition_date, status FROM raw.load_log ORDER BY ALL")
    assert len(loads) == 3 * DAYS
    assert [(s, d) for s, d, status in loads if status == "held"] == [("transactions", held)]
    per_day = dict(query(settings, "SELECT event_date, count(*) FROM marts.transactions_enriched GROUP BY ALL"))
    assert held not in per_day and len(per_day) == DAYS - 1
    held_rows = query(
        settings, "SELECT count(*) FROM raw.transactions WHERE _partition_date = ? AND _batch_status = 'held'", [held]
    )[0][0]
    assert held_rows > 300
    # Labels about the held day's transactions are kept, waiting for their transactions.
    waiting = query(
        settings,
        "SELECT count(*) FROM raw.labels l JOIN raw.transactions t USING (transaction_id) "
        "WHERE t._partition_date = ? AND l._batch_status = 'accepted'",
        [held],
    )[0][0]
    assert waiting > 0
    assert query(
        settings,
        "SELECT count(*) FROM marts.transaction_labels l JOIN raw.transactions t USING (transaction_id) "
        "WHERE t._partition_date = ?",
        [held],
    ) == [(0,)]

    # The next run of later days passes continuity: the held day was loaded and judged.
    assert materialize(settings, last, last).success

    stray.unlink()
    fixed = materialize(settings, held, held)
    assert fixed.success, failed_checks(fixed)
    assert held_day_lines(fixed) == []
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", [held]) == [
        (held_rows,)
    ]
    assert query(
        settings,
        "SELECT count(*) FROM marts.transaction_labels l JOIN raw.transactions t USING (transaction_id) "
        "WHERE t._partition_date = ?",
        [held],
    ) == [(waiting,)]


def test_a_held_accounts_day_does_not_stop_transactions(settings):
    days = [START + timedelta(days=i) for i in range(3)]
    settings.ensure_dirs()
    lf.write(settings.landing_dir, "accounts", days[0], lf.accounts(created="2026-02-01T00:00:00Z"))
    for day in days[1:]:
        lf.write(settings.landing_dir, "accounts", day, lf.accounts(ids=(f"new{day:%d}",), created=f"{day}T00:00:00Z"))
    for day in days:
        known = ("a1", "a2", "a3") + (("new03",) if day > days[0] else ())
        lf.write(settings.landing_dir, "transactions", day, lf.transactions(day.isoformat(), n=50, accounts_=known))
        lf.write(settings.landing_dir, "labels", day, lf.labels([], day.isoformat()))
    _stray_file(settings, "accounts", days[1])
    result = dg.materialize(
        raw_assets,
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
        raise_on_error=False,
    )
    # Every source ran for every day; the accounts day is held, nothing else is cut off by it.
    assert materialized(result) == {"raw_accounts", "raw_transactions", "raw_labels"}
    assert set(failed_checks(result)) == {
        ("raw_accounts", "check_files_readable"),
        ("raw_transactions", "check_references"),
    }
    loads = query(settings, "SELECT source, partition_date, status FROM raw.load_log ORDER BY ALL")
    assert [(s, d) for s, d, status in loads if status == "held"] == [
        ("accounts", days[1]),
        ("transactions", days[1]),
        ("transactions", days[2]),
    ]
    assert len(loads) == 9
    # Transactions of the account only the held day opened wait in quarantine, saying which day to fix.
    reasons = query(settings, "SELECT DISTINCT reason FROM quarantine.rejected_rows WHERE source = 'transactions'")
    assert reasons == [
        (
            f"account_id: 'new03' not found in accepted accounts (it is in held accounts of {days[1]}: "
            "fix that day, then re-ingest this one)",
        )
    ]


@pytest.mark.slow
def test_a_transaction_before_its_account_opened_is_quarantined_before_dbt(settings):
    """Issue 14: such a row passed every gate, then failed dbt's non_negative test on
    account_age_days after the mart was written (exit 1 with the row in the mart)."""
    day = START.isoformat()
    settings.ensure_dirs()
    accounts = lf.accounts(created="2026-02-01T00:00:00Z")
    late = lf.accounts(ids=("a_late",), created=f"{day}T12:00:00Z")
    lf.write(settings.landing_dir, "accounts", day, pd.concat([accounts, late], ignore_index=True))
    transactions = lf.transactions(day, n=100)
    transactions.loc[10, "account_id"] = "a_late"  # at 02:23, before the 12:00 opening
    transactions.loc[80, "account_id"] = "a_late"  # at 19:11, after it
    lf.write(settings.landing_dir, "transactions", day, transactions)
    # 60 verdicts a minute after their transactions; one of them five minutes before it.
    labelled = transactions.iloc[20:80].reset_index(drop=True)
    labels = lf.labels(labelled.transaction_id, day, is_fraud=True, source="customer_report")
    labels["labeled_at"] = labelled.event_timestamp + pd.Timedelta(minutes=1)
    labels.loc[0, "labeled_at"] = labelled.event_timestamp[0] - pd.Timedelta(minutes=5)
    lf.write(settings.landing_dir, "labels", day, labels)

    result = materialize(settings, START, START)

    assert result.success, failed_checks(result)
    tx_reason = query(settings, "SELECT reason FROM quarantine.rejected_rows WHERE source = 'transactions'")
    assert tx_reason == [
        (
            f"event_timestamp: {transactions.event_timestamp[10].isoformat()} is before created_at "
            f"{day}T12:00:00+00:00 of accounts 'a_late'",
        )
    ]
    (label_reason,) = query(settings, "SELECT reason FROM quarantine.rejected_rows WHERE source = 'labels'")[0]
    assert label_reason == (
        f"labeled_at: {labels.labeled_at[0].isoformat()} is before event_timestamp "
        f"{labelled.event_timestamp[0].isoformat()} of transactions {labelled.transaction_id[0]!r}"
    )
    assert query(settings, "SELECT count(*), min(account_age_days) >= 0 FROM marts.transactions_enriched") == [
        (99, True)
    ]
    assert query(settings, "SELECT count(*), min(label_delay_days) >= 0 FROM marts.transaction_labels") == [(59, True)]


@pytest.mark.slow
def test_fixing_the_file_and_rematerializing_recovers(settings):
    generate_landing(
        DemoSpec(start=START, days=DAYS, rows_per_day=400, seed=5, scenario="bad_out_of_range", drift_day=DAYS - 1),
        settings.landing_dir,
    )
    load_clean_history(settings)
    assert not materialize(settings, BAD_DAY, BAD_DAY).success
    assert query(settings, "SELECT count(*) > 0 FROM quarantine.rejected_rows WHERE partition_date = ?", [BAD_DAY]) == [
        (True,)
    ]
    # The supplier re-delivers a clean file for the day.
    (settings.landing_dir / "transactions" / f"date={BAD_DAY}" / "part-0.parquet").unlink()
    clean = lf.transactions(BAD_DAY.isoformat(), n=400)
    accounts = [a for (a,) in query(settings, "SELECT DISTINCT account_id FROM raw.accounts LIMIT 50")]
    clean["account_id"] = [accounts[i % len(accounts)] for i in range(len(clean))]
    lf.write(settings.landing_dir, "transactions", BAD_DAY, clean)

    result = materialize(settings, BAD_DAY, BAD_DAY)
    assert result.success, failed_checks(result)
    assert query(settings, "SELECT count(*) FROM quarantine.rejected_rows WHERE partition_date = ?", [BAD_DAY]) == [
        (0,)
    ]
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", [BAD_DAY]) == [
        (400,)
    ]
    assert query(
        settings, "SELECT status FROM raw.load_log WHERE source = 'transactions' AND partition_date = ?", [BAD_DAY]
    ) == [("accepted",)]


@pytest.mark.slow
def test_csv_landing_files_are_equivalent(settings, tmp_path):
    spec = DemoSpec(start=START, days=3, rows_per_day=300, seed=9, file_format="csv")
    summary = generate_landing(spec, settings.landing_dir)
    result = materialize(settings, START, START + timedelta(days=2))
    assert result.success, failed_checks(result)
    parquet = Settings.from_env({"MLOPS_HOME": str(tmp_path / "parquet")})
    generate_landing(DemoSpec(start=START, days=3, rows_per_day=300, seed=9), parquet.landing_dir)
    with duckdb.connect() as con:
        ingest_partitions(con, parquet.landing_dir, SOURCES["accounts"], [START + timedelta(days=i) for i in range(3)])
        ingest_partitions(
            con, parquet.landing_dir, SOURCES["transactions"], [START + timedelta(days=i) for i in range(3)]
        )
        expected = con.execute(
            "SELECT count(*), round(sum(amount), 6), max(event_timestamp) FROM raw.transactions"
        ).fetchall()
    got = query(settings, "SELECT count(*), round(sum(amount), 6), max(event_timestamp) FROM raw.transactions")
    assert got == expected
    assert got[0][0] == summary.rows["transactions"]
