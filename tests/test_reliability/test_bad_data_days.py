"""Bad landed data through the data layer (raw assets, gates, dbt, the day summary), one table row per case.

Each case lands day 7 on top of six clean days loaded through the data layer, with one fault
in its files, and runs data_layer's assets for it. Afterwards nothing is lost (every landed
row is kept in raw or in quarantine, the landing files are untouched), no rejected row is in
the marts, and dbt's tests passed: a run fails only at daily_load_summary's gate when a day
is held, naming it. Each case records input, expected and observed for docs/reliability.md.
"""

import hashlib
import json
import math
import shutil
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from generated_history import HomeTemplate, loaded_history
from reliability_results import record

from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.ingestion.summary import held_day_lines
from mlops_assets.transform.assets import warehouse_assets
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.datagen.writer import write_partition
from mlops_core.landing import partition_dir
from mlops_core.settings import Settings
from resources.environment import build_resources

pytestmark = pytest.mark.slow

START = date(2026, 2, 2)
DAYS = 6
DAY7 = START + timedelta(days=DAYS)
DAY8 = DAY7 + timedelta(days=1)
ROWS = 300
SEED = 5
SECTION = "bad data: held days and gate gaps"


@pytest.fixture(scope="module")
def base_home(tmp_path_factory):
    """Six clean days through the data layer, and two more clean days landed aside in `scratch`."""
    root = tmp_path_factory.mktemp("bad-data-days")
    template = HomeTemplate(root)
    with loaded_history(template.home, START, DAYS, ROWS, SEED):
        pass
    template.freeze()
    generate_landing(DemoSpec(START, DAYS + 2, ROWS, seed=SEED), root / "scratch")
    return template, root / "scratch"


@pytest.fixture
def world(base_home, monkeypatch):
    template, scratch = base_home
    home = template.restore()
    settings = Settings.from_env({"MLOPS_HOME": str(home)})
    for key, value in {
        "MLOPS_HOME": home,
        "MLOPS_DATA_DIR": settings.data_dir,
        "MLOPS_DUCKDB_PATH": settings.duckdb_path,
        "DAGSTER_HOME": settings.dagster_home,
        "MLOPS_MLFLOW_DIR": settings.mlflow_dir,
        "MLOPS_REPORTS_DIR": settings.reports_dir,
    }.items():
        monkeypatch.setenv(key, str(value))
    return settings, scratch


def land(settings: Settings, scratch: Path, day: date) -> None:
    for source in ("accounts", "transactions", "labels"):
        target = partition_dir(settings.landing_dir, source, day)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(partition_dir(scratch, source, day), target)


def run(settings: Settings, day: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*raw_assets, *warehouse_assets],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=day.isoformat(),
        raise_on_error=False,
    )


def failed(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], str]:
    return {
        (e.asset_key.to_user_string(), e.check_name): e.description
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    }


def failed_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.is_step_failure}


def query(settings: Settings, sql: str, params=()):
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def accounting(settings: Settings, source: str, day: date) -> tuple[str, int, int, int, int]:
    """(status, landed, kept in raw, quarantined rows, quarantine entries) of a source's day."""
    status, landed, kept_logged, rejected = query(
        settings,
        "SELECT status, n_landed, n_accepted, n_rejected FROM raw.load_log WHERE source = ? AND partition_date = ?",
        (source, day),
    )[0]
    kept = query(settings, f"SELECT count(*) FROM raw.{source} WHERE _partition_date = ?", (day,))[0][0]
    entries = query(
        settings, "SELECT count(*) FROM quarantine.rejected_rows WHERE source = ? AND partition_date = ?", (source, day)
    )[0][0]
    assert kept == kept_logged and landed == kept + rejected, "every landed row is kept or quarantined"
    return status, landed, kept, rejected, entries


def shown(settings: Settings, message: str, limit: int = 130) -> str:
    return message.replace(str(settings.landing_dir), "<landing>")[:limit]


def files_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def transactions_file(settings: Settings, day: date) -> Path:
    return partition_dir(settings.landing_dir, "transactions", day) / "part-0.parquet"


def test_a_held_day_blocks_no_later_day_and_its_fixed_file_releases_it(world):
    settings, scratch = world
    land(settings, scratch, DAY7)
    path = transactions_file(settings, DAY7)
    clean = pq.read_table(path)
    pq.write_table(clean.drop_columns(["merchant_category"]), path)
    before = files_digest(settings.landing_dir)

    # Same-day verdicts about the unreadable file's transactions are accepted and wait for them.
    labels = pq.read_table(partition_dir(settings.landing_dir, "labels", DAY7) / "part-0.parquet")
    waiting = len(set(labels.column("transaction_id").to_pylist()) & set(clean.column("transaction_id").to_pylist()))

    held_run = run(settings, DAY7)

    assert not held_run.success and failed_steps(held_run) == {"daily_load_summary"}
    assert set(failed(held_run)) == {("raw_transactions", "check_schema"), ("daily_load_summary", "check_no_held_days")}
    (line,) = held_day_lines(held_run)
    assert (
        line.startswith(f"{DAY7} transactions held by check_schema: ")
        and "missing column(s) ['merchant_category']" in line
    )
    statuses = [accounting(settings, s, DAY7)[0] for s in ("accounts", "transactions", "labels")]
    assert statuses == ["accepted", "held", "accepted"]
    assert accounting(settings, "labels", DAY7)[3] == 0
    in_marts = query(settings, "SELECT count(*) FROM marts.label_events WHERE landed_date = ?", (DAY7,))[0][0]
    assert in_marts == labels.num_rows - waiting
    assert query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", (DAY7,)) == [(0,)]
    assert query(settings, "SELECT count(*) FROM marts.account_history WHERE landed_date = ?", (DAY7,)) == [
        (accounting(settings, "accounts", DAY7)[2],)
    ]
    assert files_digest(settings.landing_dir) == before

    land(settings, scratch, DAY8)
    next_run = run(settings, DAY8)
    assert next_run.success, failed(next_run)
    day8 = query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", (DAY8,))[0][0]

    pq.write_table(clean, path)
    fixed_run = run(settings, DAY7)
    assert fixed_run.success, failed(fixed_run)
    status, landed, kept, _, _ = accounting(settings, "transactions", DAY7)
    released = query(settings, "SELECT count(*) FROM marts.transactions_enriched WHERE event_date = ?", (DAY7,))[0][0]
    assert (status, released) == ("accepted", landed)
    assert accounting(settings, "labels", DAY7)[:4:3] == ("accepted", 0)
    assert query(settings, "SELECT count(*) FROM marts.label_events WHERE landed_date = ?", (DAY7,)) == [
        (labels.num_rows,)
    ]
    record(
        SECTION,
        "held day, then a later day, then the fix",
        what=f"day {DAY7}: transactions file without merchant_category (accounts, labels clean); day {DAY8} clean; "
        f"then the day-{DAY7} file fixed; each day one data_layer run",
        expected="the held day fails only the summary gate, naming the day and check; its accounts and labels load (labels "
        "about its transactions wait in raw); the later day reaches the marts (continuity passes); the fixed file releases "
        "the day and the waiting labels",
        observed=f"run 1 failed only at daily_load_summary: `{shown(settings, line)}`; accounts {statuses[0]}, labels "
        f"{statuses[2]} ({labels.num_rows - waiting} in the marts, {waiting} about the unreadable file waiting); run 2 ({DAY8}) "
        f"succeeded, {day8} transactions in marts; run 3 released {released} of {landed} transactions and the waiting labels",
        test="test_bad_data_days.py::test_a_held_day_blocks_no_later_day_and_its_fixed_file_releases_it",
    )


def test_a_transaction_before_its_account_opened_is_quarantined_and_dbt_passes(world):
    settings, scratch = world
    land(settings, scratch, DAY7)
    accounts_path = partition_dir(settings.landing_dir, "accounts", DAY7) / "part-0.parquet"
    accounts = pq.read_table(accounts_path)
    opened = pd.Timestamp(f"{DAY7}T12:00:00Z")
    new = pa.table(
        {"account_id": ["acct_opened_at_noon"], "created_at": [opened], "home_country": ["US"], "age_band": ["25-34"]}
    )
    pq.write_table(pa.concat_tables([accounts, new.select(accounts.column_names).cast(accounts.schema)]), accounts_path)
    path = transactions_file(settings, DAY7)
    transactions = pq.read_table(path).to_pandas()
    transactions.loc[5, ["account_id", "event_timestamp"]] = ["acct_opened_at_noon", opened - pd.Timedelta(hours=4)]
    pq.write_table(pa.Table.from_pandas(transactions, preserve_index=False), path)

    result = run(settings, DAY7)

    assert result.success, failed(result)
    (reason,) = query(settings, "SELECT reason FROM quarantine.rejected_rows WHERE source = 'transactions'")[0]
    assert (
        reason
        == f"event_timestamp: {DAY7}T08:00:00+00:00 is before created_at {DAY7}T12:00:00+00:00 of accounts 'acct_opened_at_noon'"
    )
    status, landed, kept, rejected, _ = accounting(settings, "transactions", DAY7)
    ages = query(
        settings,
        "SELECT min(account_age_days), count(*) FILTER (account_id = 'acct_opened_at_noon') FROM marts.transactions_enriched",
    )[0]
    assert (status, rejected) == ("accepted", 1) and ages[0] >= 0 and ages[1] == 0
    record(
        SECTION,
        "transaction before its account opened",
        what=f"day {DAY7}: an account opened at 12:00 and one of its transactions at 08:00 the same day; data_layer run",
        expected="the transaction quarantined by check_timestamps naming both timestamps; the day accepted; dbt's "
        "non_negative test on account_age_days passes (it failed after the mart was written)",
        observed=f"run succeeded; {status}; landed {landed} = kept {kept} + quarantined {rejected}; `{reason}`; "
        f"min account_age_days in the mart {ages[0]}",
        test="test_bad_data_days.py::test_a_transaction_before_its_account_opened_is_quarantined_and_dbt_passes",
    )


def test_non_finite_amounts_are_quarantined_exactly_as_landed(world):
    settings, scratch = world
    land(settings, scratch, DAY7)
    path = transactions_file(settings, DAY7)
    table = pq.read_table(path)
    amounts = table.column("amount").to_pylist()
    amounts[:3] = [math.nan, math.inf, -math.inf]
    pq.write_table(
        table.set_column(table.column_names.index("amount"), "amount", pa.array(amounts, pa.float64())), path
    )

    result = run(settings, DAY7)

    rows = query(
        settings,
        "SELECT row_number, reason, record FROM quarantine.rejected_rows WHERE source = 'transactions' ORDER BY row_number",
    )
    landed_amounts = [json.loads(r)["amount"] for _, _, r in rows]
    assert [n for n, _, _ in rows] == [0, 1, 2]
    assert math.isnan(landed_amounts[0]) and landed_amounts[1:] == [math.inf, -math.inf]
    assert [reason for _, reason, _ in rows] == [
        f"amount: expected a finite number, found {v}" for v in ("nan", "inf", "-inf")
    ]
    status, landed, kept, rejected, _ = accounting(settings, "transactions", DAY7)
    record(
        SECTION,
        "NaN, inf and -inf amounts",
        what=f"day {DAY7}: three transactions with amount NaN, inf and -inf in the parquet file; data_layer run",
        expected="each quarantined as not finite with its record as landed (NaN, Infinity, -Infinity, not null)",
        observed=f"run {'succeeded' if result.success else 'failed'}; {status}; landed {landed} = kept {kept} + "
        f"quarantined {rejected}; records read back as {landed_amounts}",
        test="test_bad_data_days.py::test_non_finite_amounts_are_quarantined_exactly_as_landed",
    )
    assert result.success and status == "accepted"


def test_control_characters_in_ids_are_quarantined_naming_column_and_row(world):
    settings, scratch = world
    land(settings, scratch, DAY7)
    path = transactions_file(settings, DAY7)
    transactions = pq.read_table(path).to_pandas()
    transactions.loc[3, "transaction_id"] += "\x00"
    transactions.loc[4, "merchant_id"] = "m\x01" + transactions.loc[4, "merchant_id"]
    transactions.loc[5, "account_id"] += "\x7f"
    pq.write_table(pa.Table.from_pandas(transactions, preserve_index=False), path)

    result = run(settings, DAY7)

    rows = query(
        settings,
        "SELECT row_number, reason FROM quarantine.rejected_rows WHERE source = 'transactions' ORDER BY row_number",
    )
    assert [n for n, _ in rows] == [3, 4, 5]
    assert [reason.split(":")[0] for _, reason in rows] == ["transaction_id", "merchant_id", "account_id"]
    assert all(f" in row {n} " in reason and "control character" in reason for n, reason in rows)
    leaked = query(
        settings,
        "SELECT count(*) FROM marts.transactions_enriched WHERE regexp_matches(transaction_id || account_id || merchant_id, "
        "'[\\x00-\\x1f\\x7f-\\x9f]')",
    )[0][0]
    status, landed, kept, rejected, _ = accounting(settings, "transactions", DAY7)
    record(
        SECTION,
        "control characters in ids",
        what=f"day {DAY7}: a NUL in a transaction_id, \\x01 in a merchant_id, DEL in an account_id; data_layer run",
        expected="each row quarantined by check_values naming the column, the character and the row; none in the marts",
        observed=f"run {'succeeded' if result.success else 'failed'}; {status}; landed {landed} = kept {kept} + quarantined "
        f"{rejected}; `{rows[0][1][:100]}`; ids with control characters in the marts: {leaked}",
        test="test_bad_data_days.py::test_control_characters_in_ids_are_quarantined_naming_column_and_row",
    )
    assert result.success and leaked == 0


def test_an_unreadable_csv_is_counted_and_quarantined_without_a_volume_failure(world):
    settings, scratch = world
    land(settings, scratch, DAY7)
    clean = pq.read_table(transactions_file(settings, DAY7))
    transactions_file(settings, DAY7).unlink()
    path = write_partition(settings.landing_dir, "transactions", DAY7, clean, "csv", "truncated")
    lines = path.read_bytes().count(b"\n")  # header and every complete row end with one; the cut row does not

    result = run(settings, DAY7)

    checks = {check for asset, check in failed(result) if asset == "raw_transactions"}
    status, landed, kept, rejected, entries = accounting(settings, "transactions", DAY7)
    assert checks == {"check_files_readable"}
    assert (status, landed, kept, rejected, entries) == ("held", lines, 0, lines, lines)
    assert failed_steps(result) == {"daily_load_summary"}
    (line,) = held_day_lines(result)
    assert line.startswith(f"{DAY7} transactions held by check_files_readable: ")
    # Every complete line's id was read back: same-day verdicts about them wait instead of being rejected.
    ids = query(settings, "SELECT count(record_id) FROM quarantine.rejected_rows WHERE source = 'transactions'")[0][0]
    assert ids == lines - 1
    assert [accounting(settings, s, DAY7)[0] for s in ("accounts", "labels")] == ["accepted", "accepted"]
    record(
        SECTION,
        "unreadable CSV",
        what=f"day {DAY7}: the transactions CSV cut off mid-row and followed by binary junk; data_layer run",
        expected="held by check_files_readable only (no volume failure); every line counted and kept in quarantine, with "
        "its id where the line has one; the other sources of the day loaded; the summary names the day",
        observed=f"failed {sorted(checks)}; landed {landed} lines = quarantined {rejected} ({entries} entries, {ids} ids); accounts and labels "
        f"{accounting(settings, 'accounts', DAY7)[0]}, {accounting(settings, 'labels', DAY7)[0]}; `{shown(settings, line)}`",
        test="test_bad_data_days.py::test_an_unreadable_csv_is_counted_and_quarantined_without_a_volume_failure",
    )
