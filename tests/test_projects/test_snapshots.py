"""Snapshot projects' data (tier 1): features see only the past, windows end exactly where they say, a label
is blank until its horizon has passed, and a bad project SQL is refused naming the file without touching the
table that was there."""

import datetime as dt
import shutil

import duckdb
import pytest
import yaml

from mlops_core.projects import snapshots
from mlops_core.projects.declaration import ProjectDeclarationError, load_project, parse_project
from mlops_core.settings import REPO_ROOT

CHURN = REPO_ROOT / "projects" / "churn"
US = dt.timedelta(microseconds=1)


def _project(**features):
    attributes = yaml.safe_load((CHURN / "defs.yaml").read_text())["attributes"]
    attributes["name"] = "tiny"
    attributes["registered_model"] = "tiny_model"
    if features:
        attributes["features"] = features
    return parse_project(attributes)


def _warehouse(events: list[tuple[str, dt.datetime, float]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute(
        "CREATE TABLE marts.transactions_enriched (account_id VARCHAR, event_timestamp TIMESTAMP, event_date DATE, "
        "amount_usd DOUBLE, is_online BOOLEAN, is_foreign BOOLEAN, merchant_id VARCHAR, merchant_category VARCHAR, "
        "country VARCHAR)"
    )
    for i, (account, ts, amount) in enumerate(events):
        con.execute(
            "INSERT INTO marts.transactions_enriched VALUES (?, ?, ?, ?, ?, false, ?, 'grocery', 'US')",
            [account, ts, ts.date(), amount, i % 2 == 0, f"m{i % 3}"],
        )
    return con


# Every snapshot, everyone who ever bought is in the population; the label is whether they buy within 30 days.
EVERYONE_SQL = """
select a.account_id, c.snapshot_date,
       not exists (select 1 from marts.transactions_enriched t where t.account_id = a.account_id
                   and t.event_date >= c.snapshot_date and t.event_date < c.snapshot_date + interval 30 day) as churned
from snapshot_calendar c cross join (select distinct account_id from marts.transactions_enriched) a
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "snapshots.sql").write_text(EVERYONE_SQL)
    return tmp_path


def test_calendar_is_aligned_on_mondays_and_starts_once_the_longest_window_is_full():
    days = snapshots.calendar(dt.date(2026, 1, 1), dt.date(2026, 6, 30), every_days=7, warm_days=90)
    assert days[0] == dt.date(2026, 4, 6)  # the first Monday on or after 2026-04-01 (Jan 1 + 90 days)
    assert all(d.weekday() == 0 for d in days)
    assert days[-1] == dt.date(2026, 6, 29)
    # The midnight after the last landed day is a snapshot when it falls on the calendar.
    assert snapshots.calendar(dt.date(2026, 1, 1), dt.date(2026, 7, 5), 7, 90)[-1] == dt.date(2026, 7, 6)


def test_windows_end_at_the_snapshot_midnight_and_start_exactly_window_days_before(folder):
    snap = dt.datetime(2026, 4, 6)  # the first snapshot (a Monday, 90+ days after the first event)
    events = [
        ("a", dt.datetime(2026, 1, 1), 1.0),  # opens the history: 95 days before, outside every window
        ("a", snap - dt.timedelta(days=30), 10.0),  # exactly 30 days before: inside the 30-day window
        ("a", snap - dt.timedelta(days=30) - US, 100.0),  # a microsecond earlier: 90-day window only
        ("a", snap - US, 1000.0),  # the last microsecond before midnight: inside
        ("a", snap, 10000.0),  # the snapshot's own midnight: the future, never a feature
        ("a", dt.datetime(2026, 6, 30), 5.0),  # extends the data so the labels of early snapshots are known
    ]
    con = _warehouse(events)
    project = _project()
    snapshots.build_snapshots(con, project, folder)
    row = con.execute(
        "SELECT * FROM project_tiny.snapshots WHERE account_id = 'a' AND snapshot_date = ?", [snap.date()]
    ).df()
    assert len(row) == 1
    row = row.iloc[0]
    assert row["count_30d"] == 2
    assert row["count_90d"] == 3
    assert row["sum_amount_usd_30d"] == pytest.approx(1010.0, rel=1e-12)
    assert row["sum_amount_usd_90d"] == pytest.approx(1110.0, rel=1e-12)
    assert row["mean_amount_usd_90d"] == pytest.approx(370.0, rel=1e-12)
    assert row["seconds_since_last_90d"] == pytest.approx(1e-6, abs=1e-9)
    # Bought at the snapshot's midnight, so not churned within 30 days.
    assert not row["label"]


def test_label_stays_blank_until_the_whole_horizon_has_landed(folder):
    # Data end = the midnight after 2026-06-30 = 2026-07-01. A snapshot is labelled iff snapshot + 30 <= 07-01.
    events = [("a", dt.datetime(2026, 1, 1) + dt.timedelta(days=d), 1.0) for d in range(0, 181, 3)]
    con = _warehouse(events)
    snapshots.build_snapshots(con, _project(), folder)
    known = dict(
        con.execute("SELECT snapshot_date, label_known FROM project_tiny.snapshots WHERE account_id = 'a'").fetchall()
    )
    assert known[dt.date(2026, 5, 25)] is True  # 05-25 + 30 = 06-24
    assert known[dt.date(2026, 6, 1)] is True  # 06-01 + 30 = 07-01: exactly the data end, known
    assert known[dt.date(2026, 6, 8)] is False  # 06-08 + 30 = 07-08: not yet
    blanks = con.execute(
        "SELECT count(*) FROM project_tiny.snapshots WHERE NOT label_known AND label IS NOT NULL"
    ).fetchone()[0]
    assert blanks == 0


def test_an_account_that_stops_is_labelled_churned_only_by_snapshots_within_30_days_of_its_stop(folder):
    events = [("a", dt.datetime(2026, 1, 1) + dt.timedelta(days=d), 1.0) for d in range(0, 181)]
    # b buys daily until 2026-05-10 (last purchase), then never again.
    events += [("b", dt.datetime(2026, 1, 1) + dt.timedelta(days=d), 1.0) for d in range(0, 130)]
    con = _warehouse(events)
    snapshots.build_snapshots(con, _project(), folder)
    labels = dict(
        con.execute(
            "SELECT snapshot_date, label FROM project_tiny.snapshots WHERE account_id = 'b' AND label_known"
        ).fetchall()
    )
    assert labels[dt.date(2026, 5, 4)] is False  # bought on 05-04 .. 05-10
    assert labels[dt.date(2026, 5, 11)] is True  # nothing from 05-11 on
    assert not any(
        v
        for v in con.execute(
            "SELECT label FROM project_tiny.snapshots WHERE account_id = 'a' AND label_known"
        ).fetchall()[0]
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select account_id, snapshot_date from snapshot_calendar, (select 'a' as account_id)", "missing ['churned']"),
        (
            "select 'a' as account_id, snapshot_date, true as churned from snapshot_calendar "
            "union all select 'a', snapshot_date, false from snapshot_calendar",
            "duplicates such as 'a'",
        ),
        ("select 'a' as account_id, DATE '2026-04-07' as snapshot_date, true as churned", "is not a snapshot date"),
        ("select * from marts.no_such_mart", "the query failed"),
        (
            "select null::varchar as account_id, snapshot_date, true as churned from snapshot_calendar",
            "have no account_id",
        ),
    ],
)
def test_a_bad_project_sql_is_refused_naming_the_file_and_the_previous_table_stays(folder, sql, expected):
    events = [("a", dt.datetime(2026, 1, 1) + dt.timedelta(days=d), 1.0) for d in range(0, 181, 2)]
    con = _warehouse(events)
    project = _project()
    before = snapshots.build_snapshots(con, project, folder)
    (folder / "snapshots.sql").write_text(sql)
    with pytest.raises(snapshots.SnapshotError) as error:
        snapshots.build_snapshots(con, project, folder)
    assert str(folder / "snapshots.sql") in str(error.value)
    assert expected in str(error.value)
    assert con.execute("SELECT count(*) FROM project_tiny.snapshots").fetchone()[0] == before.rows


def test_snapshot_declarations_refuse_what_the_platform_cannot_compute(tmp_path):
    attributes = yaml.safe_load((CHURN / "defs.yaml").read_text())["attributes"]

    def problems(**changes):
        bad = {**attributes, **changes}
        with pytest.raises(ProjectDeclarationError) as error:
            parse_project(bad, "projects/churn/defs.yaml")
        return str(error.value)

    assert "not a number of days such as '30d'" in problems(
        features={"windowed": [{"aggregation": "count", "windows": ["30days"]}]}
    )
    assert "merchant_id is not a number" in problems(
        features={"windowed": [{"aggregation": "sum", "column": "merchant_id", "windows": ["30d"]}]}
    )
    assert "no such column in marts.transactions_enriched" in problems(
        features={"windowed": [{"aggregation": "max", "column": "amount", "windows": ["30d"]}]}
    )
    assert "give horizon_days" in problems(label={**attributes["label"], "horizon_days": None, "maturity_days": 30})
    assert "account and request features apply to grain 'event'" in problems(
        features={**attributes["features"], "request": ["amount_usd"]}
    )
    # The SQL file is part of the project: a snapshot declaration without it is refused, naming it.
    project = tmp_path / "churn"
    project.mkdir()
    shutil.copy(CHURN / "defs.yaml", project / "defs.yaml")
    with pytest.raises(ProjectDeclarationError) as error:
        load_project(project)
    assert "snapshots.sql, which is missing" in str(error.value)


def test_min_history_days_is_the_least_history_that_labels_three_snapshots_on_any_start_weekday():
    """`mlops demo run` skips a project with less history than this, so it must be exact: with it, every start
    weekday gives MIN_LABELLED_DATES labelled snapshots; one day less, the worst-aligned start gives fewer."""
    from mlops_core.projects.training import MIN_LABELLED_DATES, min_history_days

    churn = load_project(REPO_ROOT / "projects" / "churn")
    needed = min_history_days(churn)
    assert needed == 90 + 3 * 7 - 1 + 30

    def labelled(first: dt.date, days: int) -> int:
        last = first + dt.timedelta(days=days - 1)
        dates = snapshots.calendar(first, last, 7, 90)
        return sum(d + dt.timedelta(days=30) <= last + dt.timedelta(days=1) for d in dates)

    starts = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(7)]
    assert all(labelled(first, needed) >= MIN_LABELLED_DATES for first in starts)
    assert min(labelled(first, needed - 1) for first in starts) == MIN_LABELLED_DATES - 1
