"""The data layer materialized into a temp DuckDB: the happy path, every bad-input class, recovery."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

import landing_factory as lf
from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.transform.assets import warehouse_assets
from mlops_core.contracts import SOURCES
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.ingestion import ingest_partitions
from mlops_core.settings import Settings
from resources.environment import build_resources

START = date(2026, 3, 2)
DAYS = 6
BAD_DAY = START + timedelta(days=DAYS - 1)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch) -> Settings:
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
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
    summary = generate_landing(DemoSpec(start=START, days=DAYS, rows_per_day=400, seed=5), settings.landing_dir)
    result = materialize(settings, START, BAD_DAY)
    assert result.success
    assert failed_checks(result) == {}
    assert "marts/transactions_enriched" in materialized(result)
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched") == [(summary.rows["transactions"],)]
    assert query(settings, "SELECT count(*) FROM quarantine.rejected_rows") == [(0,)]
    # Re-materializing the same days replaces them: the marts do not grow.
    assert materialize(settings, START, BAD_DAY).success
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched") == [(summary.rows["transactions"],)]


# scenario -> (asset, the exact set of blocking checks that fail, text in the check message,
#              text in each quarantined row's reason, or None when the batch is held without row rejections)
BAD_INPUTS = {
    "bad_missing_column": ("raw_transactions", {"check_schema"}, "missing column(s) ['merchant_category']", "missing column(s) ['merchant_category']"),
    "bad_renamed_column": ("raw_transactions", {"check_schema"}, "(was 'amount' renamed to 'amt'?)", "unexpected column(s) ['amt']"),
    "bad_extra_column": ("raw_transactions", {"check_schema"}, "unexpected column(s) ['promo_code']", "unexpected column(s) ['promo_code']"),
    "bad_wrong_type": ("raw_transactions", {"check_schema"}, "column 'amount': expected number (float64), found string", "column 'amount': expected number"),
    "bad_out_of_range": ("raw_transactions", {"check_values"}, "above the 2.0% threshold; e.g. amount: failed", "amount: failed"),
    "bad_allowed_values": ("raw_transactions", {"check_values"}, "failed isin", "failed isin"),
    "bad_nulls": ("raw_transactions", {"check_values"}, "null not allowed", "null not allowed"),
    "bad_duplicate_ids": ("raw_transactions", {"check_unique_ids"}, "transaction_id: duplicate", "transaction_id: duplicate"),
    "bad_unknown_accounts": ("raw_transactions", {"check_references"}, "not found in accepted accounts", "not found in accepted accounts"),
    "bad_unknown_transactions": ("raw_labels", {"check_references"}, "not found in accepted transactions", "not found in accepted transactions"),
    "bad_volume_drop": ("raw_transactions", {"check_volume"}, "x the median of the 5 trailing days", None),
    "bad_volume_spike": ("raw_transactions", {"check_volume"}, "x the median of the 5 trailing days", None),
    "bad_missing_partition": ("raw_transactions", {"check_files_readable", "check_volume"}, "(missing partition)", None),
    "bad_timestamps": ("raw_transactions", {"check_timestamps"}, "event_timestamp:", "event_timestamp:"),
    "bad_empty_file": ("raw_transactions", {"check_files_readable", "check_volume"}, "empty file (0 bytes)", None),
    "bad_unreadable_file": ("raw_transactions", {"check_files_readable", "check_volume"}, "unreadable parquet file", None),
}


def load_clean_history(settings: Settings) -> None:
    """Days before the bad one go in directly (fast); the bad day runs through Dagster."""
    settings.ensure_dirs()
    with duckdb.connect(str(settings.duckdb_path)) as con:
        for contract in SOURCES.values():
            ingest_partitions(con, settings.landing_dir, contract, [START + timedelta(days=i) for i in range(DAYS - 1)])


@pytest.mark.parametrize("scenario", sorted(BAD_INPUTS))
def test_bad_input_is_gated_quarantined_and_stops_downstream(settings, scenario):
    asset, expected_failures, message, reason = BAD_INPUTS[scenario]
    generate_landing(
        DemoSpec(start=START, days=DAYS, rows_per_day=1500, seed=5, scenario=scenario, drift_day=DAYS - 1),
        settings.landing_dir,
    )
    load_clean_history(settings)
    result = materialize(settings, BAD_DAY, BAD_DAY)

    assert not result.success
    failures = failed_checks(result)
    assert {check for (key, check) in failures if key == asset} == expected_failures
    assert all(key == asset for key, _ in failures), failures
    primary = sorted(expected_failures - {"check_volume"})[0] if len(expected_failures) > 1 else next(iter(expected_failures))
    assert message in failures[(asset, primary)]
    assert BAD_DAY.isoformat() in failures[(asset, primary)]
    # Downstream did not run: no dbt model was materialized, the bad day is not in the marts.
    assert not any(key.startswith(("staging/", "marts/")) for key in materialized(result))
    source = asset.removeprefix("raw_")
    assert query(settings, f"SELECT status FROM raw.load_log WHERE source = ? AND partition_date = ?", [source, BAD_DAY]) == [("held",)]
    assert query(settings, f"SELECT count(*) FROM raw.{source} WHERE _partition_date = ? AND _batch_status = 'accepted'", [BAD_DAY]) == [(0,)]
    rows = query(settings, "SELECT check_name, reason FROM quarantine.rejected_rows WHERE source = ? AND partition_date = ?", [source, BAD_DAY])
    if reason is None:
        assert rows == []
    else:
        assert rows, "rejected rows must be kept in quarantine"
        assert {check for check, _ in rows} <= expected_failures
        assert all(reason in text for check, text in rows if check == primary)
        assert any(check == primary for check, _ in rows)


@pytest.mark.slow
def test_fixing_the_file_and_rematerializing_recovers(settings):
    generate_landing(
        DemoSpec(start=START, days=DAYS, rows_per_day=400, seed=5, scenario="bad_out_of_range", drift_day=DAYS - 1),
        settings.landing_dir,
    )
    load_clean_history(settings)
    assert not materialize(settings, BAD_DAY, BAD_DAY).success
    assert query(settings, "SELECT count(*) > 0 FROM quarantine.rejected_rows WHERE partition_date = ?", [BAD_DAY]) == [(True,)]
    # The supplier re-delivers a clean file for the day.
    (settings.landing_dir / "transactions" / f"date={BAD_DAY}" / "part-0.parquet").unlink()
    clean = lf.transactions(BAD_DAY.isoformat(), n=400)
    accounts = [a for (a,) in query(settings, "SELECT DISTINCT account_id FROM raw.accounts LIMIT 50")]
    clean["account_id"] = [accounts[i % len(accounts)] for i in range(len(clean))]
    lf.write(settings.landing_dir, "transactions", BAD_DAY, clean)

    result = materialize(settings, BAD_DAY, BAD_DAY)
    assert result.success, failed_checks(result)
    assert query(settings, "SELECT count(*) FROM quarantine.rejected_rows WHERE partition_date = ?", [BAD_DAY]) == [(0,)]
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", [BAD_DAY]) == [(400,)]
    assert query(settings, "SELECT status FROM raw.load_log WHERE source = 'transactions' AND partition_date = ?", [BAD_DAY]) == [("accepted",)]


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
        ingest_partitions(con, parquet.landing_dir, SOURCES["transactions"], [START + timedelta(days=i) for i in range(3)])
        expected = con.execute("SELECT count(*), round(sum(amount), 6), max(event_timestamp) FROM raw.transactions").fetchall()
    got = query(settings, "SELECT count(*), round(sum(amount), 6), max(event_timestamp) FROM raw.transactions")
    assert got == expected
    assert got[0][0] == summary.rows["transactions"]
