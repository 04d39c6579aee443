"""Names shared across asset families: groups, partitions, job names."""

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
