"""The simulation's own options: forced retrainings as the CLI spells them, and a sensor's run config (tier 1)."""

import pytest

from mlops_cli.simulate import _retrain_day
from mlops_cli.simulation.daemon import _merge


def test_a_forced_retraining_reads_its_day_and_typed_settings():
    assert _retrain_day("14") == (14, {})
    assert _retrain_day("14:false_negative_cost=3,max_depth=3,refit_on_all_rows=false") == (
        14,
        {"false_negative_cost": 3, "max_depth": 3, "refit_on_all_rows": False},
    )


@pytest.mark.parametrize("text", ["fourteen", "14:false_negative_cost", "14:false_negative_cost=three"])
def test_a_misspelt_forced_retraining_names_the_expected_form(text):
    with pytest.raises(ValueError, match=r"DAY\[:SETTING=VALUE"):
        _retrain_day(text)


def test_a_sensors_run_config_goes_on_top_of_the_jobs_own():
    base = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, "ops": {"a": {"config": {"x": 1, "y": 2}}}}
    request = {"ops": {"a": {"config": {"y": 3}}, "b": {"config": {"z": 4}}}}
    assert _merge(base, request) == {
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "ops": {"a": {"config": {"x": 1, "y": 3}}, "b": {"config": {"z": 4}}},
    }
    assert _merge(None, None) == {} and base["ops"]["a"]["config"]["y"] == 2  # the job's config is not changed


@pytest.mark.parametrize("trees", [0, -5])
def test_an_oracle_bound_below_one_tree_is_refused_with_its_value(trees):
    from mlops_cli.simulation.loop import SimulationSpec

    with pytest.raises(ValueError, match=rf"oracle_max_trees must be >= 1 \(or None\), got {trees}"):
        SimulationSpec(history_days=45, oracle_max_trees=trees)
    assert SimulationSpec(history_days=45, oracle_max_trees=1).oracle_max_trees == 1


@pytest.mark.parametrize(
    "bad_days, message",
    [
        (((4, "bad_nulls"),), r"day 4 is not in 0\.\.3"),
        (((1, "bad_nulls"), (1, "bad_empty_file")), r"names a day twice: \[1, 1\]"),
        (((1, "concept_drift"),), "'concept_drift' is not a landing fault"),
    ],
)
def test_a_wrong_bad_day_is_refused_before_the_simulation_touches_anything(bad_days, message):
    """The spec refuses it on construction: ClosedLoop.start resets the home first, so a late refusal would
    have wiped it for nothing."""
    from mlops_cli.simulation.loop import SimulationSpec

    with pytest.raises(ValueError, match=message):
        SimulationSpec(days=4, drift_day=2, history_days=45, bad_days=bad_days)
    assert SimulationSpec(days=4, drift_day=2, history_days=45, bad_days=((3, "bad_nulls"),)).bad_days == (
        (3, "bad_nulls"),
    )
