"""Jobs: named selections users run from the UI, the CLI and CI."""

import dagster as dg

from mlops_assets.constants import DATA_LAYER_JOB, FEATURE_JOB, FEATURES, INGESTION, WAREHOUSE

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

jobs = [data_layer_job, feature_job]
