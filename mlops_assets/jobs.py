"""Jobs: named selections users run from the UI, the CLI and CI."""

import dagster as dg

from mlops_assets.constants import DATA_LAYER_JOB, INGESTION, WAREHOUSE

data_layer_job = dg.define_asset_job(
    DATA_LAYER_JOB,
    selection=dg.AssetSelection.groups(INGESTION, WAREHOUSE),
    description="Ingest landing partitions through the data gates, then build the dbt warehouse.",
)

jobs = [data_layer_job]
