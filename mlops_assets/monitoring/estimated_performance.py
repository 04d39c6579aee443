"""The champion's quality on the day, estimated from its served scores before any label arrives (CBPE)."""

import datetime as dt

import dagster as dg
import numpy as np
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.deployment.prediction_log import PREDICTION_LOG
from mlops_assets.monitoring.verdict_checks import verdict_check_result, verdict_check_spec
from mlops_core import registry
from mlops_core.monitoring.cbpe import METRICS, CalibratedCBPE, realized
from mlops_core.monitoring.reads import served_decisions, warehouse_log_exists
from mlops_core.monitoring.verdicts import estimated_performance_verdict
from resources.registry import ModelRegistry
from resources.retraining import RetrainingPolicy

ESTIMATED_PERFORMANCE = dg.AssetKey("estimated_performance")
ESTIMATED_PERFORMANCE_CHECK = dg.AssetCheckKey(ESTIMATED_PERFORMANCE, "check_estimated_performance")


class EstimatedPerformanceConfig(dg.Config):
    min_requests: int = Field(default=200, description="Fewer served scores on the day: no estimate.")
    draws: int = Field(default=200, description="Label sets drawn for each estimate's 95% bound (seeded).")


@dg.asset(
    key=ESTIMATED_PERFORMANCE,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    automation_condition=dg.AutomationCondition.eager(),
    deps=[PREDICTION_LOG, dg.AssetKey("champion_model")],
    kinds={"duckdb"},
    check_specs=[
        verdict_check_spec(
            ESTIMATED_PERFORMANCE_CHECK,
            "Passes while the upper bound of the day's estimated AUC-PR stays within the retraining policy's "
            "estimated_auc_pr_drop of the champion's AUC-PR on its reference (and when there is no estimate). "
            "A failure (WARN) asks performance_sensor to retrain, before any label has arrived.",
        )
    ],
)
def estimated_performance(
    context: dg.AssetExecutionContext,
    config: EstimatedPerformanceConfig,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    model_registry: ModelRegistry,
):
    """Calibrated CBPE (mlops_core/monitoring/cbpe.py) on the champion's served scores of the day: ROC AUC,
    AUC-PR, precision and recall at its threshold, each with a 95% bound, calibrated on the champion's own test
    split (as the model that never saw it scored it, logged at evaluation). Blind to concept drift by design:
    concept_drift's label-based tests cover that."""
    day = dt.date.fromisoformat(context.partition_key)
    champion = model_registry.champion()
    version = None if champion is None else champion.version
    base = {"day": day.isoformat(), "champion_version": version}
    drop = retraining_policy.estimated_auc_pr_drop

    def without_estimate(note: str) -> dg.MaterializeResult:
        verdict = estimated_performance_verdict(day, None, None, None, drop, note)
        return dg.MaterializeResult(
            metadata={**base, "note": note}, check_results=[verdict_check_result(ESTIMATED_PERFORMANCE_CHECK, verdict)]
        )

    if version is None:
        return without_estimate("no champion yet")
    reference = registry.run_json_artifact(model_registry.client(), champion.run_id, registry.CBPE_REFERENCE_ARTIFACT)
    if reference is None:
        return without_estimate(f"champion {version} has no {registry.CBPE_REFERENCE_ARTIFACT} (evaluated before CBPE)")
    with warehouse.get_connection() as con:
        if not warehouse_log_exists(con):
            return without_estimate("no prediction log yet")
        served = served_decisions(con, version, day, day)
    if len(served) < config.min_requests:
        return without_estimate(f"{len(served)} served scores on {day}, fewer than {config.min_requests}")
    ref_scores, ref_labels = np.asarray(reference["score"], float), np.asarray(reference["is_fraud"], int)
    threshold = float(reference["threshold"])
    cbpe = CalibratedCBPE(draws=config.draws).fit(ref_scores, ref_labels)
    scores = served["score"].to_numpy(float)
    estimates = cbpe.estimate(scores, threshold)
    on_reference = realized(ref_labels, ref_scores, ref_scores >= threshold)
    auc_pr = estimates["auc_pr"]
    verdict = estimated_performance_verdict(day, auc_pr.value, auc_pr.high, on_reference["auc_pr"], drop)
    table = "\n".join(
        ["| metric | estimated | 95% bound | on the reference |", "|---|---:|---|---:|"]
        + [
            f"| {m} | {estimates[m].value:.3f} | {estimates[m].low:.3f} to {estimates[m].high:.3f} | {on_reference[m]:.3f} |"
            for m in METRICS
        ]
    )
    metadata = {
        **base,
        "served_scores": len(served),
        "reference_rows": len(ref_scores),
        "calibrated": cbpe.calibrated,
        "threshold": threshold,
        "estimates": dg.MetadataValue.md(table),
    }
    for metric in METRICS:
        metadata[f"estimated_{metric}"] = estimates[metric].value
        metadata[f"estimated_{metric}_low"] = estimates[metric].low
        metadata[f"estimated_{metric}_high"] = estimates[metric].high
        metadata[f"reference_{metric}"] = on_reference[metric]
    metadata = {
        k: (None if not np.isfinite(v) else float(v)) if isinstance(v, (float, np.floating)) else v
        for k, v in metadata.items()
    }
    return dg.MaterializeResult(
        metadata={k: v for k, v in metadata.items() if v is not None},
        check_results=[verdict_check_result(ESTIMATED_PERFORMANCE_CHECK, verdict)],
    )
