"""The formulas of request-time features, each as DuckDB SQL and as Python, side by side.

Both forms use the same arithmetic on IEEE doubles and 64-bit integers (the same
double division for ages, ln(1 + x) rather than log1p), so offline and online values
are equal, not merely close; NULL inputs give the same defaults on both sides. tests/test_features/test_transforms.py runs every transform
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
    """A transform as a SQL expression and as a Python expression over its input names."""

    sql: Callable[[RequestFeature, list[str]], str]
    python: Callable[[RequestFeature, list[str]], str]


def _sql_literal(value: object) -> str:
    if isinstance(value, str):
        if "'" in value:
            raise ValueError(f"feature spec literal {value!r} may not contain a quote")
        return f"'{value}'"
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _epoch_us(ts: dt.datetime) -> int:
    # Exact integer microseconds; timedelta arithmetic avoids float rounding.
    delta = ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _identity_sql(f: RequestFeature, a: list[str]) -> str:
    if f.dtype == "category":
        allowed = ", ".join(_sql_literal(c) for c in f.categories)
        return f"case when {a[0]} in ({allowed}) then {a[0]} else {_sql_literal(f.default)} end"
    return a[0]


def _identity_py(f: RequestFeature, a: list[str]) -> str:
    if f.dtype == "category":
        # A set literal of constants compiles to a frozenset constant: O(1) membership. Written in the spec's
        # order, not a set's repr, so the generated source is the same in every process (string hashes vary).
        allowed = ", ".join(repr(c) for c in dict.fromkeys(f.categories))
        return f"({a[0]} if {a[0]} in {{{allowed}}} else {f.default!r})"
    return f"float({a[0]})" if f.dtype == "float64" else a[0]


TRANSFORMS: dict[str, TransformForms] = {
    "identity": TransformForms(_identity_sql, _identity_py),
    "log1p": TransformForms(lambda f, a: f"ln(1 + {a[0]})", lambda f, a: f"log(1 + {a[0]})"),
    "hour_of_day": TransformForms(lambda f, a: f"cast(hour({a[0]}) as bigint)", lambda f, a: f"{a[0]}.hour"),
    "day_of_week": TransformForms(lambda f, a: f"cast(isodow({a[0]}) - 1 as bigint)", lambda f, a: f"{a[0]}.weekday()"),
    "is_weekend": TransformForms(
        lambda f, a: f"cast(isodow({a[0]}) >= 6 as bigint)", lambda f, a: f"int({a[0]}.weekday() >= 5)"
    ),
    "equals": TransformForms(
        lambda f, a: f"coalesce(cast({a[0]} = {_sql_literal(f.argument)} as bigint), 0)",
        lambda f, a: f"int({a[0]} == {f.argument!r})",
    ),
    "differs": TransformForms(
        lambda f, a: f"coalesce(cast({a[0]} <> {a[1]} as bigint), {_sql_literal(int(f.default))})",
        lambda f, a: f"({int(f.default)!r} if {a[0]} is None or {a[1]} is None else int({a[0]} != {a[1]}))",
    ),
    # Complete days: floor of exact microseconds over a day, both sides dividing the same
    # two doubles (as the dbt mart does), so a negative age floors the same way too.
    "age_days": TransformForms(
        lambda f, a: (
            f"coalesce(floor((epoch_us({a[0]}) - epoch_us({a[1]})) / {float(MICROS_PER_DAY)!r}), "
            f"{_sql_literal(float(f.default))})"
        ),
        lambda f, a: (
            f"({float(f.default)!r} if {a[1]} is None "
            f"else float(floor((epoch_us({a[0]}) - epoch_us({a[1]})) / {float(MICROS_PER_DAY)!r})))"
        ),
    ),
    "ratio": TransformForms(
        lambda f, a: f"case when {a[1]} > 0 then {a[0]} / {a[1]} else {_sql_literal(float(f.default))} end",
        lambda f, a: f"({a[0]} / {a[1]} if {a[1]} > 0 else {float(f.default)!r})",
    ),
}

# Names the Python expressions may use.
PYTHON_NAMESPACE: dict[str, object] = {
    "log": math.log,
    "floor": math.floor,
    "epoch_us": _epoch_us,
    "float": float,
    "int": int,
}


def sql_expression(feature: RequestFeature, input_sql: list[str]) -> str:
    return TRANSFORMS[feature.transform].sql(feature, input_sql)


def python_expression(feature: RequestFeature, input_names: list[str]) -> str:
    """The feature's formula as a Python expression over variables named `input_names`."""
    return TRANSFORMS[feature.transform].python(feature, input_names)


_COMPILED: dict[str, Callable[..., object]] = {}


def python_value(feature: RequestFeature, inputs: list[object]) -> object:
    """Evaluate the feature's Python formula on input values (tests and one-off use)."""
    function = _COMPILED.get(feature.name)
    if function is None:
        names = [f"x{i}" for i in range(len(feature.inputs))]
        source = f"lambda {', '.join(names)}: {python_expression(feature, names)}"
        function = _COMPILED[feature.name] = eval(source, dict(PYTHON_NAMESPACE))  # noqa: S307 - spec-generated
    return function(*inputs)


epoch_us = _epoch_us
