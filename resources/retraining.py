"""When the sensors retrain: thresholds and the cool-down, one typed resource so a deployment can tune them."""

import os

import dagster as dg
from pydantic import Field


class RetrainingPolicy(dg.ConfigurableResource):
    """Thresholds of the retraining sensors. Defaults suit the demo's 2,000 transactions a day."""

    drift_share: float = Field(default=0.5, description="Retrain when at least this share of features drifted on a day.")
    new_labels: int = Field(default=2000, description="Retrain when this many labels arrived after the champion's training cutoff.")
    cooldown_days: int = Field(
        default=3,
        ge=1,
        description="Days (of data) after a sensor-launched retraining during which new triggers are recorded but launch nothing: "
        "a retraining needs new labelled data to differ, and one run per day at most.",
    )

    @classmethod
    def from_env(cls) -> "RetrainingPolicy":
        """Defaults, overridden by MLOPS_RETRAIN_DRIFT_SHARE, MLOPS_RETRAIN_NEW_LABELS, MLOPS_RETRAIN_COOLDOWN_DAYS."""
        values = {}
        for field, name, kind in (
            ("drift_share", "MLOPS_RETRAIN_DRIFT_SHARE", float),
            ("new_labels", "MLOPS_RETRAIN_NEW_LABELS", int),
            ("cooldown_days", "MLOPS_RETRAIN_COOLDOWN_DAYS", int),
        ):
            raw = os.environ.get(name)
            if raw:
                try:
                    values[field] = kind(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
        return cls(**values)
