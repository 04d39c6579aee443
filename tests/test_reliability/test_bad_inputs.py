"""Bad inputs, end to end through the real path, one table row per case.

Ingestion: every case's bad landing day lands on top of a loaded history, one case a day on the days
after it, and the data_layer assets (raw assets, their blocking checks, dbt) run once over all of them,
as a daily pipeline meets them. Each day is held with its own reasons and no other, rejected rows are
kept in quarantine, every landed row is accounted for, the landing files are untouched, and the
production tables (every mart, the accepted raw rows, the load log of earlier days) are byte-for-byte
as before. One run instead of one per case: a held day must not leak into the next day's verdict
either, and the 18 cases take one dbt build instead of 18 (about 80 s of a worker's time in the suite).

Serving: a bad request to a live `mlops serve` process gets a 4xx naming the field or the
problem (never a 500), and neither the prediction log nor the online store (its events and its
freshness watermark) changes; a good request afterwards is scored and logged by the time it
is answered.

Each case records input, expected and observed for docs/reliability.md.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from generated_history import loaded_history
from reliability_results import record
from serving_world import build_world, free_port, running_endpoint, transaction

from mlops_assets.ingestion.assets import HELD_DAYS, raw_assets
from mlops_assets.transform.assets import warehouse_assets
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.datagen.scenarios import SCENARIOS
from mlops_core.landing import partition_dir
from mlops_core.serving.schemas import MAX_BATCH
from resources.environment import build_resources

pytestmark = pytest.mark.slow

START = date(2026, 2, 2)
DAYS = 6
FIRST_BAD_DAY = START + timedelta(days=DAYS)
ROWS = 300
SEED = 5
SOURCES = ("accounts", "transactions", "labels")


@dataclass(frozen=True)
class LandingCase:
    scenario: str
    file_format: str
    source: str  # the source whose day is held
    checks: frozenset  # blocking checks expected to fail
    quarantined: bool  # rows kept in quarantine (row-level) or none (the batch is unusable)


def _case(scenario, checks, quarantined, source="transactions", file_format="parquet"):
    return LandingCase(scenario, file_format, source, frozenset(checks), quarantined)


LANDING_CASES = [
    # First: its labels then point at clean days only, so nothing but its own unknown ids can hold it (a later
    # day's labels also point at transactions an earlier case's day kept out).
    _case("bad_unknown_transactions", {"check_references"}, True, source="labels"),
    _case("bad_missing_column", {"check_schema"}, True),
    _case("bad_renamed_column", {"check_schema"}, True),
    _case("bad_extra_column", {"check_schema"}, True),
    _case("bad_wrong_type", {"check_schema"}, True),
    _case("bad_wrong_type", {"check_values"}, True, file_format="csv"),
    _case("bad_out_of_range", {"check_values"}, True),
    _case("bad_allowed_values", {"check_values"}, True),
    _case("bad_nulls", {"check_values"}, True),
    _case("bad_duplicate_ids", {"check_unique_ids"}, True),
    _case("bad_unknown_accounts", {"check_references"}, True),
    _case("bad_volume_drop", {"check_volume"}, False),
    _case("bad_volume_spike", {"check_volume"}, False),
    _case("bad_missing_partition", {"check_files_readable", "check_volume"}, False),
    _case("bad_timestamps", {"check_timestamps"}, True),
    _case("bad_empty_file", {"check_files_readable", "check_volume"}, False),
    # An unreadable file's lines are counted and quarantined; volume is not judged on rows it cannot read.
    _case("bad_unreadable_file", {"check_files_readable"}, False),  # no row readable: one file-level entry
    _case("bad_unreadable_file", {"check_files_readable"}, True, file_format="csv"),
]


def _id(case: LandingCase) -> str:
    return f"{case.scenario}-{case.file_format}"


def _day_of(case: LandingCase) -> date:
    """Each case's bad day: the cases land one a day, in the table's order, after the clean history."""
    return FIRST_BAD_DAY + timedelta(days=LANDING_CASES.index(case))


LAST_BAD_DAY = FIRST_BAD_DAY + timedelta(days=len(LANDING_CASES) - 1)


@dataclass(frozen=True)
class HeldDays:
    duckdb_path: Path
    landing_dir: Path
    success: bool
    # (asset, check) -> {day: the check's first message for it}, for the blocking checks that failed
    failed: dict[tuple[str, str], dict[str, str]]
    before: dict[str, str]  # production tables' digests before the run
    after: dict[str, str]
    files_before: dict[str, str]  # the landing files' digests before the run
    files_after: dict[str, str]


# The marts row that says which landed day it came from; the held day's other sources may add rows (a
# held transactions day blocks neither its labels about earlier transactions nor the next days).
LANDED_BEFORE = {
    "marts.transaction_labels": "where transaction_id not in (select transaction_id from marts.label_events where landed_date >= ?)",
}


def _fingerprint(con) -> dict[str, str]:
    """A digest of every production table's rows from days before the first bad one, and of the earlier
    days' raw rows and load log."""
    tables = [
        f"{s}.{t}"
        for s, t in con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema in ('marts', 'staging') and table_type = 'BASE TABLE'"
        ).fetchall()
    ]
    landed = {
        f"{s}.{t}"
        for s, t in con.execute(
            "select table_schema, table_name from information_schema.columns where column_name = 'landed_date'"
        ).fetchall()
    }
    digests = {}
    for table in tables + ["raw.accounts", "raw.transactions", "raw.labels", "raw.load_log"]:
        where = (
            "where partition_date < ?"
            if table == "raw.load_log"
            else "where _partition_date < ?"
            if table.startswith("raw.")
            else ""
        )
        where = where or LANDED_BEFORE.get(table) or ("where landed_date < ?" if table in landed else "")
        cols = "* exclude (loaded_at, run_id)" if table == "raw.load_log" else "*"
        rows = con.execute(
            f"select {cols} from {table} {where} order by all", [FIRST_BAD_DAY] if where else []
        ).fetchall()
        digests[table] = f"{len(rows)} rows " + hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    return digests


def _files_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def held_days(tmp_path_factory) -> HeldDays:
    """Six clean days through the data layer; then each case's day as its scenario lands it (all three
    sources, the faulty one included), and one data_layer run over the 18 bad days."""
    root = tmp_path_factory.mktemp("bad-inputs")
    with loaded_history(root / "home", START, DAYS, ROWS, SEED) as settings:
        for case in LANDING_CASES:
            day = _day_of(case)
            scratch = root / "scratch" / _id(case)
            # Days before a scenario's drift day are the baseline's, byte for byte: only the case's day is taken.
            generate_landing(
                DemoSpec(
                    START,
                    (day - START).days + 1,
                    ROWS,
                    seed=SEED,
                    scenario=case.scenario,
                    drift_day=(day - START).days,
                    file_format=case.file_format,
                ),
                scratch,
            )
            for source in SOURCES:
                landed = partition_dir(scratch, source, day)
                if landed.exists():
                    shutil.copytree(landed, partition_dir(settings.landing_dir, source, day))
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            before = _fingerprint(con)
        files_before = _files_digest(settings.landing_dir)
        result = dg.materialize(
            [*raw_assets, *warehouse_assets],
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            tags={
                "dagster/asset_partition_range_start": FIRST_BAD_DAY.isoformat(),
                "dagster/asset_partition_range_end": LAST_BAD_DAY.isoformat(),
            },
            raise_on_error=False,
        )
        failed = {
            # The raw assets' checks name each held day (the summary's gate names none of its own).
            (e.asset_key.to_user_string(), e.check_name): e.metadata[HELD_DAYS].value if HELD_DAYS in e.metadata else {}
            for e in (
                ev.event_specific_data for ev in result.all_events if ev.event_type_value == "ASSET_CHECK_EVALUATION"
            )
            if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
        }
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            after = _fingerprint(con)
        return HeldDays(
            settings.duckdb_path,
            settings.landing_dir,
            result.success,
            failed,
            before,
            after,
            files_before,
            _files_digest(settings.landing_dir),
        )


def test_the_run_over_the_bad_days_fails_only_the_checks_the_cases_expect(held_days):
    """No blocking check failed beyond the cases' own, and each failed on exactly its cases' days: a held day
    adds nothing to another day's verdict. (Labels are the exception the platform makes on purpose: labels
    about transactions that never landed wait with check_references, naming the day to fix.)"""
    assert not held_days.success
    for source in SOURCES:
        expected = set().union(*(c.checks for c in LANDING_CASES if c.source == source))
        failed = {check for (asset, check) in held_days.failed if asset == f"raw_{source}"}
        assert failed == expected, (source, sorted(held_days.failed))
        for check in expected:
            days = {_day_of(c).isoformat() for c in LANDING_CASES if c.source == source and check in c.checks}
            held = set(held_days.failed[(f"raw_{source}", check)])
            assert held >= days if source == "labels" else held == days, (source, check, sorted(held))
    with duckdb.connect(str(held_days.duckdb_path), read_only=True) as con:
        statuses = dict(
            con.execute(
                "select source || ' ' || partition_date, status from raw.load_log where partition_date >= ?",
                [FIRST_BAD_DAY],
            ).fetchall()
        )
    # Every bad day's accounts loaded, and the labels case's transactions too.
    assert all(statuses[f"accounts {_day_of(c)}"] == "accepted" for c in LANDING_CASES)
    (labels_case,) = [c for c in LANDING_CASES if c.source == "labels"]
    assert statuses[f"transactions {_day_of(labels_case)}"] == "accepted"


@pytest.mark.parametrize("case", LANDING_CASES, ids=_id)
def test_bad_landing_day_is_held_with_reasons_and_production_is_unchanged(case, held_days):
    day = _day_of(case)
    with duckdb.connect(str(held_days.duckdb_path), read_only=True) as con:
        status, n_landed, n_accepted, n_rejected, failed_checks = con.execute(
            "select status, n_landed, n_accepted, n_rejected, failed_checks from raw.load_log where source = ? and partition_date = ?",
            [case.source, day],
        ).fetchone()
        kept = con.execute(f"select count(*) from raw.{case.source} where _partition_date = ?", [day]).fetchone()[0]
        quarantine = con.execute(
            "select count(distinct coalesce(row_number, -1)), count(*), min(reason), count(*) filter (row_number is null) "
            "from quarantine.rejected_rows "
            "where source = ? and partition_date = ?",
            [case.source, day],
        ).fetchone()
        held_mart = {
            "transactions": "marts.transactions_enriched",
            "labels": "marts.label_events",
            "accounts": "marts.account_history",
        }
        accepted_downstream = con.execute(
            f"select count(*) from {held_mart[case.source]} where landed_date = ?", [day]
        ).fetchone()[0]

    # The day is held by exactly its case's checks, and each of those checks holds the day with a message.
    assert status == "held" and set(json.loads(failed_checks)) == set(case.checks), failed_checks
    messages = {check: held_days.failed[(f"raw_{case.source}", check)].get(day.isoformat()) for check in case.checks}
    assert all(messages.values()), (day, messages)
    assert held_days.after == held_days.before, "a production row of an earlier day changed"
    assert accepted_downstream == 0
    assert held_days.files_after == held_days.files_before, "landing files must never change"
    # Nothing lost: every landed row is either kept (held) in raw or quarantined with its reason.
    assert n_accepted == kept
    if case.quarantined:
        assert quarantine[0] == n_rejected > 0 and quarantine[2]
        assert n_landed == n_accepted + n_rejected
    else:
        # No row could be read: nothing but, for a corrupt file, one entry recording the file itself.
        assert n_rejected == 0 and quarantine[1] == quarantine[3] <= 1
    message = f"{day}: " + messages[sorted(case.checks - {"check_volume"} or case.checks)[0]]
    message = message.replace(str(held_days.landing_dir), "<landing>")
    position = LANDING_CASES.index(case)
    record(
        "bad inputs: ingestion",
        _id(case),
        what=f"{SCENARIOS[case.scenario]} ({case.file_format}), landed as day {day} after {DAYS} clean days and "
        f"{position} other cases' bad days; data_layer assets run once over the {len(LANDING_CASES)} bad days",
        expected=f"{case.source} day held by {', '.join(sorted(case.checks))} and no other check; "
        + ("rows quarantined with reasons" if case.quarantined else "no rows quarantined (batch unusable)")
        + "; none of its rows in the marts; earlier days' marts and raw rows and the landing files unchanged",
        observed=f"held; failed {', '.join(json.loads(failed_checks))}; landed {n_landed} = kept {n_accepted} + quarantined {n_rejected}; "
        f"production tables identical ({len(held_days.after)} digests); `{message[:140]}`",
        test=f"test_bad_inputs.py::test_bad_landing_day_is_held_with_reasons_and_production_is_unchanged[{_id(case)}]",
    )


# ---- serving ----------------------------------------------------------------------------


def _tx(**changes):
    body = transaction(7)
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()
_JSON = {"content-type": "application/json"}

# id -> (path, body bytes or JSON, headers, expected status, text the answer must contain)
HTTP_CASES = {
    "missing field": ("/v1/predict", _tx(amount=_DROP), _JSON, 422, '"amount"'),
    "negative amount": ("/v1/predict", _tx(amount=-5.0), _JSON, 422, '"amount"'),
    "absurd amount": ("/v1/predict", _tx(amount=10_000_000.0), _JSON, 422, '"amount"'),
    "amount as text": ("/v1/predict", _tx(amount="12.50"), _JSON, 422, '"amount"'),
    "unknown currency": ("/v1/predict", _tx(currency="XXX"), _JSON, 422, '"currency"'),
    "unknown channel": ("/v1/predict", _tx(channel="mobile"), _JSON, 422, '"channel"'),
    "bad timestamp": ("/v1/predict", _tx(event_timestamp="yesterday"), _JSON, 422, '"event_timestamp"'),
    "timestamp in year 1, east of UTC": (
        "/v1/predict",
        _tx(event_timestamp="0001-01-01T00:30:00+01:00"),
        _JSON,
        422,
        '"event_timestamp"',
    ),
    "timestamp in year 9999, west of UTC": (
        "/v1/predict",
        _tx(event_timestamp="9999-12-31T23:30:00-05:00"),
        _JSON,
        422,
        '"event_timestamp"',
    ),
    "timestamp in 2999": (
        "/v1/predict",
        _tx(event_timestamp="2999-06-01T00:00:00+00:00"),
        _JSON,
        422,
        "MLOPS_MAX_EVENT_FUTURE_SKEW_HOURS",
    ),
    "timestamp before 2000": (
        "/v1/predict",
        _tx(event_timestamp="1970-01-01T00:00:00+00:00"),
        _JSON,
        422,
        "MLOPS_EVENT_TIME_MIN",
    ),
    "timestamp in 2999 in a batch": (
        "/v1/predict/batch",
        {"transactions": [transaction(3), _tx(event_timestamp="2999-06-01T00:00:00Z")]},
        _JSON,
        422,
        '"transactions.1.event_timestamp"',
    ),
    "empty id": ("/v1/predict", _tx(transaction_id=""), _JSON, 422, '"transaction_id"'),
    "null account": ("/v1/predict", _tx(account_id=None), _JSON, 422, '"account_id"'),
    "extra field": ("/v1/predict", _tx(promo_code="VIP20"), _JSON, 422, '"promo_code"'),
    "malformed JSON": ("/v1/predict", b'{"transaction_id": "t1", "amount": 12.5', _JSON, 422, '"body"'),
    "not JSON content type": (
        "/v1/predict",
        b"transaction_id=t1",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "Content-Type",
    ),
    "body too large": (
        "/v1/predict/batch",
        {"transactions": [transaction(i) for i in range(6000)]},
        _JSON,
        413,
        "limit",
    ),
    "empty batch": ("/v1/predict/batch", {"transactions": []}, _JSON, 422, '"transactions"'),
    "batch over the limit": (
        "/v1/predict/batch",
        {"transactions": [transaction(i) for i in range(MAX_BATCH + 1)]},
        _JSON,
        422,
        '"transactions"',
    ),
    "one bad row in a batch": (
        "/v1/predict/batch",
        {"transactions": [transaction(1), _tx(currency="XXX"), transaction(2)]},
        _JSON,
        422,
        '"transactions.1.currency"',
    ),
}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("bad-requests"))
    with running_endpoint(world, free_port()) as (url, _):
        yield url


def _changes(row: dict) -> list[str]:
    """How `row` differs from the valid transaction it was made from."""
    valid = transaction(int(row.get("transaction_id", "t7")[1:] or 7))
    changed = [f"{k}={v!r}" for k, v in row.items() if valid.get(k, _DROP) != v]
    return changed + [f"no {k}" for k in sorted(set(valid) - set(row))]


def _shown(body) -> str:
    """A transaction or a batch as what differs from valid ones; anything else as its first 90 characters."""
    if isinstance(body, dict) and "transactions" not in body:
        return "a valid transaction, but " + ", ".join(_changes(body))
    if isinstance(body, dict) and isinstance(body.get("transactions"), list):
        bad = [f"row {i} has {', '.join(c)}" for i, row in enumerate(body["transactions"]) if (c := _changes(row))]
        return f"a batch of {len(body['transactions'])} valid transactions" + (", but " + "; ".join(bad) if bad else "")
    shown = body.decode(errors="replace") if isinstance(body, bytes) else json.dumps(body)
    return shown[:90] + ("..." if len(shown) > 90 else "")


def _said(answer: dict) -> str:
    """What a refusal says: the fields and the first problem, or its detail."""
    if "fields" in answer:
        return f"fields {answer['fields']}: `{answer['detail'][0]['problem'][:170]}`"
    return f"`{str(answer.get('detail') or answer.get('error'))[:170]}`"


def _state(http: httpx.Client) -> tuple[int, int, str]:
    ready = http.get("/ready").json()
    return ready["prediction_log"]["written"], ready["online_store"]["events"], ready["online_store"]["watermark"]


@pytest.mark.parametrize("name", list(HTTP_CASES))
def test_bad_request_gets_a_4xx_naming_the_problem_and_changes_nothing(name, endpoint):
    path, body, headers, status, expected_text = HTTP_CASES[name]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    with httpx.Client(base_url=endpoint, timeout=30) as http:
        before = _state(http)
        response = http.post(path, content=content, headers=headers)
        after = _state(http)  # an answer is sent after its log commit: anything logged would show now
        good = http.post("/v1/predict", json=transaction(900_000 + len(name) * 100 + sum(map(ord, name))))
        after_good = _state(http)
        metrics = http.get("/metrics").text
    assert response.status_code == status, response.text[:300]
    assert expected_text in response.text, response.text[:300]
    assert after == before, (
        "a refused request must not reach the prediction log or the online store, nor move its watermark"
    )
    assert good.status_code == 200 and after_good[:2] == (before[0] + 1, before[1] + 1)
    assert f'route="{path}",status="{status}"' in metrics and 'status="500"' not in metrics
    record(
        "bad inputs: serving",
        name,
        what=f"POST {path} with {_shown(body)}",
        expected=f"{status} naming {expected_text}; prediction log, online store and its watermark unchanged; counted in /metrics",
        observed=f"{response.status_code}, {_said(response.json())}; log rows/store events {before[:2]} -> {after[:2]}, watermark unchanged; "
        "counted by status; next good request scored and logged once",
        test=f"test_bad_inputs.py::test_bad_request_gets_a_4xx_naming_the_problem_and_changes_nothing[{name}]",
    )
