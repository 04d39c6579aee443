"""The served model's own signals: its score distribution (prediction drift) and its errors once labels
arrive (concept drift: recall on confirmed frauds, Page-Hinkley on matured errors, calibration)."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.deployment.prediction_log import PREDICTION_LOG
from mlops_assets.monitoring.verdict_checks import verdict_check_result, verdict_check_spec
from mlops_core import registry
from mlops_core.monitoring.performance import (
    PageHinkley,
    calibration_drift,
    design_effect,
    error_stream,
    recall_drop,
)
from mlops_core.monitoring.psi import psi_on_edges
from mlops_core.monitoring.reads import first_served_day, latest_labels, served_decisions, warehouse_log_exists
from mlops_core.monitoring.verdicts import concept_drift_verdict, prediction_drift_verdict
from mlops_core.serving.analysis import SCORE_EDGES
from resources.registry import ModelRegistry
from resources.retraining import RetrainingPolicy
from resources.settings import SettingsResource

PREDICTION_DRIFT = dg.AssetKey("prediction_drift")
CONCEPT_DRIFT = dg.AssetKey("concept_drift")
PREDICTION_DRIFT_CHECK = dg.AssetCheckKey(PREDICTION_DRIFT, "check_prediction_drift")
CHAMPION_PERFORMANCE_CHECK = dg.AssetCheckKey(CONCEPT_DRIFT, "check_champion_performance")


class PredictionDriftConfig(dg.Config):
    reference_days: int = Field(default=7, description="The champion's first days of service form the reference.")
    min_scores: int = Field(default=200, description="Fewer scores on either side: no verdict.")


@dg.asset(
    key=PREDICTION_DRIFT,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=[PREDICTION_LOG, dg.AssetKey(["marts", "transactions_enriched"]), dg.AssetKey("champion_model")],
    kinds={"duckdb"},
    check_specs=[
        verdict_check_spec(
            PREDICTION_DRIFT_CHECK,
            "Passes while the PSI of the champion's served scores on the day, against its first days of service, stays under "
            "the retraining policy's prediction_psi (and when there is no verdict: no champion, too few scores). "
            "A failure (WARN) asks retraining_sensor to retrain.",
        )
    ],
)
def prediction_drift(
    context: dg.AssetExecutionContext,
    config: PredictionDriftConfig,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    model_registry: ModelRegistry,
):
    """The champion's served scores on the day against its scores over its first `reference_days` days of
    service (the days before this one when it is younger): PSI on fixed probability bins, the K-S statistic,
    flag rates. Scores move before labels arrive, so this is the earliest model-side signal. The retraining
    verdict is check_prediction_drift."""
    from scipy.stats import ks_2samp

    day = dt.date.fromisoformat(context.partition_key)
    champion = model_registry.champion()
    version = None if champion is None else champion.version
    base = {"day": day.isoformat(), "champion_version": version}

    def without_verdict(note: str) -> dg.MaterializeResult:
        verdict = prediction_drift_verdict(day, None, retraining_policy.prediction_psi, note)
        return dg.MaterializeResult(
            metadata={**base, "note": note}, check_results=[verdict_check_result(PREDICTION_DRIFT_CHECK, verdict)]
        )

    with warehouse.get_connection() as con:
        if version is None or not warehouse_log_exists(con):
            return without_verdict("no champion or no prediction log yet")
        current = served_decisions(con, version, day, day)
        first_served = first_served_day(con, version)
    if first_served is None or first_served >= day:
        return without_verdict("the champion has no earlier day of service to compare with")
    reference_end = min(first_served + dt.timedelta(days=config.reference_days - 1), day - dt.timedelta(days=1))
    with warehouse.get_connection() as con:
        reference = served_decisions(con, version, first_served, reference_end)
    base |= {
        "reference": f"{first_served}..{reference_end}",
        "reference_scores": len(reference),
        "current_scores": len(current),
    }
    if min(len(reference), len(current)) < config.min_scores:
        return without_verdict(f"fewer than {config.min_scores} scores on a side")
    ref, cur = reference["score"].to_numpy(float), current["score"].to_numpy(float)
    score_psi = psi_on_edges(ref, cur, edges=SCORE_EDGES)
    verdict = prediction_drift_verdict(day, score_psi, retraining_policy.prediction_psi)
    return dg.MaterializeResult(
        metadata={
            **base,
            "psi": score_psi,
            "ks_statistic": float(ks_2samp(ref, cur).statistic),
            "mean_score": float(cur.mean()),
            "reference_mean_score": float(ref.mean()),
            "flag_rate": float(current["decision"].mean()),
            "reference_flag_rate": float(reference["decision"].mean()),
        },
        check_results=[verdict_check_result(PREDICTION_DRIFT_CHECK, verdict)],
    )


class ConceptDriftConfig(dg.Config):
    recall_window_days: int = Field(
        default=7, description="Days of recent events whose confirmed frauds measure recall."
    )
    error_window_days: int = Field(
        default=14, description="Days of matured events fed to Page-Hinkley and the calibration test."
    )
    ph_delta: float = Field(
        default=0.005, description="Page-Hinkley delta: half the smallest error increase worth an alarm."
    )


def _metric(metrics: dict[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None or value != value else float(value)


@dg.asset(
    key=CONCEPT_DRIFT,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=[
        PREDICTION_LOG,
        dg.AssetKey(["marts", "label_events"]),
        dg.AssetKey(["marts", "transactions_enriched"]),
        dg.AssetKey("champion_model"),
    ],
    kinds={"duckdb"},
    check_specs=[
        verdict_check_spec(
            CHAMPION_PERFORMANCE_CHECK,
            "Passes while the champion holds: its recall on recently confirmed frauds is not significantly below its recall "
            "at promotion, Page-Hinkley raises no alarm on its matured decision errors, and its calibration stays within "
            "bounds (the retraining policy's confidence and page_hinkley_threshold, each widened by the design effect of "
            "the window's cards), and it is not provisional (promoted "
            "below the quality minimums as better than a failing champion). A failure (WARN) asks performance_sensor "
            "to retrain.",
        )
    ],
)
def concept_drift(
    context: dg.AssetExecutionContext,
    config: ConceptDriftConfig,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    model_registry: ModelRegistry,
    settings: SettingsResource,
):
    """Has the relation between features and fraud moved away from what the champion learned? Three tests
    on its served decisions, with the labels known by the end of the day:
    - recall on the frauds confirmed so far among the last `recall_window_days` days of events, against the
      test recall it was promoted with, measured on the test split's frauds (one-sided, two-sample: Fisher's
      exact test): frauds are confirmed within days, so this reacts first;
    - Page-Hinkley on the decision errors of matured events (older than the label maturity, labels complete);
    - calibration of those matured scores against its test ECE, with a bound that widens for small windows.
    Each test counts independent evidence: a card's frauds and errors come together, so the design effect of
    the window's accounts (performance.design_effect) scales the recall test's counts, the Page-Hinkley
    threshold and the calibration noise.
    check_champion_performance fails when any of them fires; the performance sensor retrains on it."""
    day = dt.date.fromisoformat(context.partition_key)
    champion = model_registry.champion()
    version = None if champion is None else champion.version
    base = {"day": day.isoformat(), "champion_version": version}
    maturity = settings.get().label_maturity_days
    policy = retraining_policy
    with warehouse.get_connection() as con:
        if version is None or not warehouse_log_exists(con):
            note = "no champion or no prediction log yet"
            verdict = concept_drift_verdict(
                day, confidence=policy.confidence, page_hinkley_threshold=policy.page_hinkley_threshold, note=note
            )
            return dg.MaterializeResult(
                metadata={**base, "note": note},
                check_results=[verdict_check_result(CHAMPION_PERFORMANCE_CHECK, verdict)],
            )
        first = day - dt.timedelta(days=maturity + config.error_window_days - 1)
        served = served_decisions(con, version, first, day)
        labels = latest_labels(con, served, landed_by=day)
    metrics, tags = registry.run_metrics_and_tags(model_registry.client(), champion.run_id)
    reference_recall = _metric(metrics, "test_recall")
    provisional = None
    if tags.get(registry.BELOW_MINIMUMS_TAG) == "true":
        auc_pr = _metric(metrics, "test_auc_pr")
        provisional = (
            f"version {version} was promoted below the quality minimums (test AUC-PR "
            f"{'-' if auc_pr is None else f'{auc_pr:.3f}'}, recall "
            f"{'-' if reference_recall is None else f'{reference_recall:.2f}'}) as better than a failing champion; "
            "retrain as the new pattern's labels arrive"
        )
    reference_ece = _metric(metrics, "test_expected_calibration_error")
    verdict = labels.set_index("transaction_id")["is_fraud"]
    label = served["transaction_id"].map(verdict)
    event_day = pd.to_datetime(served["event_date"])
    event_date = event_day.dt.date

    recent = (event_date > day - dt.timedelta(days=config.recall_window_days)).to_numpy() & (label == True).to_numpy()  # noqa: E712
    caught = int(served["decision"].to_numpy(bool)[recent].sum())
    # Each test counts independent evidence: a card's frauds (or errors) rise and fall together.
    recall_design_effect = design_effect(
        served["decision"].to_numpy(float)[recent], served["account_id"].to_numpy()[recent]
    )
    # The frauds of the test split the reference recall was measured on: the test is two-sample with them.
    reference_frauds = _metric(metrics, "test_positives")
    recall = recall_drop(
        caught,
        int(recent.sum()),
        reference_recall if reference_recall is not None else 0.0,
        policy.confidence,
        reference_frauds=int(reference_frauds) if reference_frauds is not None else None,
        design_effect=recall_design_effect,
    )

    matured_before = pd.Timestamp(day - dt.timedelta(days=maturity - 1))
    errors = error_stream(served, labels, kind="decision", complete_before=matured_before)
    matured = served[(label.notna() & (event_day < matured_before)).to_numpy()]
    matured_labels = matured["transaction_id"].map(verdict).to_numpy(float)
    error_design_effect = design_effect(
        matured["decision"].to_numpy(float) != matured_labels, matured["account_id"].to_numpy()
    )
    # The policy's threshold is for independent errors; clustered ones random-walk design_effect times wider.
    ph_threshold = policy.page_hinkley_threshold * error_design_effect
    detector = PageHinkley(delta=config.ph_delta, threshold=ph_threshold)
    alarm_at = detector.detect(errors) if len(errors) else None
    calibration = None
    matured_scores = matured["score"].to_numpy(float)
    # The calibration noise is the labels' scatter around their scores: its clustering is the residuals'.
    residual_design_effect = design_effect(matured_labels - matured_scores, matured["account_id"].to_numpy())
    if len(matured) >= 500 and reference_ece is not None:
        calibration = calibration_drift(
            matured_labels,
            matured_scores,
            reference_ece,
            confidence=policy.confidence,
            design_effect=residual_design_effect,
        )

    verdict = concept_drift_verdict(
        day,
        confidence=policy.confidence,
        page_hinkley_threshold=ph_threshold,
        recall=recall,
        reference_recall=reference_recall,
        alarm_at=alarm_at,
        calibration=calibration,
        provisional=provisional,
    )
    return dg.MaterializeResult(
        metadata={
            **base,
            "recent_frauds": recall["frauds"],
            "recent_recall": None if np.isnan(recall["recall"]) else float(recall["recall"]),
            "reference_recall": reference_recall,
            "reference_frauds": recall["reference_frauds"],
            "recent_fraud_accounts": int(served["account_id"][recent].nunique()),
            "recall_design_effect": recall_design_effect,
            "effective_frauds": recall["effective_frauds"],
            "recall_test": recall["test"],
            "recall_p_value": recall["p_value"],
            "matured_labelled": len(errors),
            "matured_error_rate": float(errors.mean()) if len(errors) else None,
            "page_hinkley_alarm": alarm_at is not None,
            "error_design_effect": error_design_effect,
            "page_hinkley_threshold_applied": ph_threshold,
            "residual_design_effect": residual_design_effect,
            "calibration_ece": None if calibration is None else float(calibration["ece"]),
            "calibration_bound": None if calibration is None else float(calibration["bound"]),
            "calibration_drift": bool(calibration is not None and calibration["drift"]),
            "provisional_champion": provisional is not None,
        },
        check_results=[verdict_check_result(CHAMPION_PERFORMANCE_CHECK, verdict)],
    )
