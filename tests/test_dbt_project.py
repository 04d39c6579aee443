"""The dbt project: its accepted values follow the landing contract, and a build over a
tiny raw layer gives the marts we expect."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
import yaml

from mlops_core import contracts
from mlops_core.warehouse import LINEAGE_COLUMNS, ensure_schema

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")

# Every (node, column) whose values the contract restricts, and the tuple it must match.
EXPECTED_ACCEPTED_VALUES = {
    ("fx_rates", "currency"): contracts.CURRENCIES,
    ("stg_landing__accounts", "home_country"): contracts.COUNTRIES,
    ("stg_landing__accounts", "age_band"): contracts.AGE_BANDS,
    ("stg_landing__transactions", "merchant_category"): contracts.MERCHANT_CATEGORIES,
    ("stg_landing__transactions", "currency"): contracts.CURRENCIES,
    ("stg_landing__transactions", "channel"): contracts.CHANNELS,
    ("stg_landing__transactions", "country"): contracts.COUNTRIES,
    ("stg_landing__labels", "label_source"): contracts.LABEL_SOURCES,
}


def _accepted_values_in_project() -> dict[tuple[str, str], list[tuple[str, ...]]]:
    found: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    for path in sorted(DBT_PROJECT_DIR.glob("**/*.yml")):
        if path.name in ("dbt_project.yml", "profiles.yml") or path.relative_to(DBT_PROJECT_DIR).parts[0] == "target":
            continue
        document = yaml.safe_load(path.read_text()) or {}
        for node in document.get("models", []) + document.get("seeds", []):
            for column in node.get("columns", []):
                for test in column.get("data_tests", []) + column.get("tests", []):
                    if isinstance(test, dict) and "accepted_values" in test:
                        spec = test["accepted_values"]
                        values = spec.get("arguments", spec)["values"]
                        found.setdefault((node["name"], column["name"]), []).append(tuple(values))
    return found


@pytest.mark.slow
def test_accepted_values_match_the_landing_contract() -> None:
    found = _accepted_values_in_project()

    assert set(found) == set(EXPECTED_ACCEPTED_VALUES)
    for key, expected in EXPECTED_ACCEPTED_VALUES.items():
        assert found[key] == [expected], key

    with (DBT_PROJECT_DIR / "seeds" / "fx_rates.csv").open() as handle:
        seeded = [row["currency"] for row in csv.DictReader(handle)]
    assert sorted(seeded) == sorted(contracts.CURRENCIES)


def _fx_rate(currency: str) -> float:
    with (DBT_PROJECT_DIR / "seeds" / "fx_rates.csv").open() as handle:
        rates = {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(handle)}
    return rates[currency]


ACCOUNT_COLUMNS = ("account_id", "created_at", "home_country", "age_band")
TRANSACTION_COLUMNS = (
    "transaction_id",
    "account_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "channel",
    "country",
    "event_timestamp",
)
LABEL_COLUMNS = ("transaction_id", "is_fraud", "labeled_at", "label_source")
A1_CREATED = datetime(2023, 6, 1)


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], batches: list[tuple[date, str, list[tuple]]]
) -> None:
    """Insert rows as ingestion would: one batch per (partition day, status)."""
    for partition_date, status, rows in batches:
        for row_number, row in enumerate(rows):
            lineage = {
                "_partition_date": partition_date,
                "_source_file": f"{table}/{partition_date}.csv",
                "_row_number": row_number,
                "_batch_status": status,
                "_run_id": "test-run",
                "_loaded_at": datetime.combine(partition_date, datetime.min.time()).replace(hour=23),
            }
            assert set(lineage) == set(LINEAGE_COLUMNS)
            names = ", ".join(columns + tuple(lineage))
            values = list(row) + list(lineage.values())
            con.execute(f"INSERT INTO raw.{table} ({names}) VALUES ({', '.join('?' * len(values))})", values)


def _seed_raw_layer(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        ensure_schema(con)
        # a1 re-lands with a new home country: that later snapshot must win, the still
        # later held one must not. a3 exists only in a held batch.
        _insert(
            con,
            "accounts",
            ACCOUNT_COLUMNS,
            [
                (
                    date(2024, 1, 1),
                    "accepted",
                    [
                        ("a1", A1_CREATED, "US", "25-34"),
                        ("a2", datetime(2024, 1, 1, 23), "CA", "18-24"),
                    ],
                ),
                (date(2024, 1, 3), "accepted", [("a1", A1_CREATED, "GB", "35-44")]),
                (
                    date(2024, 1, 4),
                    "held",
                    [
                        ("a1", A1_CREATED, "JP", "45-54"),
                        ("a3", datetime(2024, 1, 4, 8), "DE", "65+"),
                    ],
                ),
            ],
        )
        _insert(
            con,
            "transactions",
            TRANSACTION_COLUMNS,
            [
                # t2 comes 23 h 59 min after a2 opened: one calendar day later, 0 whole days old.
                (
                    date(2024, 1, 2),
                    "accepted",
                    [
                        ("t2", "a2", "m2", "digital_goods", 50.0, "CAD", "online", "US", datetime(2024, 1, 2, 22, 59)),
                    ],
                ),
                (
                    date(2024, 1, 5),
                    "accepted",
                    [
                        ("t1", "a1", "m1", "retail", 100.0, "EUR", "in_store", "GB", datetime(2024, 1, 5, 10)),
                    ],
                ),
                (
                    date(2024, 1, 6),
                    "held",
                    [
                        ("t3", "a1", "m3", "jewelry", 900.0, "USD", "online", "NG", datetime(2024, 1, 6, 3)),
                    ],
                ),
            ],
        )
        _insert(
            con,
            "labels",
            LABEL_COLUMNS,
            [
                (date(2024, 1, 7), "accepted", [("t1", True, datetime(2024, 1, 7, 12), "customer_report")]),
                # An accepted label for the held transaction t3: a warning, and not in the mart.
                (date(2024, 1, 8), "accepted", [("t3", True, datetime(2024, 1, 8, 6), "customer_report")]),
                (date(2024, 1, 20), "accepted", [("t1", True, datetime(2024, 1, 20, 9), "chargeback")]),
                (date(2024, 2, 1), "accepted", [("t2", False, datetime(2024, 2, 1, 6), "maturity")]),
                (date(2024, 2, 3), "held", [("t2", True, datetime(2024, 2, 3, 6), "chargeback")]),
            ],
        )
    finally:
        con.close()


def _dbt_build(tmp_path: Path, duckdb_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLOPS_DUCKDB_PATH": str(duckdb_path),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    return subprocess.run(
        [
            str(DBT_EXECUTABLE),
            "build",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(tmp_path / "target"),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _rows_by_id(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, dict]:
    """Query rows as dicts, keyed by the first column."""
    cursor = con.execute(sql)
    names = [column[0] for column in cursor.description]
    return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


@pytest.mark.slow
def test_dbt_build_gives_expected_marts(tmp_path: Path) -> None:
    duckdb_path = tmp_path / "warehouse.duckdb"
    _seed_raw_layer(duckdb_path)

    result = _dbt_build(tmp_path, duckdb_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    # The only warning: the accepted label of held transaction t3 has no transaction.
    assert "WARN=1 " in result.stdout, result.stdout[-4000:]
    # dbt's unit tests run here, in CI; the warehouse_models asset leaves them out of every materialization.
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())["results"]
    unit_tests = [r for r in results if r["unique_id"].startswith("unit_test.")]
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    assert len(unit_tests) == len(manifest["unit_tests"]) >= 5
    assert {r["status"] for r in unit_tests} == {"pass"}, unit_tests

    con = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        accounts = _rows_by_id(con, "SELECT account_id, home_country, age_band FROM staging.stg_landing__accounts")
        enriched = _rows_by_id(con, "SELECT * FROM marts.transactions_enriched")
        labels = _rows_by_id(con, "SELECT * FROM marts.transaction_labels")
    finally:
        con.close()

    # Held accounts, transactions and labels never leave raw; the latest accepted snapshot wins.
    assert {key: (row["home_country"], row["age_band"]) for key, row in accounts.items()} == {
        "a1": ("GB", "35-44"),
        "a2": ("CA", "18-24"),
    }
    assert set(enriched) == {"t1", "t2"}
    assert set(labels) == {"t1", "t2"}

    t1, t2 = enriched["t1"], enriched["t2"]
    assert t1["amount_usd"] == pytest.approx(100.0 * _fx_rate("EUR"))
    assert t2["amount_usd"] == pytest.approx(50.0 * _fx_rate("CAD"))
    assert (t1["home_country"], t1["age_band"], t1["account_created_at"]) == ("GB", "35-44", A1_CREATED)
    assert t1["account_age_days"] == (datetime(2024, 1, 5, 10) - A1_CREATED).days == 218
    assert t2["account_age_days"] == 0
    assert t1["is_foreign"] is False  # GB merchant, GB home; the stale US or held JP snapshot would say foreign
    assert t2["is_foreign"] is True  # US merchant, CA home
    assert (t1["is_online"], t2["is_online"]) == (False, True)
    # 2024-01-05 is a Friday and 2024-01-02 a Tuesday; 0 = Monday.
    calendar = ("event_date", "hour_of_day", "day_of_week", "is_weekend")
    assert tuple(t1[c] for c in calendar) == (date(2024, 1, 5), 10, 4, False)
    assert tuple(t2[c] for c in calendar) == (date(2024, 1, 2), 22, 1, False)
    assert (t1["merchant_category"], t1["amount"], t1["currency"], t1["landed_date"]) == (
        "retail",
        100.0,
        "EUR",
        date(2024, 1, 5),
    )

    # t1: the later chargeback replaced the customer report; t2: the held chargeback did not count.
    verdict = ("is_fraud", "labeled_at", "label_source", "event_timestamp")
    assert tuple(labels["t1"][c] for c in verdict) == (
        True,
        datetime(2024, 1, 20, 9),
        "chargeback",
        datetime(2024, 1, 5, 10),
    )
    assert tuple(labels["t2"][c] for c in verdict) == (
        False,
        datetime(2024, 2, 1, 6),
        "maturity",
        datetime(2024, 1, 2, 22, 59),
    )
    assert labels["t1"]["label_delay_days"] == pytest.approx(14 + 23 / 24)
    assert labels["t2"]["label_delay_days"] == pytest.approx(29 + 7 / 24 + 1 / 24 / 60)


# Every dbt data test that landed data could fail, paired with the ingestion gate that rejects
# such a row before it reaches staging; the rest hold by how the models or seeds are built.
def _gate(source: str, check: str) -> tuple[str, str, str]:
    return ("gate", source, check)


def _built(why: str) -> tuple[str, str]:
    return ("construction", why)


def _each(model: str, test: str, columns: list[str], pairing: tuple) -> dict[tuple, tuple]:
    return {(model, column, test): pairing for column in columns}


VALUES, UNIQUE, TIMESTAMPS, REFERENCES = "check_values", "check_unique_ids", "check_timestamps", "check_references"
LINEAGE = _built("lineage column, NOT NULL in the raw table")
SEED = _built("static seed, matched to the contract by test_accepted_values_match_the_landing_contract")
TX_FIELDS = [
    "transaction_id",
    "account_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "channel",
    "country",
    "event_timestamp",
]

DBT_TEST_GATES = {
    **_each("fx_rates", "unique", ["currency"], SEED),
    **_each("fx_rates", "not_null", ["currency", "usd_per_unit"], SEED),
    **_each("fx_rates", "accepted_values", ["currency"], SEED),
    **_each("fx_rates", "non_negative", ["usd_per_unit"], SEED),
    # staging
    ("stg_landing__accounts", "account_id", "unique"): _built("latest snapshot per account: qualify row_number() = 1"),
    **_each(
        "stg_landing__accounts",
        "not_null",
        ["account_id", "created_at", "home_country", "age_band"],
        _gate("accounts", VALUES),
    ),
    **_each("stg_landing__accounts", "accepted_values", ["home_country", "age_band"], _gate("accounts", VALUES)),
    **_each("stg_landing__accounts", "not_null", ["landed_date"], LINEAGE),
    **_each("stg_landing__account_snapshots", "not_null", ["account_id", "created_at"], _gate("accounts", VALUES)),
    **_each("stg_landing__account_snapshots", "not_null", ["landed_date"], LINEAGE),
    **_each("stg_landing__transactions", "unique", ["transaction_id"], _gate("transactions", UNIQUE)),
    **_each("stg_landing__transactions", "not_null", TX_FIELDS, _gate("transactions", VALUES)),
    **_each(
        "stg_landing__transactions",
        "accepted_values",
        ["merchant_category", "currency", "channel", "country"],
        _gate("transactions", VALUES),
    ),
    **_each("stg_landing__transactions", "non_negative", ["amount"], _gate("transactions", VALUES)),
    **_each("stg_landing__transactions", "relationships", ["account_id"], _gate("transactions", REFERENCES)),
    **_each("stg_landing__transactions", "not_null", ["landed_date"], LINEAGE),
    ("stg_landing__labels", "transaction_id", "unique"): _built(
        "latest verdict per transaction: qualify row_number() = 1"
    ),
    **_each(
        "stg_landing__labels",
        "not_null",
        ["transaction_id", "is_fraud", "labeled_at", "label_source"],
        _gate("labels", VALUES),
    ),
    **_each("stg_landing__labels", "accepted_values", ["label_source"], _gate("labels", VALUES)),
    # Severity warn: a label about a held transaction waits in staging, out of the marts.
    **_each("stg_landing__labels", "relationships", ["transaction_id"], _gate("labels", REFERENCES)),
    **_each("stg_landing__labels", "not_null", ["landed_date"], LINEAGE),
    **_each(
        "stg_landing__label_events", "not_null", ["transaction_id", "is_fraud", "labeled_at"], _gate("labels", VALUES)
    ),
    # marts
    **_each("transactions_enriched", "unique", ["transaction_id"], _gate("transactions", UNIQUE)),
    **_each("transactions_enriched", "not_null", TX_FIELDS, _gate("transactions", VALUES)),
    # amount_usd: a contract currency (the seed's, see SEED) times an amount > 0.
    **_each("transactions_enriched", "not_null", ["amount_usd"], _gate("transactions", VALUES)),
    **_each("transactions_enriched", "non_negative", ["amount_usd"], _gate("transactions", VALUES)),
    # Derived from channel and event_timestamp, which are not null.
    **_each(
        "transactions_enriched",
        "not_null",
        ["is_online", "event_date", "hour_of_day", "day_of_week", "is_weekend"],
        _gate("transactions", VALUES),
    ),
    **_each("transactions_enriched", "non_negative", ["account_age_days"], _gate("transactions", TIMESTAMPS)),
    **_each("transactions_enriched", "not_null", ["landed_date"], LINEAGE),
    ("transaction_labels", "transaction_id", "unique"): _built(
        "one verdict per transaction from stg_landing__labels, inner-joined to unique transactions"
    ),
    ("transaction_labels", "transaction_id", "relationships"): _built(
        "inner join with the accepted transactions transactions_enriched holds"
    ),
    **_each(
        "transaction_labels",
        "not_null",
        ["transaction_id", "is_fraud", "labeled_at", "label_source", "label_delay_days"],
        _gate("labels", VALUES),
    ),
    **_each("transaction_labels", "not_null", ["event_timestamp"], _gate("transactions", VALUES)),
    **_each("transaction_labels", "non_negative", ["label_delay_days"], _gate("labels", TIMESTAMPS)),
    ("label_events", "transaction_id", "relationships"): _built(
        "inner join with the accepted transactions transactions_enriched holds"
    ),
    ("label_events", None, "unique_combination"): _built("stg_landing__label_events groups by the four columns"),
    **_each("label_events", "not_null", ["transaction_id", "is_fraud", "labeled_at"], _gate("labels", VALUES)),
    **_each("label_events", "not_null", ["event_timestamp"], _gate("transactions", VALUES)),
    **_each("account_history", "not_null", ["account_id", "created_at"], _gate("accounts", VALUES)),
    **_each("account_history", "not_null", ["valid_from"], LINEAGE),
    ("account_history", None, "unique_combination"): _built(
        "one state per account and landing day, valid from the day's end"
    ),
}


def _dbt_data_tests(tmp_path: Path) -> set[tuple[str, str | None, str]]:
    env = {
        **os.environ,
        "MLOPS_DUCKDB_PATH": str(tmp_path / "unused.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    target = tmp_path / "target"
    subprocess.run(
        [
            str(DBT_EXECUTABLE),
            "parse",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(target),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    manifest = json.loads((target / "manifest.json").read_text())
    return {
        (node["attached_node"].rsplit(".", 1)[-1], node.get("column_name"), node["test_metadata"]["name"])
        for node in manifest["nodes"].values()
        if node["resource_type"] == "test"
    }


@pytest.mark.slow
def test_every_dbt_test_landed_data_can_fail_has_a_gate_upstream(tmp_path: Path) -> None:
    from mlops_core.ingestion import gate_checks

    found = _dbt_data_tests(tmp_path)
    assert found - set(DBT_TEST_GATES) == set(), "a dbt test with no upstream gate: pair it in DBT_TEST_GATES"
    assert set(DBT_TEST_GATES) - found == set(), "DBT_TEST_GATES lists a dbt test that no longer exists"
    for test, pairing in DBT_TEST_GATES.items():
        if pairing[0] == "gate":
            _, source, check = pairing
            assert check in gate_checks(contracts.SOURCES[source]), (test, pairing)
    # The two durations dbt tests for sign are the contract's time orders, checked at ingestion.
    orders = {(name, o.column, o.not_before) for name, c in contracts.SOURCES.items() for o in c.time_orders}
    assert orders == {("transactions", "event_timestamp", "created_at"), ("labels", "labeled_at", "event_timestamp")}
