"""A throwaway MLOPS_HOME with 180 days of demo data with fading customers, through the shared data layer,
for the churn project's tier-2 tests; and a helper that trains and scores churn once if nothing has yet."""

import datetime as dt

import dagster as dg
from generated_history import loaded_history

from mlops_core import registry
from resources.environment import build_resources

START = dt.date(2026, 1, 1)
DAYS = 180
CHURN_SHARE = 0.3


def churn_world(home):
    """A context manager yielding (settings, definitions, instance) over the loaded history."""
    import contextlib

    @contextlib.contextmanager
    def world():
        with loaded_history(home, START, DAYS, rows_per_day=300, seed=7, churn_share=CHURN_SHARE) as settings:
            from mlops_assets.definitions import build_definitions

            yield settings, build_definitions(settings), dg.DagsterInstance.ephemeral()

    return world()


def run_job(defs, instance, job_name):
    return defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False)


def model_registry(settings):
    return build_resources(settings)["model_registry"]


def champion_version(settings, model: str = "churn_predictor") -> str | None:
    return registry.alias_version(model_registry(settings).client(), registry.CHAMPION, model)


def ensure_trained(settings, defs, instance) -> str:
    """Churn's champion version, training and scoring it first when there is none (each test runs alone too)."""
    if champion_version(settings) is None:
        assert run_job(defs, instance, "churn_training_job").success
        assert run_job(defs, instance, "churn_scoring_job").success
    return champion_version(settings)
