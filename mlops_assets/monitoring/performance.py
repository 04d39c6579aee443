"""Realized quality of the endpoint's decisions once labels arrive."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.deployment.prediction_log import PREDICTION_LOG
from mlops_assets.deployment.prediction_log import TABLE as PREDICTION_TABLE
from mlops_core.monitoring.performance import PERFORMANCE_COLUMNS, live_performance
from mlops_core.monitoring.reads import day_predictions, latest_labels, warehouse_log_exists
from mlops_core.warehouse import replace_day

LIVE_PERFORMANCE = dg.AssetKey("live_performance")
PERFORMANCE_TABLE = "monitoring.live_performance"
SEGMENTS = ("channel", "country", "merchant_category", "age_band")

PERFORMANCE_DDL = f"""
create schema if not exists monitoring;
create table if not exists {PERFORMANCE_TABLE} (
    day date, segment varchar, value varchar, n_scored bigint, n_labelled bigint, label_coverage double,
    positives bigint, flag_rate double, precision double, recall double, f1 double, auc_pr double
)
"""


@dg.asset(
    key=LIVE_PERFORMANCE,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=[PREDICTION_LOG, dg.AssetKey(["marts", "label_events"]), dg.AssetKey(["marts", "transactions_enriched"])],
    kinds={"duckdb"},
)
def live_performance_asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """The day's logged decisions against the labels known now: AUC-PR, precision, recall, F1 and flag
    rate, overall, per model version and per channel, country, merchant category and age band, in
    monitoring.live_performance. Re-materialize a day as its labels mature: legitimate labels come
    45 days after the event, so a young day's precision is biased upwards."""
    day = dt.date.fromisoformat(context.partition_key)
    with warehouse.get_connection() as con:
        if not warehouse_log_exists(con):
            return dg.MaterializeResult(
                metadata={
                    "day": day.isoformat(),
                    "scored": 0,
                    "note": f"no {PREDICTION_TABLE} yet: materialize prediction_log",
                }
            )
        predictions = day_predictions(con, day)
        labels = latest_labels(con, predictions)
        if predictions.empty:
            return dg.MaterializeResult(
                metadata={"day": day.isoformat(), "scored": 0, "note": "no logged predictions for this day"}
            )
        table = live_performance(predictions, labels, segments=SEGMENTS)
        table.insert(0, "day", day)
        table["value"] = table["value"].astype("string")
        replace_day(con, PERFORMANCE_TABLE, PERFORMANCE_DDL, day, table)
    overall = table.iloc[0]
    shown = table[list(("segment", *PERFORMANCE_COLUMNS[1:]))].round(4).astype(str)
    markdown = "\n".join(
        ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
        + ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    )
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "scored": int(overall["n_scored"]),
            "labelled": int(overall["n_labelled"]),
            "label_coverage": float(overall["label_coverage"]),
            "auc_pr": _number(overall["auc_pr"]),
            "precision": _number(overall["precision"]),
            "recall": _number(overall["recall"]),
            "flag_rate": _number(overall["flag_rate"]),
            "table": PERFORMANCE_TABLE,
            "by_segment": dg.MetadataValue.md(markdown),
        }
    )


def _number(value) -> float | None:
    """NaN (no labelled fraud yet) as None: metadata floats must be finite."""
    value = float(value)
    return None if value != value else value
