"""Names shared across asset families: groups, partitions, job names; and reading an asset's newest metadata."""

import warnings

import dagster as dg
from dagster._utils.warnings import BetaWarning, PreviewWarning

from mlops_core.settings import Settings

# Every asset module imports this one before its decorators run. The platform uses backfill_policy and other
# beta and preview APIs knowingly; their warnings on every command tell a user nothing they can act on.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

# Asset groups, one per stage of the platform, shown as boxes in the Dagster UI.
INGESTION = "ingestion"
WAREHOUSE = "warehouse"
FEATURES = "features"
TRAINING = "training"
DEPLOYMENT = "deployment"
SCORING = "scoring"
MONITORING = "monitoring"

DATA_LAYER_JOB = "data_layer_job"
FEATURE_JOB = "feature_job"
TRAINING_JOB = "training_job"
PROMOTE_JOB = "promote_job"
APPROVAL_JOB = "approval_job"
ROLLOUT_JOB = "rollout_job"
ROLLBACK_JOB = "canary_rollback_job"
SCORING_JOB = "scoring_job"
MONITORING_JOB = "monitoring_job"
RETRAINING_JOB = "retraining_job"

# Every model project's jobs and assets carry this tag with the project's name (fraud's too): the production
# queue's per-project limit keys on it, and the UI filters by it.
PROJECT_TAG = "mlops/project"

# From the first landed day (MLOPS_PARTITIONS_START; a demo records its own) to the last complete day,
# the day before the platform's "today" (MLOPS_TODAY: fixed by default, "system" for the machine's date).
_calendar = Settings.from_env()
PARTITIONS_START = _calendar.partitions_start.isoformat()
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_date=_calendar.today.isoformat())


def latest_metadata_text(instance: dg.DagsterInstance, asset: dg.AssetKey, name: str) -> str | None:
    """The metadata entry `name` of `asset`'s newest materialization, as text (None: no materialization or
    no such entry)."""
    event = instance.get_latest_materialization_event(asset)
    value = event.asset_materialization.metadata.get(name) if event and event.asset_materialization else None
    return None if value is None else str(value.value)
