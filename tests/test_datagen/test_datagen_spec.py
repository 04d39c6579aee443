"""DemoSpec validation, the scenario catalogue and the generation summary."""

from __future__ import annotations

import datetime as dt

import pytest

from mlops_core.datagen.generator import DemoSpec
from mlops_core.datagen.scenarios import SCENARIOS

START = dt.date(2024, 3, 1)

EXPECTED_SCENARIOS = [
    "baseline",
    "covariate_drift",
    "concept_drift",
    "bad_missing_column",
    "bad_renamed_column",
    "bad_extra_column",
    "bad_wrong_type",
    "bad_out_of_range",
    "bad_allowed_values",
    "bad_nulls",
    "bad_duplicate_ids",
    "bad_unknown_accounts",
    "bad_unknown_transactions",
    "bad_volume_drop",
    "bad_volume_spike",
    "bad_missing_partition",
    "bad_timestamps",
    "bad_empty_file",
    "bad_unreadable_file",
]


def test_scenario_catalogue_has_exactly_the_documented_names_with_one_line_descriptions():
    assert sorted(SCENARIOS) == sorted(EXPECTED_SCENARIOS)
    for name, description in SCENARIOS.items():
        assert description and "\n" not in description, name


def test_unknown_scenario_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown scenario 'nope'") as err:
        DemoSpec(START, 3, 100, scenario="nope")
    for name in EXPECTED_SCENARIOS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"days": 0}, "days must be >= 1"),
        ({"rows_per_day": 9}, "rows_per_day must be >= 10"),
        ({"drift_day": 3}, "drift_day must be in 0..2"),
        ({"drift_day": -1}, "drift_day must be in 0..2"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"file_format": "json"}, "file_format must be"),
        ({"start": "2024-03-01"}, "start must be a datetime.date"),
    ],
)
def test_invalid_spec_raises_a_clear_value_error(changes, message):
    arguments = {"start": START, "days": 3, "rows_per_day": 100} | changes
    with pytest.raises(ValueError, match=message):
        DemoSpec(**arguments)


def test_drift_day_defaults_to_the_middle_and_baseline_affects_nothing():
    assert DemoSpec(START, 9, 100, scenario="concept_drift").affected_dates[0] == START + dt.timedelta(days=4)
    assert DemoSpec(START, 9, 100, scenario="bad_nulls", drift_day=7).affected_dates == (
        START + dt.timedelta(days=7),
        START + dt.timedelta(days=8),
    )
    assert DemoSpec(START, 9, 100, drift_day=2).affected_dates == ()


def test_summary_matches_the_files_written(baseline_small):
    spec, summary, reader = baseline_small
    assert summary.first_date == START
    assert summary.last_date == START + dt.timedelta(days=spec.days - 1)
    assert len(summary.files) == 3 * spec.days
    assert all(path.is_file() for path in summary.files)
    for source in ("accounts", "transactions", "labels"):
        landed = sum(len(reader.partition(source, day).frame) for day in spec.dates)
        assert summary.rows[source] == landed, source
    assert summary.n_transactions == summary.rows["transactions"]
    assert summary.fraud_rate == pytest.approx(summary.n_fraud / summary.n_transactions)
