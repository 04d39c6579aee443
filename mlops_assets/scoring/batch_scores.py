"""Daily batch scores from the champion model, with the completeness check that gates them."""

import datetime as dt
import time
from typing import TYPE_CHECKING

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import SCORING, daily_partitions
from mlops_core import registry, scoring
from resources.registry import ModelRegistry

if TYPE_CHECKING:
    from mlops_core.serving.models import LoadedModel


BATCH_SCORES = dg.AssetKey("batch_scores")
CHECK_COMPLETE = "check_batch_scores_complete"
SOURCES = [
    dg.AssetKey(["marts", "transactions_enriched"]),
    dg.AssetKey(["marts", "account_history"]),
    dg.AssetKey("champion_model"),
]

PREVIEW_COLUMNS = ("transaction_id", "account_id", "event_timestamp", "fraud_probability", "is_fraud")
COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn(name, sql_type, description) for name, (sql_type, description) in scoring.SCORE_COLUMNS.items()
    ]
)


def load_champion(model_registry: ModelRegistry) -> "LoadedModel":
    """The champion's ONNX graph and threshold from the registry; a clear failure when there is none."""
    from mlops_core.serving.models import load_alias

    champion = load_alias(model_registry.client(), registry.CHAMPION)
    if champion is None:
        raise dg.Failure(
            description=f"No {registry.CHAMPION!r} alias on registered model {registry.MODEL_NAME!r} in the MLflow "
            f"registry at {model_registry.tracking_uri}: nothing to score with. Train and register a challenger "
            "(training_job), then promote it (promote_job or `mlops promote`)."
        )
    return champion


@dg.asset(
    key=BATCH_SCORES,
    group_name=SCORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=SOURCES,
    kinds={"duckdb", "onnx"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_COMPLETE,
            asset=BATCH_SCORES,
            blocking=True,
            description="Every transaction of the day has exactly one score, none of another day, no null, "
            "every probability within [0, 1].",
        )
    ],
)
def batch_scores(context: dg.AssetExecutionContext, warehouse: DuckDBResource, model_registry: ModelRegistry):
    """The day's transactions scored by the champion from their point-in-time features, in one vectorized
    pass. Table scoring.batch_scores; re-materializing a day replaces its scores."""
    day = dt.date.fromisoformat(context.partition_key)
    started = time.perf_counter()
    model = load_champion(model_registry)
    with warehouse.get_connection() as con:
        scores = scoring.score_day(con, day, model)
        scoring.write_scores(con, day, scores)
        audit = scoring.audit_scores(con, day)
    seconds = time.perf_counter() - started
    summary = scoring.summarize(scores)
    context.log.info(f"{day}: {summary['rows']} transactions scored by version {model.version} in {seconds:.2f} s")
    metadata = {
        "dagster/row_count": summary["rows"],
        "dagster/column_schema": COLUMN_SCHEMA,
        "table": scoring.SCORES_TABLE,
        "day": day.isoformat(),
        "model": registry.MODEL_NAME,
        "model_version": model.version,
        "threshold": model.threshold,
        "rows": summary["rows"],
        "flagged_rows": summary["flagged_rows"],
        "flagged_share": summary["flagged_share"],
        "mean_probability": summary["mean_probability"],
        "seconds": round(seconds, 3),
    }
    if summary["rows"]:
        metadata["top_scores"] = dg.MetadataValue.md(scoring.markdown_preview(scores, PREVIEW_COLUMNS))
    else:
        metadata["note"] = f"No transactions on {day} in marts.transactions_enriched: nothing to score, 0 rows written."
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=CHECK_COMPLETE,
        passed=audit.passed,
        description=audit.describe(),
        metadata={
            "transactions": audit.transactions,
            "scored_rows": audit.scored_rows,
            "missing": audit.missing,
            "duplicated": audit.duplicated,
            "not_of_the_day": audit.unexpected,
            "rows_with_nulls": audit.null_values,
            "probabilities_out_of_range": audit.out_of_range,
            "probability_bounds": "[0, 1]",
        },
    )
