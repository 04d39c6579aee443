"""Jobs: named selections users run from the UI, the CLI and CI."""

import dagster as dg

from mlops_assets.constants import DATA_LAYER_JOB, FEATURE_JOB, FEATURES, INGESTION, PROMOTE_JOB, TRAINING, TRAINING_JOB, WAREHOUSE

data_layer_job = dg.define_asset_job(
    DATA_LAYER_JOB,
    selection=dg.AssetSelection.groups(INGESTION, WAREHOUSE),
    description="Ingest landing partitions through the data gates, then build the dbt warehouse.",
)

feature_job = dg.define_asset_job(
    FEATURE_JOB,
    selection=dg.AssetSelection.groups(FEATURES),
    description="Build the point-in-time training set and rebuild the online feature store from the warehouse.",
)

_promotion = dg.AssetSelection.assets("champion_model")

training_job = dg.define_asset_job(
    TRAINING_JOB,
    selection=dg.AssetSelection.groups(FEATURES, TRAINING) - _promotion,
    description="Features, candidate and baseline training, evaluation with the quality gates, and registration "
    "of a passing candidate as challenger.",
)

promote_job = dg.define_asset_job(
    PROMOTE_JOB,
    selection=_promotion | dg.AssetSelection.assets("model_alias_history"),
    description="Move the champion alias to the current challenger (recorded in the alias history).",
)

jobs = [data_layer_job, feature_job, training_job, promote_job]
