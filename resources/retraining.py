"""When to retrain: the thresholds the monitoring assets judge their day by, and the sensors' cool-down.

One typed resource, taken by the monitoring assets (their asset checks' verdicts) and by the retraining
sensors (the cool-down), so a deployment tunes both in one place and they cannot disagree.
"""

import os
from collections.abc import Mapping

import dagster as dg
from pydantic import Field


class RetrainingPolicy(dg.ConfigurableResource):
    """Thresholds of the monitoring verdicts and the sensors' cool-down. Defaults suit the demo's 2,000
    transactions a day."""

    drift_share: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="check_feature_drift fails (retrain) when at least this share of features drifted on a day.",
    )
    new_labels: int = Field(
        default=2000,
        ge=0,
        description="check_label_volume fails (retrain) when this many labels arrived after the newest training cutoff "
        "(the champion's, or the last candidate's when newer, so a candidate a gate stopped is not retrained on the same labels).",
    )
    prediction_psi: float = Field(
        default=0.25,
        gt=0,
        description="check_prediction_drift fails (retrain) when the PSI of the champion's served scores on a day, against its "
        "first days of service on fixed probability bins, reaches this.",
    )
    confidence: float = Field(
        default=0.99,
        gt=0,
        lt=1,
        description="Confidence of concept_drift's recall-drop and calibration tests: check_champion_performance fails when either "
        "rejects at this level.",
    )
    page_hinkley_threshold: float = Field(
        default=50.0,
        gt=0,
        description="Page-Hinkley alarm threshold on concept_drift's stream of matured decision errors (50: no false alarm in 100 "
        "stationary streams); an alarm fails check_champion_performance.",
    )
    cooldown_days: int = Field(
        default=3,
        ge=1,
        description="Days (of data) after a sensor-launched retraining during which new triggers are recorded but launch nothing: "
        "a retraining needs new labelled data to differ, and one run per day at most.",
    )
    estimated_auc_pr_drop: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="check_estimated_performance fails when the upper bound of the day's estimated AUC-PR (calibrated CBPE, "
        "no labels needed) is more than this share below the champion's AUC-PR on its reference; performance_sensor retrains.",
    )
    hourly_retrain_after: int = Field(
        default=3,
        ge=0,
        description="Flagged hours in a row (champion_watch_sensor: score shift, flag rate or error rate of the champion's "
        "served traffic) that ask for a retraining; every flagged hour is alerted. 0: alert only.",
    )

    @classmethod
    def from_env(cls, declared: Mapping[str, object] | None = None) -> "RetrainingPolicy":
        """The `declared` policy (a project's monitoring section; fields it lacks keep their defaults), each value
        overridden by MLOPS_RETRAIN_DRIFT_SHARE, MLOPS_RETRAIN_NEW_LABELS, MLOPS_RETRAIN_PREDICTION_PSI,
        MLOPS_RETRAIN_CONFIDENCE, MLOPS_RETRAIN_PAGE_HINKLEY_THRESHOLD, MLOPS_RETRAIN_COOLDOWN_DAYS,
        MLOPS_RETRAIN_HOURLY_AFTER, MLOPS_RETRAIN_ESTIMATED_DROP."""
        values = {k: v for k, v in (declared or {}).items() if k in cls.model_fields}
        for field, name, kind in (
            ("drift_share", "MLOPS_RETRAIN_DRIFT_SHARE", float),
            ("new_labels", "MLOPS_RETRAIN_NEW_LABELS", int),
            ("prediction_psi", "MLOPS_RETRAIN_PREDICTION_PSI", float),
            ("confidence", "MLOPS_RETRAIN_CONFIDENCE", float),
            ("page_hinkley_threshold", "MLOPS_RETRAIN_PAGE_HINKLEY_THRESHOLD", float),
            ("cooldown_days", "MLOPS_RETRAIN_COOLDOWN_DAYS", int),
            ("hourly_retrain_after", "MLOPS_RETRAIN_HOURLY_AFTER", int),
            ("estimated_auc_pr_drop", "MLOPS_RETRAIN_ESTIMATED_DROP", float),
        ):
            raw = os.environ.get(name)
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
        return cls(**values)
