"""Feature drift of a day's transactions against the training distribution."""

import datetime as dt
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.monitoring.verdict_checks import verdict_check_result, verdict_check_spec
from mlops_core import registry
from mlops_core.features import spec
from mlops_core.features.offline import TRAINING_SET_TABLE
from mlops_core.monitoring.drift import compute_drift, evidently_html
from mlops_core.monitoring.drift_scope import barely_used, left_out_of_share
from mlops_core.monitoring.features import current_features, first_event, reference_features
from mlops_core.monitoring.verdicts import feature_drift_verdict
from mlops_core.warehouse import replace_day
from resources.registry import ModelRegistry
from resources.retraining import RetrainingPolicy
from resources.settings import SettingsResource

FEATURE_DRIFT = dg.AssetKey("feature_drift")
FEATURE_DRIFT_CHECK = dg.AssetCheckKey(FEATURE_DRIFT, "check_feature_drift")
DRIFT_TABLE = "monitoring.feature_drift"
NUMERIC = spec.numeric_features()
CATEGORICAL = list(spec.categorical_features())


def _barely_used_by_champion(model_registry: ModelRegistry) -> dict[str, str]:
    """The features the serving champion barely uses, with why: a shift there is no reason to retrain."""
    champion = model_registry.champion()
    if champion is None or not champion.run_id:
        return {}
    importance = registry.run_feature_importance(model_registry.client(), champion.run_id)
    return barely_used(importance, NUMERIC + CATEGORICAL, f"the champion (version {champion.version})")


class DriftConfig(dg.Config):
    reference_rows: int = Field(
        default=200_000, description="Rows of the training set sampled as the reference (seeded)."
    )
    min_warm_rows: int = Field(
        default=1000,
        description="Below this many warm training rows the reference falls back to every training row (noted).",
    )
    html_rows: int = Field(
        default=20_000, description="Rows per side in the Evidently HTML report for people (it is slow on more)."
    )
    evidently_report: bool = Field(
        default=True, description="Write reports/drift-<day>.html with Evidently's DataDriftPreset."
    )


DDL = f"""
create schema if not exists monitoring;
create table if not exists {DRIFT_TABLE} (
    day date, feature varchar, kind varchar, test varchar, statistic double, threshold double,
    drifted boolean, psi double, reference_size bigint, current_size bigint, statistic_kind varchar, computed_at timestamp
)
"""


@dg.asset(
    key=FEATURE_DRIFT,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=[
        dg.AssetKey("training_set"),
        dg.AssetKey(["marts", "transactions_enriched"]),
        dg.AssetKey(["marts", "account_history"]),
    ],
    kinds={"duckdb", "evidently"},
    check_specs=[
        verdict_check_spec(
            FEATURE_DRIFT_CHECK,
            "Passes while fewer than the retraining policy's drift_share of the day's features drifted against the training "
            "set (and on a day without transactions). A failure (WARN) asks retraining_sensor to retrain.",
        )
    ],
)
def feature_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    settings: SettingsResource,
    model_registry: ModelRegistry,
):
    """Every feature of the day's transactions (as of their own time, the offline SQL) against the training
    set's warm rows: Evidently 0.7's sample-size-aware tests (K-S / chi-square up to 1000 reference rows, normed
    Wasserstein / Jensen-Shannon above), PSI beside them. The share that asks for a retraining counts every
    feature but the calendar ones, those whose window is not yet warm, and those the champion barely uses
    (shown with the reason). Rows in monitoring.feature_drift; an Evidently
    HTML report for people in reports/drift-<day>.html; the retraining verdict in check_feature_drift."""
    day = dt.date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        current = current_features(con, day)
        reference, reference_note = reference_features(
            con, NUMERIC + CATEGORICAL, config.reference_rows, config.min_warm_rows
        )
        if current.empty:
            verdict = feature_drift_verdict(day, None, [], 0, retraining_policy.drift_share)
            return dg.MaterializeResult(
                metadata={
                    "day": day.isoformat(),
                    "transactions": 0,
                    "note": "no transactions on this day: nothing to compare",
                },
                check_results=[verdict_check_result(FEATURE_DRIFT_CHECK, verdict)],
            )
        if reference.empty:
            raise dg.Failure(f"{TRAINING_SET_TABLE} is empty: build the training set before monitoring drift")
        # Calendar features and windows still filling up are compared and shown, but not counted in the share
        # that asks for a retraining: they flag ordinary days (mlops_core/monitoring/drift_scope.py).
        left_out = {**_barely_used_by_champion(model_registry), **left_out_of_share(day, first_event(con))}
        report = compute_drift(reference, current, NUMERIC, CATEGORICAL, left_out=left_out)
        frame = report.as_frame()
        frame.insert(0, "day", day)
        frame["computed_at"] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        replace_day(con, DRIFT_TABLE, DDL, day, frame)
    metadata = {
        "day": day.isoformat(),
        "transactions": len(current),
        "reference_rows": len(reference),
        "reference": reference_note,
        "share_drifted": report.share_drifted,
        "dataset_drift": report.dataset_drift,
        "drifted_features": report.drifted_features,
        "counted_features": len(report.counted),
        "counted": [f.feature for f in report.counted],
        "left_out_of_share": dict(report.left_out),
        "table": DRIFT_TABLE,
        "features": dg.MetadataValue.md(report.markdown()),
    }
    if config.evidently_report:
        path = settings.get().reports_dir / f"drift-{day.isoformat()}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        sample = lambda f: f.sample(min(len(f), config.html_rows), random_state=7)  # noqa: E731
        path.write_text(evidently_html(sample(reference), sample(current), NUMERIC, CATEGORICAL))
        metadata["evidently_report"] = dg.MetadataValue.path(str(Path(path)))
    verdict = feature_drift_verdict(
        day, report.share_drifted, report.drifted_features, len(current), retraining_policy.drift_share
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[verdict_check_result(FEATURE_DRIFT_CHECK, verdict)])
