"""A single bad landing day inside a scenario (DemoSpec.bad_days): only that day's files carry the fault.

The world is the scenario's on every day, the bad day included (its clean transactions and ground truth
are the scenario's); every other day lands byte for byte as without the bad day, except that labels of the
bad day's transactions never come (ingestion holds the day, so they would be orphans).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from mlops_core.datagen.generator import DemoSpec, simulate

START = dt.date(2024, 3, 1)
DAYS = 16
ROWS = 120
DRIFT_DAY = 6
BAD_DAY = 3
MATURITY = 5


def _days(**spec):
    # A short dispute window, so every transaction of a bad day would be labelled inside the 16 days.
    return list(simulate(DemoSpec(START, DAYS, ROWS, seed=11, label_maturity_days=MATURITY, **spec)))


def _same(a: pa.Table | None, b: pa.Table | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a.equals(b))


# Before the drift, and inside it: a bad day in the drift must keep the drifted world, not the baseline's.
@pytest.mark.parametrize("scenario, bad_day", [("baseline", 3), ("covariate_drift", 3), ("covariate_drift", 8)])
def test_only_the_bad_day_lands_broken_and_the_world_is_the_scenarios(scenario, bad_day):
    plain = _days(scenario=scenario, drift_day=DRIFT_DAY)
    faulty = _days(scenario=scenario, drift_day=DRIFT_DAY, bad_days=((bad_day, "bad_missing_column"),))
    bad = faulty[bad_day]
    assert "merchant_category" in plain[bad_day].transactions.table.column_names
    assert "merchant_category" not in bad.transactions.table.column_names
    assert bad.transactions.table.num_rows == plain[bad_day].transactions.table.num_rows
    # The world did not change: the same clean rows and the same frauds on the bad day.
    assert bad.clean_transactions.equals(plain[bad_day].clean_transactions)
    assert (bad.is_fraud == plain[bad_day].is_fraud).all()
    assert bad.affected and plain[bad_day].affected == (scenario != "baseline" and bad_day >= DRIFT_DAY)
    bad_ids = set(plain[bad_day].clean_transactions["transaction_id"].to_pylist())
    orphans_skipped = 0
    for plain_day, faulty_day in zip(plain, faulty, strict=True):
        assert faulty_day.affected == (plain_day.affected or faulty_day.index == bad_day)
        assert _same(plain_day.accounts.table, faulty_day.accounts.table)
        if faulty_day.index != bad_day:
            assert _same(plain_day.transactions.table, faulty_day.transactions.table), faulty_day.index
        # Labels: the same, minus those about the bad day's transactions.
        expected = plain_day.labels.table.filter(
            pa.compute.invert(pa.compute.is_in(plain_day.labels.table["transaction_id"], pa.array(sorted(bad_ids))))
        )
        orphans_skipped += plain_day.labels.table.num_rows - expected.num_rows
        assert faulty_day.labels.table.equals(expected), faulty_day.index
    # Every one of the bad day's transactions matured inside the window: all their labels were left out.
    assert orphans_skipped == len(bad_ids)


def test_a_bad_labels_day_keeps_its_transactions_and_their_labels():
    """A labels-only fault breaks that day's labels file; the day's transactions land clean and are labelled."""
    plain = _days(scenario="covariate_drift", drift_day=DRIFT_DAY)
    # Day 10: the labels of day 5's transactions land then, so the day has labels to break.
    bad_day = 10
    faulty = _days(scenario="covariate_drift", drift_day=DRIFT_DAY, bad_days=((bad_day, "bad_unknown_transactions"),))
    assert faulty[bad_day].transactions.table.equals(plain[bad_day].transactions.table)
    broken = set(faulty[bad_day].labels.table["transaction_id"].to_pylist()) - set(
        plain[bad_day].labels.table["transaction_id"].to_pylist()
    )
    assert broken and faulty[bad_day].labels.table.num_rows == plain[bad_day].labels.table.num_rows
    # The other days' labels, those about the bad day's transactions included, are the scenario's.
    for plain_day, faulty_day in zip(plain, faulty, strict=True):
        if faulty_day.index != bad_day:
            assert faulty_day.labels.table.equals(plain_day.labels.table), faulty_day.index


def test_the_drift_still_starts_on_its_day_around_a_bad_day():
    spec = DemoSpec(
        START, DAYS, ROWS, scenario="covariate_drift", drift_day=DRIFT_DAY, bad_days=((BAD_DAY, "bad_nulls"),)
    )
    assert spec.affected_dates == (START + dt.timedelta(days=BAD_DAY), *spec.dates[DRIFT_DAY:])
    assert DemoSpec(START, DAYS, ROWS, bad_days=((BAD_DAY, "bad_nulls"),)).affected_dates == (
        START + dt.timedelta(days=BAD_DAY),
    )


@pytest.mark.parametrize(
    "bad_days, message",
    [
        (((DAYS, "bad_nulls"),), f"day {DAYS} is not in 0..{DAYS - 1}"),
        (((-1, "bad_nulls"),), "day -1 is not in"),
        (((2, "bad_nulls"), (2, "bad_empty_file")), "names a day twice: [2, 2]"),
        (((2, "covariate_drift"),), "'covariate_drift' is not a landing fault"),
        (((2, "bad_no_such_fault"),), "unknown scenario 'bad_no_such_fault'"),
    ],
)
def test_a_wrong_bad_day_is_named(bad_days, message):
    with pytest.raises(ValueError) as raised:
        DemoSpec(START, DAYS, ROWS, bad_days=bad_days)
    assert message in str(raised.value)
