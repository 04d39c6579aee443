"""Hypothesis strategies for small, adversarial event histories (not a test module).

Timestamps come from a small grid built of the window lengths themselves, so events
exactly 1h / 24h / 7d / 30d apart, ties (identical timestamps), and events one
microsecond inside or outside a window boundary are all frequent. The grid starts on a
Friday at 23:00 UTC, so +1h crosses midnight into the weekend.
"""

from __future__ import annotations

import datetime as dt

import reference
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from mlops_core.contracts import AGE_BANDS, CHANNELS, MERCHANT_CATEGORIES

BASE = dt.datetime(2024, 3, 1, 23, 0)  # a Friday, 23:00 UTC
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
JITTERS = (
    dt.timedelta(0),
    dt.timedelta(0),
    dt.timedelta(0),
    dt.timedelta(0),
    dt.timedelta(microseconds=1),
    dt.timedelta(microseconds=-1),
    dt.timedelta(seconds=1),
    dt.timedelta(minutes=30),
)
ACCOUNTS = ("a1", "a2", "a3")
MERCHANTS = ("m1", "m2", "m3")
COUNTRIES = ("US", "GB", "FR")

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run and machine
    database=None,  # no .hypothesis folder outside tests/test_features
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


@st.composite
def grid_timestamps(draw) -> dt.datetime:
    hours = draw(st.integers(0, 3))
    days = draw(st.integers(0, 2))
    weeks = draw(st.integers(0, 1))
    months = draw(st.integers(0, 1))
    jitter = draw(st.sampled_from(JITTERS))
    return BASE + hours * HOUR + days * DAY + weeks * 7 * DAY + months * 30 * DAY + jitter


amounts = st.one_of(
    st.sampled_from([0.1, 0.2, 1.0, 10.0, 99.99, 1234.5]),
    st.floats(min_value=0.01, max_value=50_000, allow_nan=False, allow_infinity=False),
)


@st.composite
def datasets(draw, min_events: int = 1, max_events: int = 24) -> tuple[list[dict], list[dict]]:
    """(events, snapshots): a few accounts, some unknown, some with several snapshots."""
    n = draw(st.integers(min_events, max_events))
    events = []
    for i in range(n):
        events.append(
            reference.event(
                transaction_id=f"t{i:03d}",
                account_id=draw(st.sampled_from(ACCOUNTS)),
                event_timestamp=draw(grid_timestamps()),
                amount_usd=draw(amounts),
                merchant_id=draw(st.sampled_from(MERCHANTS)),
                merchant_category=draw(st.sampled_from(MERCHANT_CATEGORIES[:3])),
                channel=draw(st.sampled_from(CHANNELS)),
                country=draw(st.sampled_from(COUNTRIES)),
            )
        )
    event_times = sorted({e["event_timestamp"] for e in events})
    snapshots = []
    # a4 never transacts (a snapshot without events); any of a1..a3 may stay unknown.
    for account in (*ACCOUNTS, "a4"):
        valid_froms = draw(
            st.lists(
                # valid_from sometimes exactly an event time (then that event must not see it)
                st.one_of(grid_timestamps(), st.sampled_from(event_times)),
                max_size=3,
                unique=True,
            )
        )
        for valid_from in valid_froms:
            opened_before = draw(st.sampled_from([dt.timedelta(0), HOUR * 5, DAY, DAY * 3 + HOUR, DAY * 400]))
            snapshots.append(
                reference.snapshot(
                    account,
                    valid_from=valid_from,
                    created_at=valid_from - opened_before,
                    home_country=draw(st.sampled_from(COUNTRIES)),
                    age_band=draw(st.sampled_from(AGE_BANDS)),
                )
            )
    return events, snapshots
