"""Names shared across asset families: groups, partitions, job names."""

import os

import dagster as dg

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
ROLLOUT_JOB = "rollout_job"
ROLLBACK_JOB = "canary_rollback_job"
SCORING_JOB = "scoring_job"
MONITORING_JOB = "monitoring_job"
RETRAINING_JOB = "retraining_job"

# The first day the landing zone can hold. Demo data defaults to the days before
# today, so this only needs to be early enough; override for older histories.
PARTITIONS_START = os.environ.get("MLOPS_PARTITIONS_START", "2025-01-01")
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)
