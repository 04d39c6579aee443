"""The formulas of request-time features, each as DuckDB SQL and as Python, side by side.

Both forms use the same arithmetic on IEEE doubles and 64-bit integers (integer
division for ages, ln(1 + x) rather than log1p), so offline and online values are
equal, not merely close. tests/test_features/test_transforms.py runs every transform
both ways on the same inputs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from mlops_core.features.spec import RequestFeature

MICROS_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class TransformForms:
    sql: Callable[[RequestFeature, list[str]], str]
    python: Callable[[RequestFeature, list[object]], object]


def _sql_literal(value: object) -> str:
    if isinstance(value, str):
        if "'" in value:
            raise ValueError(f"feature spec literal {value!r} may not contain a quote")
        return f"'{value}'"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _weekday(ts: dt.datetime) -> int:
    return ts.weekday()


def _epoch_us(ts: dt.datetime) -> int:
    # Exact integer microseconds; timedelta arithmetic avoids float rounding.
    delta = ts - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _identity_sql(f: RequestFeature, a: list[str]) -> str:
    if f.dtype == "category":
        return f"coalesce({a[0]}, {_sql_literal(f.default)})"
    return a[0]


def _identity_py(f: RequestFeature, v: list[object]) -> object:
    if f.dtype == "category":
        return v[0] if v[0] in f.categories else f.default
    return float(v[0]) if f.dtype == "float64" else v[0]


def _ratio_py(f: RequestFeature, v: list[object]) -> float:
    numerator, denominator = v
    return numerator / denominator if denominator > 0 else float(f.default)


def _age_days_py(f: RequestFeature, v: list[object]) -> float:
    ts, created_at = v
    if created_at is None:
        return float(f.default)
    return float((_epoch_us(ts) - _epoch_us(created_at)) // MICROS_PER_DAY)


def _differs_py(f: RequestFeature, v: list[object]) -> int:
    if v[1] is None:
        return int(f.default)
    return int(v[0] != v[1])


TRANSFORMS: dict[str, TransformForms] = {
    "identity": TransformForms(_identity_sql, _identity_py),
    "log1p": TransformForms(lambda f, a: f"ln(1 + {a[0]})", lambda f, v: math.log(1 + v[0])),
    "hour_of_day": TransformForms(lambda f, a: f"cast(hour({a[0]}) as bigint)", lambda f, v: v[0].hour),
    "day_of_week": TransformForms(lambda f, a: f"cast(isodow({a[0]}) - 1 as bigint)", lambda f, v: _weekday(v[0])),
    "is_weekend": TransformForms(lambda f, a: f"cast(isodow({a[0]}) >= 6 as bigint)", lambda f, v: int(_weekday(v[0]) >= 5)),
    "equals": TransformForms(
        lambda f, a: f"cast({a[0]} = {_sql_literal(f.argument)} as bigint)", lambda f, v: int(v[0] == f.argument)
    ),
    "differs": TransformForms(
        lambda f, a: f"coalesce(cast({a[0]} <> {a[1]} as bigint), {_sql_literal(int(f.default))})", _differs_py
    ),
    # Complete days: integer division of exact microseconds (the account exists before t).
    "age_days": TransformForms(
        lambda f, a: (
            f"coalesce(cast((epoch_us({a[0]}) - epoch_us({a[1]})) // {MICROS_PER_DAY} as double), "
            f"{_sql_literal(float(f.default))})"
        ),
        _age_days_py,
    ),
    "ratio": TransformForms(
        lambda f, a: f"case when {a[1]} > 0 then {a[0]} / {a[1]} else {_sql_literal(float(f.default))} end", _ratio_py
    ),
}


def sql_expression(feature: RequestFeature, input_sql: list[str]) -> str:
    return TRANSFORMS[feature.transform].sql(feature, input_sql)


def python_value(feature: RequestFeature, inputs: list[object]) -> object:
    return TRANSFORMS[feature.transform].python(feature, inputs)


epoch_us = _epoch_us
