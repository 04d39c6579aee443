"""Every request transform: its DuckDB SQL form equals its Python form on the same inputs.

Offline features run the SQL form over warehouse columns (naive UTC TIMESTAMP, DOUBLE,
VARCHAR); online features run the Python form over a normalized request (aware UTC
datetimes). Both are evaluated here on one table of inputs and must agree exactly
(same value, same Python type after fetching), not merely closely.
"""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import pytest

from mlops_core.contracts import MERCHANT_CATEGORIES
from mlops_core.features.spec import REQUEST_FEATURES, RequestFeature
from mlops_core.features.transforms import TRANSFORMS, python_value, sql_expression

UTC = dt.UTC
SQL_TYPES = {
    "amount_usd": "double",
    "amount_mean_30d": "double",
    "event_timestamp": "timestamp",
    "created_at": "timestamp",
    "channel": "varchar",
    "country": "varchar",
    "home_country": "varchar",
    "merchant_category": "varchar",
}

# Friday 2024-03-01 .. Monday 2024-03-04, around midnight UTC, plus leap day and epoch.
TIMESTAMPS = [
    dt.datetime(2024, 3, 1, 0, 0),  # Friday midnight
    dt.datetime(2024, 3, 1, 23, 59, 59, 999_999),  # last microsecond of Friday
    dt.datetime(2024, 3, 2, 0, 0),  # Saturday 00:00: weekend starts
    dt.datetime(2024, 3, 2, 0, 0, 0, 1),
    dt.datetime(2024, 3, 3, 12, 30),  # Sunday
    dt.datetime(2024, 3, 3, 23, 59, 59, 999_999),  # last microsecond of the weekend
    dt.datetime(2024, 3, 4, 0, 0),  # Monday 00:00
    dt.datetime(2024, 2, 29, 13, 0),  # leap day, Thursday
    dt.datetime(1970, 1, 1, 0, 0),
    dt.datetime(2030, 12, 31, 23, 0),
]
AMOUNTS = [0.0, 0.01, 0.1, 0.3, 1.0, 9.99, 123.456, 1e-9, 49_999.99, 50_000.0]


def _created_at_cases() -> list[tuple[dt.datetime, dt.datetime | None]]:
    """(event_timestamp, created_at) with the account opened at or before the transaction, or unknown."""
    t = dt.datetime(2024, 3, 2, 0, 0)
    return [
        (t, None),  # unknown account
        (t, t),  # opened at the very instant: 0 complete days
        (t, t - dt.timedelta(microseconds=1)),
        (t, t - dt.timedelta(days=1) + dt.timedelta(microseconds=1)),  # not yet a complete day
        (t, t - dt.timedelta(days=1)),  # exactly one day
        (t, t - dt.timedelta(days=1, microseconds=1)),
        (t, t - dt.timedelta(days=400, hours=23, minutes=59)),
        (dt.datetime(2024, 3, 1, 23, 59, 59, 999_999), dt.datetime(2024, 2, 29, 0, 0)),  # across leap day
        (dt.datetime(2024, 3, 1), dt.datetime(1970, 1, 1)),
    ]


def cases_for(f: RequestFeature) -> list[tuple]:
    """Input tuples (in the order of f.inputs) covering the edges of each transform."""
    t = f.transform
    if t == "identity" and f.dtype == "category":
        return [(c,) for c in MERCHANT_CATEGORIES] + [(None,)]
    if t in ("identity", "log1p"):
        return [(a,) for a in AMOUNTS]
    if t in ("hour_of_day", "day_of_week", "is_weekend"):
        return [(ts,) for ts in TIMESTAMPS]
    if t == "equals":
        return [("online",), ("in_store",), ("Online",), ("",)]
    if t == "differs":
        return [("US", "US"), ("US", "GB"), ("GB", "US"), ("US", None)]  # None: unknown account
    if t == "age_days":
        return _created_at_cases()
    if t == "ratio":
        return [
            (10.0, 0.0),
            (0.0, 0.0),
            (10.0, 5.0),
            (1.0, 3.0),
            (0.1, 0.3),
            (50_000.0, 0.01),
            (0.0, 7.0),
            (1e-9, 1e-9),
        ]
    raise AssertionError(f"no test inputs for transform {t!r}: add cases here")


def _python_input(value: object) -> object:
    # Online, request timestamps and snapshot times are aware UTC datetimes.
    return value.replace(tzinfo=UTC) if isinstance(value, dt.datetime) else value


def evaluate_both(f: RequestFeature, cases: list[tuple]) -> list[tuple[tuple, object, object]]:
    """[(inputs, sql value, python value)] for each input tuple."""
    con = duckdb.connect()
    try:
        con.execute("set TimeZone='UTC'")
        columns = ", ".join(f"{name} {SQL_TYPES[name]}" for name in f.inputs)
        con.execute(f"create table inputs (case_id integer, {columns})")
        con.executemany(f"insert into inputs values (?{', ?' * len(f.inputs)})", [(i, *c) for i, c in enumerate(cases)])
        sql = sql_expression(f, list(f.inputs))
        sql_values = dict(con.execute(f"select case_id, {sql} from inputs").fetchall())
    finally:
        con.close()
    return [(c, sql_values[i], python_value(f, [_python_input(v) for v in c])) for i, c in enumerate(cases)]


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def test_every_transform_is_used_and_tested():
    used = {f.transform for f in REQUEST_FEATURES}
    assert used == set(TRANSFORMS), f"transforms without a feature: {set(TRANSFORMS) - used}"
    for f in REQUEST_FEATURES:
        assert cases_for(f), f.name


@pytest.mark.parametrize("feature", REQUEST_FEATURES, ids=lambda f: f.name)
def test_sql_form_equals_python_form(feature: RequestFeature):
    results = evaluate_both(feature, cases_for(feature))
    differing = [(inputs, s, p) for inputs, s, p in results if not _same(s, p)]
    assert not differing, f"{feature.name} ({feature.transform}): SQL != Python for " + "; ".join(
        f"{inputs!r}: sql={s!r} python={p!r}" for inputs, s, p in differing
    )
    expected_type = {"int64": int, "float64": float, "category": str}[feature.dtype]
    assert all(type(p) is expected_type for _, _, p in results), (
        f"{feature.name}: values not all {expected_type.__name__}"
    )


def _by_name(name: str) -> RequestFeature:
    return next(f for f in REQUEST_FEATURES if f.name == name)


@pytest.mark.parametrize(
    ("name", "inputs", "expected"),
    [
        ("hour_of_day", (dt.datetime(2024, 3, 1, 23, 59, 59, 999_999),), 23),
        ("hour_of_day", (dt.datetime(2024, 3, 2, 0, 0),), 0),
        ("day_of_week", (dt.datetime(2024, 3, 1, 23, 59, 59, 999_999),), 4),  # Friday
        ("day_of_week", (dt.datetime(2024, 3, 3, 23, 59),), 6),  # Sunday
        ("day_of_week", (dt.datetime(2024, 3, 4, 0, 0),), 0),  # Monday
        ("is_weekend", (dt.datetime(2024, 3, 1, 23, 59, 59, 999_999),), 0),
        ("is_weekend", (dt.datetime(2024, 3, 2, 0, 0),), 1),
        ("is_weekend", (dt.datetime(2024, 3, 3, 23, 59, 59, 999_999),), 1),
        ("is_weekend", (dt.datetime(2024, 3, 4, 0, 0),), 0),
        ("is_online", ("online",), 1),
        ("is_online", ("in_store",), 0),
        ("is_foreign", ("US", "GB"), 1),
        ("is_foreign", ("US", None), 0),
        ("account_age_days", (dt.datetime(2024, 3, 2), dt.datetime(2024, 3, 1, 0, 0, 0, 1)), 0.0),
        ("account_age_days", (dt.datetime(2024, 3, 2), dt.datetime(2024, 3, 1)), 1.0),
        ("account_age_days", (dt.datetime(2024, 3, 2), None), -1.0),
        ("amount_to_mean_30d", (10.0, 4.0), 2.5),
        ("amount_to_mean_30d", (10.0, 0.0), 1.0),
        ("log_amount_usd", (0.0,), 0.0),
        ("log_amount_usd", (math.e - 1,), math.log(math.e)),
        ("merchant_category", (None,), "unknown"),
        ("merchant_category", ("grocery",), "grocery"),
    ],
)
def test_known_answers(name, inputs, expected):
    [(_, sql_value, python_value_)] = evaluate_both(_by_name(name), [inputs])
    assert sql_value == expected and python_value_ == expected


def test_age_days_of_an_account_opened_after_the_transaction_agrees():
    t = dt.datetime(2024, 3, 2, 0, 0)
    cases = [(t, t + dt.timedelta(hours=1)), (t, t + dt.timedelta(days=1, hours=1)), (t, t + dt.timedelta(days=2))]
    results = evaluate_both(_by_name("account_age_days"), cases)
    assert [(s, p) for _, s, p in results] == [(-1.0, -1.0), (-2.0, -2.0), (-2.0, -2.0)]


def test_category_outside_the_spec_agrees():
    [(_, sql_value, python_value_)] = evaluate_both(_by_name("merchant_category"), [("casino",)])
    assert sql_value == python_value_
