"""The code location: assembles assets, checks, jobs, sensors and resources."""

import dagster as dg

from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.jobs import jobs
from mlops_assets.transform.assets import warehouse_assets
from resources.environment import build_resources

defs = dg.Definitions(
    assets=[*raw_assets, *warehouse_assets],
    jobs=jobs,
    resources=build_resources(),
    executor=dg.in_process_executor,
)
